package main

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

func init() { testenv.RegisterHelper("httpget", httpGetHelper) }

// httpGet fetches path from addr over HTTP/1.0 and returns the body.
func httpGet(addr, path string) (string, error) {
	c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: pontoon\r\n\r\n", path); err != nil {
		return "", err
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		return "", err
	}
	// busybox httpd ends a CGI script's header with the script's "\n\n".
	text := strings.ReplaceAll(string(b), "\r\n", "\n")
	head, body, ok := strings.Cut(text, "\n\n")
	if !ok || !strings.Contains(strings.SplitN(head, "\n", 2)[0], " 200 ") {
		return "", fmt.Errorf("GET %s from %s: %q", path, addr, b)
	}
	// httpd listens on [::]: an IPv4 client shows as [::ffff:a.b.c.d].
	body = strings.TrimSpace(body)
	body = strings.TrimPrefix(strings.TrimSuffix(strings.TrimPrefix(body, "["), "]"), "::ffff:")
	return body, nil
}

func httpGetHelper(args []string) (any, error) {
	if len(args) != 2 {
		return nil, errors.New("httpget wants an address and a path")
	}
	return httpGet(args[0], args[1])
}

// podmanEnv is Podman 4.3 with everything private: root, runroot, tmpdir,
// vfs storage, and a containers.conf (CONTAINERS_CONF) with the CNI
// backend, the test's plugin and config directories, no port reservation
// (else conmon holds real sockets on the host ports), cgroupfs, file
// events and low ulimits (the VM lacks CAP_SYS_RESOURCE). It runs in the
// world's host namespace.
type podmanEnv struct {
	*cniEnv
	dir, conf string
}

func (p *podmanEnv) on(t *testing.T) *podmanEnv {
	c := *p
	c.cniEnv = p.cniEnv.on(t)
	return &c
}

func (p *podmanEnv) cmd(args ...string) *exec.Cmd {
	base := []string{"--net=" + p.host.Path(), "--", "podman", "--root", filepath.Join(p.dir, "root"),
		"--runroot", filepath.Join(p.dir, "runroot"), "--tmpdir", filepath.Join(p.dir, "tmp"), "--storage-driver", "vfs"}
	c := exec.Command("nsenter", append(base, args...)...)
	c.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	return c
}

func (p *podmanEnv) ok(args ...string) string {
	p.t.Helper()
	r := runCmd(p.t, nil, p.cmd(args...))
	if r.code != 0 {
		p.t.Fatalf("podman %s: exit %d: %s%s\nagent log:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr, p.agentLog())
	}
	return r.stdout
}

// staticBusybox is busybox-static's binary, or "" when missing or
// dynamically linked (busybox without -static needs a libc in the image).
func staticBusybox() string {
	f, err := elf.Open("/bin/busybox")
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return ""
		}
	}
	return "/bin/busybox"
}

