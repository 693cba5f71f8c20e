package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
	"github.com/pontoon-net/pontoon/maps"
)

// TestMessages: the messages issue 18 found unhelpful say what is wrong
// and what to do, the API takes strict JSON and logs what it refuses, and
// nothing a refused request names changes.
func TestMessages(t *testing.T) {
	w := newWorld(t, 1)
	w.startAgent()
	c1 := w.containers[0]
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", c1.Path())
	w.ok("port", "publish", "c1", "8080:80")

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"rm of an empty network name", []string{"network", "rm", ""}, "network name is empty; give one of the names 'pontoon network ls' lists"},
		{"inspect of an empty network name", []string{"network", "inspect", ""}, "network name is empty"},
		{"detach of an empty endpoint name", []string{"endpoint", "detach", ""}, "endpoint name is empty; give one of the names 'pontoon endpoint ls' lists"},
		{"a reversed range", []string{"port", "publish", "c1", "80-70"}, `port spec "80-70": container port range 80-70: reversed; write it as 70-80`},
		{"a reversed host range", []string{"port", "publish", "c1", "90-80:80-90"}, `host port range 90-80: reversed; write it as 80-90`},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := w.snapshot()
			r := w.pt(c.args...)
			expectOneLineError(t, r, c.want)
			if n := strings.Count(r.stderr, "write it as"); n > 1 {
				t.Errorf("advice given %d times: %s", n, r.stderr)
			}
			sameSnapshot(t, strings.Join(c.args, " "), before, w.snapshot())
		})
	}

	// The API refuses what encoding/json alone would take.
	for _, c := range []struct {
		name, contentType, body string
		status                  int
		want                    string
	}{
		{"text/plain", "text/plain", `{"endpoint":"c1","specs":["9090:90"]}`, 415, `request body has Content-Type "text/plain"; send it as application/json`},
		{"trailing garbage", "application/json", `{"endpoint":"c1","specs":["9090:90"]}garbage`, 400, "request body has data after the JSON object, which ends at byte 37; send exactly one object"},
		{"case-folded key", "application/json", `{"Endpoint":"c1","specs":["9090:90"]}`, 400, `request body: key "Endpoint" is spelled "endpoint"; keys are case-sensitive`},
		{"unknown key", "application/json", `{"endpoint":"c1","spec":["9090:90"]}`, 400, `request body: unknown key "spec"; known keys are allow_from, endpoint, specs`},
	} {
		t.Run("API "+c.name, func(t *testing.T) {
			before := w.snapshot()
			status, msg := postRaw(t, w.socket, "/v1/ports", c.contentType, strings.NewReader(c.body))
			if status != c.status || !strings.Contains(msg, c.want) {
				t.Errorf("got %d %q\nwant %d %q", status, msg, c.status, c.want)
			}
			sameSnapshot(t, c.name, before, w.snapshot())
			logged := fmt.Sprintf(`level=WARN msg="API request failed" method=POST path=/v1/ports status=%d err=`, c.status)
			if log := w.agentLog(); !strings.Contains(log, logged) || !strings.Contains(log, strings.ReplaceAll(c.want, `"`, `\"`)) {
				t.Errorf("agent log has no %q line with the message:\n%s", logged, log)
			}
		})
	}

	t.Run("a 100 MB body", func(t *testing.T) {
		before := w.snapshot()
		const size = 100 << 20
		body := io.MultiReader(strings.NewReader(`{"endpoint":"c1","specs":["`), io.LimitReader(repeatByte('8'), size), strings.NewReader(`"]}`))
		status, msg := postRaw(t, w.socket, "/v1/ports", "application/json", body)
		want := "request body exceeds 4 MiB; publish fewer specs per request"
		if status != http.StatusRequestEntityTooLarge || msg != want {
			t.Errorf("got %d %q, want 413 %q", status, msg, want)
		}
		// What the CLI's client says: the agent's line, not "unexpected EOF".
		_, err := control.NewClient(w.socket).Publish(control.PublishRequest{Endpoint: "c1", Specs: slicesRepeat(strings.Repeat("8", 1<<20), 100)})
		if err == nil || err.Error() != want {
			t.Errorf("client: %v, want %q", err, want)
		}
		sameSnapshot(t, "a 100 MB body", before, w.snapshot())
	})

	t.Run("port ls -o json is snake_case", func(t *testing.T) {
		out := w.ok("port", "ls", "-o", "json")
		if strings.Contains(out, `"First"`) || strings.Contains(out, `"Last"`) || !strings.Contains(out, `"host_ports": {`) || !strings.Contains(out, `"first": 8080`) {
			t.Errorf("port ls -o json:\n%s", out)
		}
		out = w.ok("status", "-o", "json")
		if strings.Contains(out, `"Packets"`) || !strings.Contains(out, `"packets"`) {
			t.Errorf("status -o json:\n%s", out)
		}
	})

	t.Run("unpublishing one port of a range keeps the rest", func(t *testing.T) {
		w.ok("port", "publish", "c1", "1-65535:1-65535/udp")
		out := w.ok("port", "unpublish", "c1", "81/udp")
		if strings.TrimSpace(out) != "81/udp -> 0.0.0.0:81" {
			t.Errorf("unpublish printed %q, want the one port it removed", out)
		}
		var ms []control.PortMapping
		w.okJSON(&ms, "port", "ls", "c1")
		var udp []string
		for _, m := range ms {
			if m.Proto == "udp" {
				udp = append(udp, fmt.Sprintf("%s:%s", m.Host, m.Container))
			}
		}
		if strings.Join(udp, " ") != "1-80:1-80 82-65535:82-65535" {
			t.Errorf("udp mappings left: %v", udp)
		}
		ports := udpBindings(t, w.pins)
		if len(ports) != 65534 || ports[81] || !ports[80] || !ports[82] || !ports[65535] || !ports[1] {
			t.Errorf("%d udp bindings; 80 %v 81 %v 82 %v", len(ports), ports[80], ports[81], ports[82])
		}
		// The rest goes by its own specs, each part whole.
		w.ok("port", "unpublish", "c1", "1-65535/udp")
		if ports := udpBindings(t, w.pins); len(ports) != 0 {
			t.Errorf("%d udp bindings left", len(ports))
		}
	})
}

