package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pontoon-net/pontoon/ipam"
)

// TestStrictBody: the API takes exactly one JSON object, sent as
// application/json, with the request type's keys as spelled; every refusal
// is one line saying what is wrong and what to send instead.
func TestStrictBody(t *testing.T) {
	type subnet struct {
		Subnet  string `json:"subnet"`
		Gateway string `json:"gateway,omitempty"`
	}
	type nested struct {
		Name    string   `json:"name"`
		Subnets []subnet `json:"subnets"`
		Opt     *subnet  `json:"opt,omitempty"`
	}
	const ct = "application/json"
	for _, c := range []struct {
		name, contentType, body string
		into                    any
		status                  int
		want                    string
	}{
		{"ok", ct, `{"endpoint":"web","specs":["80"]}`, &PublishRequest{}, 200, ""},
		{"charset parameter", ct + "; charset=utf-8", `{"endpoint":"web","specs":["80"]}`, &PublishRequest{}, 200, ""},
		{"trailing white space", ct, "{\"endpoint\":\"web\"} \n\t", &UnpublishRequest{}, 200, ""},
		{"nested ok", ct, `{"name":"n","subnets":[{"subnet":"10.0.0.0/24"}],"opt":{"gateway":"x"}}`, &nested{}, 200, ""},
		{"text/plain", "text/plain", `{"endpoint":"web"}`, &UnpublishRequest{}, 415, `request body has Content-Type "text/plain"; send it as application/json`},
		{"no content type", "", `{"endpoint":"web"}`, &UnpublishRequest{}, 415, `Content-Type ""; send it as application/json`},
		{"trailing garbage", ct, `{"endpoint":"web","specs":["80"]}garbage`, &PublishRequest{}, 400, "request body has data after the JSON object, which ends at byte 33; send exactly one object"},
		{"two objects", ct, `{"endpoint":"web"} {"endpoint":"db"}`, &UnpublishRequest{}, 400, "data after the JSON object"},
		{"case-folded key", ct, `{"Endpoint":"web","specs":["80"]}`, &PublishRequest{}, 400, `request body: key "Endpoint" is spelled "endpoint"; keys are case-sensitive`},
		{"upper-case key", ct, `{"endpoint":"web","SPECS":["80"]}`, &PublishRequest{}, 400, `key "SPECS" is spelled "specs"`},
		{"case-folded nested key", ct, `{"name":"n","subnets":[{"subnet":"10.0.0.0/24"},{"Subnet":"x"}]}`, &nested{}, 400, `key "subnets[1].Subnet" is spelled "subnets[1].subnet"`},
		{"case-folded key in a pointer", ct, `{"name":"n","opt":{"GateWay":"x"}}`, &nested{}, 400, `key "opt.GateWay" is spelled "opt.gateway"`},
		{"unknown key", ct, `{"endpoint":"web","spec":"80"}`, &PublishRequest{}, 400, `request body: unknown key "spec"; known keys are allow_from, endpoint, specs`},
		{"empty", ct, "", &PublishRequest{}, 400, "request body is empty; send one JSON object"},
		{"array", ct, `[{"endpoint":"web"}]`, &PublishRequest{}, 400, "request body is a JSON array, not an object"},
		{"null", ct, `null`, &PublishRequest{}, 400, "request body is a JSON null, not an object"},
		{"wrong type", ct, `{"endpoint":5}`, &PublishRequest{}, 400, `request body: key "endpoint" wants a string, not a JSON number`},
		{"wrong element type", ct, `{"specs":[80]}`, &PublishRequest{}, 400, `key "specs" wants a string, not a JSON number`},
		{"cut short", ct, `{"endpoint":`, &PublishRequest{}, 400, "request body is not valid JSON: it ends in the middle of a value; send one JSON object"},
		{"not JSON", ct, `endpoint=web`, &PublishRequest{}, 400, "request body is not valid JSON: invalid character 'e'"},
		{"too large", ct, `{"endpoint":"web","specs":["` + strings.Repeat("8", maxBody) + `"]}`, &PublishRequest{}, 413, "request body exceeds 4 MiB; publish fewer specs per request"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/v1/ports", strings.NewReader(c.body))
			if c.contentType != "" {
				r.Header.Set("Content-Type", c.contentType)
			}
			w := httptest.NewRecorder()
			if ok := decodeBody(w, r, c.into); ok != (c.status == 200) {
				t.Fatalf("decodeBody = %v, status %d: %s", ok, w.Code, w.Body)
			}
			if c.status == 200 {
				return
			}
			var e apiError
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
				t.Fatalf("error body %q: %v", w.Body, err)
			}
			if w.Code != c.status || !strings.Contains(e.Error, c.want) || strings.Contains(e.Error, "\n") {
				t.Errorf("got %d %q\nwant %d %q", w.Code, e.Error, c.status, c.want)
			}
		})
	}
}

