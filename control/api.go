package control

import (
	"bufio"
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	stdmaps "maps"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// maxBody bounds a request body, in bytes; 100,000 specs fit.
const maxBody = 4 << 20

// routes is the API; every request is counted and timed (a.metrics).
func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { reply(a.Status())(w) })

	mux.HandleFunc("GET /v1/networks", func(w http.ResponseWriter, r *http.Request) { reply(a.Networks(), nil)(w) })
	mux.HandleFunc("POST /v1/networks", func(w http.ResponseWriter, r *http.Request) {
		var req NetworkCreate
		if decodeBody(w, r, &req) {
			reply(a.CreateNetwork(req))(w)
		}
	})
	mux.HandleFunc("GET /v1/networks/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(a.Network(r.PathValue("name")))(w)
	})
	mux.HandleFunc("DELETE /v1/networks/{name}", func(w http.ResponseWriter, r *http.Request) {
		err := a.RemoveNetwork(r.PathValue("name"), r.URL.Query().Get("force") == "true")
		reply(struct{}{}, err)(w)
	})

	mux.HandleFunc("GET /v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		reply(a.Endpoints(r.URL.Query().Get("network")))(w)
	})
	mux.HandleFunc("POST /v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		var req EndpointAttach
		if decodeBody(w, r, &req) {
			reply(a.Attach(req))(w)
		}
	})
	mux.HandleFunc("GET /v1/endpoints/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(a.Endpoint(r.PathValue("name")))(w)
	})
	mux.HandleFunc("DELETE /v1/endpoints/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(struct{}{}, a.Detach(r.PathValue("name")))(w)
	})

	mux.HandleFunc("GET /v1/ports", a.servePorts)
	mux.HandleFunc("POST /v1/ports", func(w http.ResponseWriter, r *http.Request) {
		var req PublishRequest
		switch form := r.URL.Query().Get("reply"); {
		case form != "" && form != "ports":
			writeError(w, kindf(ErrInvalid, "unknown reply form %q in POST /v1/ports?reply=; ask for reply=ports (host ports and ids only) or leave it out (every mapping whole)", form))
		case !decodeBody(w, r, &req):
		case form == "ports":
			reply(a.PublishPorts(req))(w)
		default:
			replyList(a.Publish(req))(w)
		}
	})
	mux.HandleFunc("POST /v1/ports/unpublish", func(w http.ResponseWriter, r *http.Request) {
		var req UnpublishRequest
		if decodeBody(w, r, &req) {
			replyList(a.Unpublish(req))(w)
		}
	})

	mux.HandleFunc("GET /v1/conntrack", func(w http.ResponseWriter, r *http.Request) {
		reply(a.Conntrack(r.URL.Query().Get("endpoint")))(w)
	})
	mux.HandleFunc("GET /v1/monitor", a.serveMonitor)
	mux.HandleFunc("POST /v1/conntrack/flush", func(w http.ResponseWriter, r *http.Request) {
		var req ConntrackFlush
		if decodeBody(w, r, &req) {
			reply(a.FlushConntrack(req))(w)
		}
	})
	// An empty name leaves a trailing slash, which no other route takes.
	for _, kind := range []string{"network", "endpoint"} {
		mux.HandleFunc("/v1/"+kind+"s/{$}", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, kindf(ErrInvalid, "%s name is empty in %s %s; name the %s at the end of the path", kind, r.Method, r.URL.Path, kind))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, kindf(ErrNotFound, "no API %s %s; this agent serves /v1", r.Method, r.URL.Path))
	})
	// Outermost, so what the guard refuses or recovers from is logged too;
	// the metrics count and time all of it.
	return a.metrics.instrument(a.logFailures(a.guardRequests(a.refuseWhenDetached(mux))))
}

// reply turns a (value, error) pair into a response writer.
func reply[T any](v T, err error) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
}

// replyListMin is the length from which replyList streams a list.
const replyListMin = 256

// replyList is reply for a list, written an element at a time: encoding
// 60,000 mappings into one buffer first (reply) cost more than publishing
// them, most of it growing and clearing that buffer.
func replyList[T any](items []T, err error) func(http.ResponseWriter) {
	// A short list goes in one buffer after all: the 64 KiB one below,
	// allocated and cleared, was a fifth of a one-port publish.
	if err != nil || len(items) < replyListMin {
		return reply(items, err)
	}
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		bw := bufio.NewWriterSize(w, 64<<10)
		enc := json.NewEncoder(bw)
		bw.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				bw.WriteByte(',')
			}
			if enc.Encode(it) != nil {
				return // the client went away
			}
		}
		bw.WriteString("]\n")
		bw.Flush()
	}
}