// udpBindings are the host ports the pinned bindings map holds for UDP.
func udpBindings(t *testing.T, pins string) map[uint16]bool {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(pins, "bindings"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	all, err := maps.NewBindings(m).All()
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint16]bool{}
	for _, b := range all {
		if b.Proto == maps.UDP {
			out[b.Host.Port()] = true
		}
	}
	return out
}

// postRaw sends a body to the agent as is and returns the status and the
// error message.
func postRaw(t *testing.T, socket, path, contentType string, body io.Reader) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	req, err := http.NewRequest("POST", "http://pontoon"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var e struct{ Error string }
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error
}

type repeatByte byte

func (r repeatByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestDiskMessages: a full state disk and a read-only one are reported
// with what to do; a refused request changes nothing.
func TestDiskMessages(t *testing.T) {
	w := newWorld(t, 1)
	w.stateDir = testenv.Tmpfs(t, "size=1m")
	w.startAgent()
	w.ok("network", "create", "net", "--subnet", "10.77.0.0/24")
	w.ok("endpoint", "attach", "net", "c1", "--netns", w.containers[0].Path())

	filler := filepath.Join(w.stateDir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(f, io.LimitReader(repeatByte(0), 2<<20)) // stops at ENOSPC
	f.Close()

	// Each publish grows the state file until a write finds no space.
	var r result
	var before snapshot
	for i := range 100 {
		var specs []string
		for j := range 100 {
			p := 10000 + 100*i + j
			specs = append(specs, fmt.Sprintf("%d:%d/udp", p, p))
		}
		before = w.snapshot()
		if r = w.pt(append([]string{"port", "publish", "c1"}, specs...)...); r.code != 0 {
			break
		}
	}
	expectOneLineError(t, r, "no space left on device; the file system holding "+w.stateDir+" is full: free space on it (df shows how much is left) and retry")
	sameSnapshot(t, "a publish on a full disk", before, w.snapshot())
	os.Remove(filler)
	w.ok("port", "publish", "c1", "9999:9999/udp")

	t.Run("a read-only state directory", func(t *testing.T) {
		ro := t.TempDir()
		if out, err := exec.Command("mount", "--bind", "-o", "ro", ro, ro).CombinedOutput(); err != nil {
			t.Fatalf("bind-mount %s read-only: %v %s", ro, err, out)
		}
		t.Cleanup(func() { exec.Command("umount", ro).Run() })
		// A namespace and cgroup of its own: one agent serves each.
		ns := testenv.NewNetns(t, "ppr"+w.id)
		r := runCmd(t, nil, exec.Command("nsenter", "--net="+ns.Path(), "--", bin, "agent", "--state-dir", ro,
			"--socket", filepath.Join(t.TempDir(), "s.sock"), "--bpffs", testenv.PinDir(t), "--cgroup", testenv.Cgroup(t)))
		expectOneLineError(t, r, "read-only file system; the file system holding "+ro+" is mounted read-only: remount it read-write, or give the agent a --state-dir on a writable one, and retry")
	})
}