// TestAPIFailuresLogged: each refused request is logged at WARN with its
// method, path, status and message; a good one is not.
func TestAPIFailuresLogged(t *testing.T) {
	var log bytes.Buffer
	store, err := ipam.OpenBolt(filepath.Join(t.TempDir(), "pontoon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	a := &Agent{log: slog.New(slog.NewTextHandler(&log, nil)), store: store}
	h := a.routes()
	for _, c := range []struct {
		method, path, contentType, body string
		status                          int
		want                            string
	}{
		{"POST", "/v1/ports", "text/plain", `{}`, 415, `level=WARN msg="API request failed" method=POST path=/v1/ports status=415 err="request body has Content-Type \"text/plain\"; send it as application/json"`},
		{"DELETE", "/v1/networks/", "", "", 400, `method=DELETE path=/v1/networks/ status=400 err="network name is empty in DELETE /v1/networks/; name the network at the end of the path"`},
		{"GET", "/v1/endpoints/", "", "", 400, `path=/v1/endpoints/ status=400 err="endpoint name is empty`},
		{"GET", "/v2/status", "", "", 404, `path=/v2/status status=404 err="no API GET /v2/status; this agent serves /v1"`},
		{"PUT", "/v1/ports", "", "", 404, `method=PUT path=/v1/ports status=404 err="no API PUT /v1/ports`},
	} {
		log.Reset()
		r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
		if c.contentType != "" {
			r.Header.Set("Content-Type", c.contentType)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.status {
			t.Errorf("%s %s: status %d, want %d (%s)", c.method, c.path, w.Code, c.status, w.Body)
		}
		if got := log.String(); !strings.Contains(got, c.want) || strings.Count(got, "level=WARN") != 1 {
			t.Errorf("%s %s: log %q\nwant one WARN line with %q", c.method, c.path, got, c.want)
		}
	}

	// What the request guard answers itself is logged with its message.
	a.markUnhealthy(errors.New("injected: store broken"))
	log.Reset()
	r := httptest.NewRequest("DELETE", "/v1/networks/n", nil)
	h.ServeHTTP(httptest.NewRecorder(), r)
	if want := `method=DELETE path=/v1/networks/n status=503 err="the agent is unhealthy (injected: store broken)`; !strings.Contains(log.String(), want) {
		t.Errorf("log %q\nwant %q", log.String(), want)
	}
}

// TestDiskAdvice: a read-only or full disk says what failed and what to do.
func TestDiskAdvice(t *testing.T) {
	pathErr := func(e syscall.Errno) error {
		return fmt.Errorf("save port mappings: %w", &fs.PathError{Op: "write", Path: "/var/lib/pontoon/pontoon.db", Err: e})
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{pathErr(syscall.EROFS), "save port mappings: write /var/lib/pontoon/pontoon.db: read-only file system; the file system holding /var/lib/pontoon is mounted read-only: remount it read-write, or give the agent a --state-dir on a writable one, and retry"},
		{pathErr(syscall.ENOSPC), "save port mappings: write /var/lib/pontoon/pontoon.db: no space left on device; the file system holding /var/lib/pontoon is full: free space on it (df shows how much is left) and retry"},
		{pathErr(syscall.EDQUOT), "disk quota exceeded; the disk quota on /var/lib/pontoon is used up: free space or raise the quota, and retry"},
		{errors.New("save network n: file resize error: no space left on device"), "no space left on device; the file system is full: free space on it (df shows how much is left) and retry"},
		{errors.New("no network x; list them with 'pontoon network ls'"), "no network x; list them with 'pontoon network ls'"},
	} {
		got := WithDiskAdvice(c.err).Error()
		if !strings.HasSuffix(got, c.want) {
			t.Errorf("%v:\n got %s\nwant ...%s", c.err, got, c.want)
		}
	}
	if !errors.Is(WithDiskAdvice(pathErr(syscall.ENOSPC)), syscall.ENOSPC) {
		t.Error("the advice hides the errno")
	}
}