func writeError(w http.ResponseWriter, err error) {
	err = WithDiskAdvice(err)
	status := statusOf(err)
	var se *statusError
	if errors.As(err, &se) {
		status = se.status
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(apiError{Error: err.Error()})
}

// failureRecorder keeps the status and, for a failure, the error body of
// a reply for the log.
type failureRecorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (f *failureRecorder) WriteHeader(status int) {
	f.status = status
	f.ResponseWriter.WriteHeader(status)
}

func (f *failureRecorder) Write(b []byte) (int, error) {
	if f.status >= 400 && f.body.Len() < 64<<10 {
		f.body.Write(b)
	}
	return f.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController flush a stream (monitor) through it.
func (f *failureRecorder) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// logFailures logs every request the API refuses or fails, at WARN: the
// CLI shows the operator the message, the log keeps it for whoever looks
// at the agent.
func (a *Agent) logFailures(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &failureRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		if rec.status < 400 {
			return
		}
		msg := http.StatusText(rec.status)
		var e apiError
		if json.Unmarshal(rec.body.Bytes(), &e) == nil && e.Error != "" {
			msg = e.Error
		}
		a.log.Warn("API request failed", "method", r.Method, "path", r.URL.Path, "status", rec.status, "err", msg)
	})
}

// decodeBody reads a request body strictly: application/json, at most
// maxBody bytes, exactly one JSON object, and only keys the request type
// names, spelled as it spells them (encoding/json alone would take
// "Endpoint" for "endpoint" and ignore whatever follows the object).
func decodeBody(w http.ResponseWriter, r *http.Request, into any) bool {
	if err := readJSON(w, r, into); err != nil {
		writeError(w, err)
		return false
	}
	return true
}

func readJSON(w http.ResponseWriter, r *http.Request, into any) error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return &statusError{http.StatusUnsupportedMediaType, fmt.Sprintf("request body has Content-Type %q; send it as application/json", r.Header.Get("Content-Type"))}
	}
	size := 0
	if r.ContentLength > 0 && r.ContentLength <= maxBody {
		size = int(r.ContentLength)
	}
	body, err := readString(http.MaxBytesReader(w, r.Body, maxBody), size)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return &statusError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d MiB; publish fewer specs per request", maxBody>>20)}
	}
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	if req, ok := into.(*PublishRequest); ok && decodePublishRequest(body, req) {
		return nil
	}
	return strictUnmarshal([]byte(body), into)
}

// readString reads r to its end into a string of about size bytes (a
// body's Content-Length): a 60,000-spec body is read without the ten
// copies of growing a buffer from 512 bytes, and its specs are slices of
// it (decodePublishRequest), where a []byte would be copied once more.
func readString(r io.Reader, size int) (string, error) {
	var b strings.Builder
	b.Grow(size)
	// A buffer of the body's size (and one byte to see its end), not
	// io.Copy's 32 KiB: a one-port publish clears no more than it reads.
	_, err := io.CopyBuffer(&b, r, make([]byte, min(max(size+1, 512), 32<<10)))
	return b.String(), err
}

// strictUnmarshal decodes exactly one JSON object into the struct into
// points to, refusing unknown keys, keys that match a field only when
// case is ignored, and anything after the object.
func strictUnmarshal(body []byte, into any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return kindf(ErrInvalid, "request body is empty; send one JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return kindf(ErrInvalid, "request body is not valid JSON: %v; send one JSON object", jsonProblem(err))
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF {
		return kindf(ErrInvalid, "request body has data after the JSON object, which ends at byte %d; send exactly one object", end)
	}
	if raw = bytes.TrimSpace(raw); raw[0] != '{' {
		return kindf(ErrInvalid, "request body is a JSON %s, not an object; send one JSON object", jsonValueKind(raw[0]))
	}
	if err := checkKeys(raw, reflect.TypeOf(into).Elem(), ""); err != nil {
		return err
	}
	dec = json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return kindf(ErrInvalid, "request body: key %q wants %s, not a JSON %s", typeErr.Field, jsonKind(typeErr.Type), typeErr.Value)
		}
		return kindf(ErrInvalid, "request body: %v", jsonProblem(err))
	}
	return nil
}

// checkKeys compares the keys of a JSON object with the json names of
// struct t's fields, and of the structs inside it, exactly.
// at is where the object sits, such as "subnets[1]"; "" for the body.
func checkKeys(raw json.RawMessage, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) ||
		reflect.PointerTo(t).Implements(textUnmarshaler):
		return nil
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		if !hasKeys(t.Elem()) {
			// Splitting 60,000 port specs into raw elements to check
			// none of them was a third of reading a publish request.
			return nil
		}
		var elems []json.RawMessage
		if json.Unmarshal(raw, &elems) != nil {
			return nil // not an array: the typed decode says so
		}
		for i, e := range elems {
			if err := checkKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() != reflect.Struct:
		return nil
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return nil // not an object: the typed decode names the wrong type
	}
	fields := jsonFields(t)
	in := func(key string) string {
		if at == "" {
			return key
		}
		return at + "." + key
	}
	for key, v := range obj {
		if f, ok := fields[key]; ok {
			if err := checkKeys(v, f.Type, in(key)); err != nil {
				return err
			}
			continue
		}
		names := slices.Sorted(stdmaps.Keys(fields))
		for _, name := range names {
			if strings.EqualFold(name, key) {
				return kindf(ErrInvalid, "request body: key %q is spelled %q; keys are case-sensitive", in(key), in(name))
			}
		}
		return kindf(ErrInvalid, "request body: unknown key %q; known keys are %s", in(key), strings.Join(names, ", "))
	}
	return nil
}

