package control

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/pontoon-net/pontoon/ipam"
)

// Error kinds the API maps to HTTP statuses. The wrapping error carries the
// one-line message the CLI prints; these only decide the status.
var (
	// ErrInvalid: the request is malformed; fix the input.
	ErrInvalid = errors.New("invalid")
	// ErrNotFound: no such network, endpoint or mapping.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a name, address or port is taken, or something still
	// depends on what is being removed.
	ErrConflict = errors.New("conflict")
	// ErrUnsupported: the kernel or datapath lacks what the request needs.
	ErrUnsupported = errors.New("not supported")
	// ErrUnavailable: the datapath is detached and the agent could not
	// restore it; the request would carry no traffic.
	ErrUnavailable = errors.New("unavailable")
)

// statusOf picks the HTTP status for an error from the agent or from ipam.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, ipam.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound), errors.Is(err, ipam.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict), errors.Is(err, ipam.ErrInUse), errors.Is(err, ipam.ErrExhausted):
		return http.StatusConflict
	case errors.Is(err, ErrUnsupported):
		return http.StatusNotImplemented
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// kindError is a message whose kind decides the HTTP status but does not
// show in the text.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func kindf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
