package control

import (
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// TestClientReusesConnection: one client's requests, refused ones
// included, share one connection to the agent instead of dialling it for
// each (a reply left unread to its end closes the connection).
func TestClientReusesConnection(t *testing.T) {
	a := testAgent(t)
	a.dp.Maps.CT, a.dp.Maps.CTNew = newDatapathMap(t, "ct"), newDatapathMap(t, "ct_new")
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int32
	srv := &http.Server{Handler: a.routes(), ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := NewClient(sock)
	for range 3 {
		if _, err := c.Publish(PublishRequest{Endpoint: "web", Specs: []string{"8080:80/tcp"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Ports("web"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "8080:80/tcp"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "8080:80/tcp"}); err == nil {
			t.Fatal("unpublish of a port not published: no error")
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("12 requests dialled the agent %d times, want once", n)
	}
}