func newPodmanEnv(t *testing.T, e *cniEnv) *podmanEnv {
	t.Helper()
	for _, tool := range []string{"podman", "conmon", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: run 'make deps' (podman, runc)", tool)
		}
	}
	bb := staticBusybox()
	if bb == "" {
		t.Skip("needs a static /bin/busybox for the image: run 'make deps' (busybox-static)")
	}
	e.cniVersion = "1.0.0" // Podman 4.3's libcni knows no later one
	p := &podmanEnv{cniEnv: e, dir: t.TempDir()}
	for _, d := range []string{"root", "runroot", "tmp", "net", "rootfs/bin", "rootfs/www/cgi-bin"} {
		if err := os.MkdirAll(filepath.Join(p.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Registered after the world's, so it runs before the agent stops and
	// the namespaces go: every container, conmon and runc, then mounts.
	t.Cleanup(p.cleanup)

	p.conf = filepath.Join(p.dir, "containers.conf")
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "cni"
cni_plugin_dirs = [%q, %q]
network_config_dir = %q
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
enable_port_reservation = false
runtime = "runc"
`, cniPluginDir, systemCNIDir, filepath.Join(p.dir, "net"), filepath.Join(p.dir, "events.log"))
	if err := os.WriteFile(p.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// The image: busybox-static and a CGI script answering with the
	// client's address as httpd saw it.
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	cgi := "#!/bin/busybox sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n"
	for name, c := range map[string]struct {
		data []byte
		mode os.FileMode
	}{"bin/busybox": {b, 0o755}, "www/cgi-bin/ip": {[]byte(cgi), 0o755}, "www/index.html": {[]byte("pontoon\n"), 0o644}} {
		if err := os.WriteFile(filepath.Join(p.dir, "rootfs", name), c.data, c.mode); err != nil {
			t.Fatal(err)
		}
	}
	imp := p.cmd("import", "-", "localhost/pontoon-busybox")
	tar := exec.Command("tar", "-C", filepath.Join(p.dir, "rootfs"), "-c", ".")
	if imp.Stdin, err = tar.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := tar.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("podman import: %v: %s", err, out)
	}
	if err := tar.Wait(); err != nil {
		t.Fatal(err)
	}
	return p
}

// cleanup removes the containers through Podman, then ends any process
// still naming the test's directory (conmon, runc, the container) by its
// pid, and unmounts what is left mounted below it.
func (p *podmanEnv) cleanup() {
	if out, err := p.cmd("rm", "--force", "--all", "--time", "0").CombinedOutput(); err != nil {
		p.t.Logf("podman rm: %v: %s", err, out)
	}
	// conmon exits, and its exit command ('podman container cleanup')
	// runs, shortly after the container goes: wait for that, then end
	// whatever is left.
	for deadline := time.Now().Add(10 * time.Second); len(p.processes()) > 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	for pid, cmdline := range p.processes() {
		p.t.Logf("ending leftover process %d: %s", pid, cmdline)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	lines := strings.Split(string(mounts), "\n")
	for i := len(lines) - 1; i >= 0; i-- { // innermost first
		f := strings.Fields(lines[i])
		if len(f) > 4 && strings.HasPrefix(f[4], p.dir) {
			if err := syscall.Unmount(f[4], syscall.MNT_DETACH); err != nil {
				p.t.Logf("unmount %s: %v", f[4], err)
			}
		}
	}
}

// processes are those naming the test's directory: Podman's, conmon,
// runc and the containers they started.
func (p *podmanEnv) processes() map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), p.dir) {
			out[pid] = strings.ReplaceAll(string(cmdline), "\x00", " ")
		}
	}
	return out
}

// testCNIPodman: Podman 4.3 runs busybox httpd on a pontoon-cni network
// with -p 8080:80; the port is reached from outside and from the host's
// 127.0.0.1 with the client's address kept, without a listener or a
// firewall rule; stop removes the mapping and start restores it.
func testCNIPodman(t *testing.T, e *cniEnv) {
	p := newPodmanEnv(t, e)
	net := "pod" + p.id
	gateway := "10.94.0.1"
	p.writeConflist(net, p.pontoonPlugin(map[string]any{"network": net, "subnet": "10.94.0.0/24"}))
	// writeConflist writes to the cnitool directory: Podman has its own.
	if err := os.Rename(filepath.Join(p.confDir, net+".conflist"), filepath.Join(p.dir, "net", net+".conflist")); err != nil {
		t.Fatal(err)
	}
	p.ok("run", "-d", "--name", "web", "--network", net, "-p", "8080:80", "localhost/pontoon-busybox",
		"/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www")

	hostAddr := netip4(p.hostIP.String(), 8080)
	// httpd starts after run returns: wait for it (a hang guard, not a
	// timing assertion).
	fetchOutside := func() (string, error) {
		var body string
		err := p.outside.Do(func() (err error) {
			body, err = httpGet(hostAddr, "/cgi-bin/ip")
			return err
		})
		return body, err
	}
	waitFetch := func(t *testing.T) string {
		t.Helper()
		var body string
		var err error
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if body, err = fetchOutside(); err == nil {
				return body
			}
		}
		t.Fatalf("outside never reached httpd through %s: %v\nagent log:\n%s", hostAddr, err, p.agentLog())
		return ""
	}

	t.Run("reached from outside and from 127.0.0.1, the client's address kept", func(t *testing.T) {
		p := p.on(t)
		if body := waitFetch(t); body != p.outsideIP.String() {
			t.Errorf("httpd saw the outside client as %q, want %s", body, p.outsideIP)
		}
		var body string
		if err := p.host.Helper(t, p.cgroup, &body, "httpget", "127.0.0.1:8080", "/cgi-bin/ip"); err != nil {
			t.Fatalf("host to 127.0.0.1:8080: %v", err)
		}
		if body != gateway {
			t.Errorf("httpd saw the host's client as %q, want %s (the host's address on the bridge)", body, gateway)
		}
	})
	t.Run("no listener on 8080 and no firewall rule", func(t *testing.T) {
		p := p.on(t)
		if out := p.host.Exec(t, "ss", "-Hltnp", "sport = :8080"); strings.TrimSpace(out) != "" {
			t.Errorf("something listens on 8080 in the host namespace: %s", out)
		}
		if out := p.host.Exec(t, "ss", "-Hltnp"); strings.Contains(out, "conmon") {
			t.Errorf("conmon listens in the host namespace: %s", out)
		}
		if _, err := exec.LookPath("iptables-save"); err == nil {
			for _, line := range strings.Split(p.host.Exec(t, "iptables-save"), "\n") {
				if strings.HasPrefix(line, "-A") {
					t.Errorf("iptables rule in the host namespace: %s", line)
				}
			}
		}
		if _, err := exec.LookPath("nft"); err == nil {
			if out := p.host.Exec(t, "nft", "list", "ruleset"); strings.Contains(out, "8080") {
				t.Errorf("nftables rule for 8080 in the host namespace:\n%s", out)
			}
		}
	})
	var ms []control.PortMapping
	t.Run("stop removes the mapping, start restores it", func(t *testing.T) {
		p := p.on(t)
		p.okJSON(&ms, "port", "ls")
		if len(ms) != 1 || ms[0].Host.First != 8080 || ms[0].Container.First != 80 {
			t.Fatalf("mappings while running: %+v, want 8080 -> 80", ms)
		}
		p.ok("stop", "--time", "1", "web")
		p.okJSON(&ms, "port", "ls")
		if len(ms) != 0 || len(p.bindings()) != 0 || len(p.cniEndpoints(net)) != 0 {
			t.Errorf("after podman stop: %d mappings, %d bindings, %d endpoints, want none", len(ms), len(p.bindings()), len(p.cniEndpoints(net)))
		}
		if _, err := fetchOutside(); err == nil {
			t.Error("outside still reaches 8080 after podman stop")
		}
		p.ok("start", "web")
		p.okJSON(&ms, "port", "ls")
		if len(ms) != 1 || len(p.bindings()) != 1 {
			t.Errorf("after podman start: %+v, %d bindings, want the one mapping back", ms, len(p.bindings()))
		}
		if body := waitFetch(t); body != p.outsideIP.String() {
			t.Errorf("after start httpd saw %q, want %s", body, p.outsideIP)
		}
	})
	p.ok("rm", "--force", "--time", "0", "web")
	if p.okJSON(&ms, "port", "ls"); len(ms) != 0 || len(p.cniEndpoints(net)) != 0 {
		t.Errorf("after podman rm: %+v, endpoints %+v", ms, p.cniEndpoints(net))
	}
}

func netip4(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
