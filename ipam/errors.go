package ipam

import "errors"

// Callers branch on these with errors.Is; the wrapping error says what was
// being done and what to do about it.
var (
	// ErrInvalid: the input is malformed or impossible (a bad CIDR, a
	// gateway outside its subnet, port 0, a reversed range). Fix the input.
	ErrInvalid = errors.New("invalid")
	// ErrInUse: another owner, network or host process holds it.
	ErrInUse = errors.New("in use")
	// ErrExhausted: nothing is free where the request may take from.
	ErrExhausted = errors.New("exhausted")
	// ErrNotFound: no such network, owner or allocation.
	ErrNotFound = errors.New("not found")
)