// hasKeys says whether a value of type t can hold an object whose keys
// checkKeys compares: a struct decoded field by field, or a slice or
// array of such.
func hasKeys(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) ||
		reflect.PointerTo(t).Implements(textUnmarshaler):
		return false
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		return hasKeys(t.Elem())
	}
	return t.Kind() == reflect.Struct
}

// jsonValueKind names the JSON value that starts with c.
func jsonValueKind(c byte) string {
	switch c {
	case '[':
		return "array"
	case '"':
		return "string"
	case 'n':
		return "null"
	case 't', 'f':
		return "boolean"
	}
	return "number"
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// jsonFields maps the json names of t's fields, embedded ones included,
// to the fields.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
			continue
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			continue // its fields are visible on their own
		case name == "":
			name = f.Name
		}
		out[name] = f
	}
	return out
}

// jsonProblem drops the "json: " prefix encoding/json puts on its errors.
func jsonProblem(err error) string {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "it ends in the middle of a value"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a number"
}

// statusError is an API error with its own HTTP status.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

// Status reports the agent, its attachments and how much state it holds.
func (a *Agent) Status() (*Status, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := &Status{
		PID: os.Getpid(), StateFile: a.store.Path(), Socket: a.cfg.Socket, PinDir: a.dp.PinDir(),
		Cgroup: a.cfg.Cgroup, TCMode: "none (no uplink attached)", Uplinks: []Uplink{},
		KernelFeatures: a.dp.Features(),
		Networks:       len(a.st.networks), Endpoints: len(a.st.endpoints), Mappings: len(a.st.ports),
		DynamicPorts: a.ipam.DynamicPorts().String(), SNATPorts: a.snatPorts.String(),
		Degraded: a.damage.Problems(),
	}
	a.fillHealth(s)
	var ra map[int]string
	if a.needsForwarding6() {
		ra = a.raIgnored()
	}
	for idx, u := range a.uplinks {
		u.Warning = ra[idx]
		s.Uplinks = append(s.Uplinks, u)
		s.TCMode = u.Mode
	}
	slices.SortFunc(s.Uplinks, func(x, y Uplink) int { return strings.Compare(x.Name, y.Name) })
	var err error
	if s.Attachments, err = loader.ListAttachments(a.dp.PinDir()); err != nil {
		return nil, err
	}
	bs, err := a.bindings.All()
	if err != nil {
		return nil, err
	}
	s.Bindings = len(bs)
	// Both tables: ct holds answered flows, ct_new the rest.
	ct, err := maps.NewCT(a.dp.Maps.CT).All()
	if err != nil {
		return nil, err
	}
	ctNew, err := maps.NewCT(a.dp.Maps.CTNew).All()
	if err != nil {
		return nil, err
	}
	s.CTEntries, s.CTNew = len(ct)+len(ctNew), len(ctNew)
	ha, err := maps.NewHostAddrs(a.dp.Maps.HostAddrs).All()
	if err != nil {
		return nil, err
	}
	s.HostAddrs = len(ha)
	if s.Counters, err = maps.NewStats(a.dp.Maps.Stats).Read(); err != nil {
		return nil, err
	}
	return s, nil
}

// WithDiskAdvice adds what to do to an error caused by a read-only or
// full file system; other errors come back as they are. bbolt formats
// some of its errors with %s, so the errno is looked for in the text too.
func WithDiskAdvice(err error) error {
	if err == nil {
		return nil
	}
	where := "the file system"
	var pe *fs.PathError
	if errors.As(err, &pe) {
		where = "the file system holding " + filepath.Dir(pe.Path)
	}
	hasErrno := func(e syscall.Errno) bool { return errors.Is(err, e) || strings.Contains(err.Error(), e.Error()) }
	switch {
	case hasErrno(syscall.EROFS):
		return fmt.Errorf("%w; %s is mounted read-only: remount it read-write, or give the agent a --state-dir on a writable one, and retry", err, where)
	case hasErrno(syscall.ENOSPC):
		return fmt.Errorf("%w; %s is full: free space on it (df shows how much is left) and retry", err, where)
	case hasErrno(syscall.EDQUOT):
		return fmt.Errorf("%w; the disk quota on %s is used up: free space or raise the quota, and retry", err, strings.TrimPrefix(where, "the file system holding "))
	}
	return err
}
