package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/loader/testenv"
)

// dockerd is a Docker daemon of the test's own, in the world's host
// namespace: its own data root, exec root, socket and cgroup parent, no
// bridge, no iptables, no forwarding or masquerade of its own.
type dockerd struct {
	w                  *world
	dir, sock, cgroup  string
	cli                string
	cmd                *exec.Cmd
	done               chan struct{}
	log                string
	plugin, pluginSock string
	// containerd is the daemon's containerd, started by the test and
	// outliving dockerd's restarts: a dockerd killed with SIGKILL leaves
	// the containerd it started itself half-gone, and the next dockerd
	// waits for it.
	containerd     *exec.Cmd
	containerdDone chan struct{}
}

// newDockerd prepares a daemon whose networks use the world's agent under
// plugin name plugin; startDockerd runs it. Cleanup removes every
// container, ends dockerd, containerd and the shims (whatever names the
// test's directory), unmounts what they left and removes their cgroups.
func newDockerd(t *testing.T, w *world, plugin string) *dockerd {
	t.Helper()
	daemon, err := exec.LookPath("dockerd")
	if err != nil {
		t.Skip("dockerd is not installed (Debian's docker.io; 'make deps' installs it): skipping the Docker tests")
	}
	cli := filepath.Join(filepath.Dir(daemon), "..", "bin", "docker")
	if _, err := os.Stat(cli); err != nil {
		if cli, err = exec.LookPath("docker"); err != nil {
			t.Skip("the docker client is not installed: skipping the Docker tests")
		}
	}
	// Short: containerd's socket lives under it, and unix socket paths
	// are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "ptd-")
	if err != nil {
		t.Fatal(err)
	}
	d := &dockerd{
		w: w, dir: dir, sock: filepath.Join(dir, "docker.sock"), cli: cli,
		cgroup: "pontoon-docker-" + w.id, log: filepath.Join(dir, "dockerd.log"),
		plugin: plugin, pluginSock: control.DockerPluginSocket(control.DockerPluginDir, plugin),
	}
	t.Cleanup(func() { d.cleanup(t) })
	return d
}

// containerdSock is the test's containerd's socket.
func (d *dockerd) containerdSock() string { return filepath.Join(d.dir, "ctd.sock") }

// startContainerd runs a containerd of the test's own (its root, state,
// sockets and config under the test's directory, no CRI plugin) in the
// world's host namespace, unless it runs already.
func (d *dockerd) startContainerd(f *os.File) {
	t := d.w.t
	t.Helper()
	if d.containerd != nil {
		select {
		case <-d.containerdDone:
		default:
			return
		}
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Skip("containerd is not installed (docker.io depends on it): skipping the Docker tests")
	}
	conf := filepath.Join(d.dir, "containerd.toml")
	body := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(d.dir, "ctd-root"), filepath.Join(d.dir, "ctd-state"), d.containerdSock(), d.containerdSock()+".ttrpc", filepath.Join(d.dir, "ctd-opt"))
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+d.w.host.Path(), "--", "containerd", "--config", conf)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.containerd, d.containerdDone = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(d.containerdDone) }()
	d.waitDaemon("containerd", d.containerdDone, func() bool {
		_, err := os.Stat(d.containerdSock())
		return err == nil
	})
}

// waitDaemon waits until ready says the daemon answers, failing the test
// when it exits (done closes) or after 60 s, a hang guard and not a
// timing assertion.
func (d *dockerd) waitDaemon(what string, done chan struct{}, ready func() bool) {
	t := d.w.t
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ready() {
		select {
		case <-done:
			t.Fatalf("%s exited:\n%s", what, d.dockerdLog())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer in 60 s:\n%s", what, d.dockerdLog())
		}
	}
}

func (d *dockerd) startDockerd() {
	t := d.w.t
	t.Helper()
	f, err := os.OpenFile(d.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d.startContainerd(f)
	cmd := exec.Command("nsenter", "--net="+d.w.host.Path(), "--", "dockerd", "--containerd", d.containerdSock(),
		"--data-root", filepath.Join(d.dir, "data"), "--exec-root", filepath.Join(d.dir, "exec"),
		"--pidfile", filepath.Join(d.dir, "docker.pid"), "-H", "unix://"+d.sock,
		"--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
		"--live-restore", "--storage-driver=vfs", "--cgroup-parent=/"+d.cgroup,
		"--exec-opt", "native.cgroupdriver=cgroupfs", "--log-level=info")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.cmd, d.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(d.done) }()
	d.waitDaemon("dockerd", d.done, func() bool {
		_, err := d.docker("version")
		return err == nil
	})
}

// stopDockerd signals dockerd and waits for it; with --live-restore the
// containers keep running.
func (d *dockerd) stopDockerd(sig syscall.Signal) { stopDaemon(d.cmd, d.done, sig) }

// stopDaemon signals a daemon the test started (nil: none) unless it has
// exited (done is closed), and waits for it, killing it after 30 s.
func stopDaemon(cmd *exec.Cmd, done chan struct{}, sig syscall.Signal) {
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func (d *dockerd) dockerdLog() string {
	b, _ := os.ReadFile(d.log)
	s := string(b)
	if len(s) > 8000 {
		s = "...\n" + s[len(s)-8000:]
	}
	return s
}

// docker runs the client against the test's daemon.
func (d *dockerd) docker(args ...string) (string, error) {
	cmd := exec.Command(d.cli, append([]string{"-H", "unix://" + d.sock}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

func (d *dockerd) ok(args ...string) string {
	t := d.w.t
	t.Helper()
	out, err := d.docker(args...)
	if err != nil {
		t.Fatalf("%v\nagent log:\n%s\ndockerd log:\n%s", err, d.w.agentLog(), d.dockerdLog())
	}
	return out
}

// importBusybox makes an image of busybox-static alone.
func (d *dockerd) importBusybox(tag string) {
	t := d.w.t
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox is not installed: skipping the Docker tests")
	}
	body, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, dir := range []string{"bin/", "dev/", "etc/", "proc/", "sys/", "tmp/"} {
		tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body))})
	tw.Write(body)
	for _, l := range []string{"sh", "sleep"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + l, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(d.cli, "-H", "unix://"+d.sock, "import", "-", tag)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v: %s", err, out)
	}
}

// containerNetns names the running container's namespace for testenv
// (ip netns attach), replacing an earlier name of it.
func (d *dockerd) containerNetns(name, ns string) *testenv.Netns {
	t := d.w.t
	t.Helper()
	pid := d.ok("inspect", "-f", "{{.State.Pid}}", name)
	exec.Command("ip", "netns", "del", ns).Run()
	testenv.Run(t, "ip", "netns", "attach", ns, pid)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	return &testenv.Netns{Name: ns}
}

// cleanup ends everything the daemon started, even after a failure: its
// containers, then dockerd, containerd and the shims, found by the test's
// directory on their command lines; then the mounts they left under it,
// their cgroups and the plugin socket.
func (d *dockerd) cleanup(t *testing.T) {
	if d.cmd != nil {
		select {
		case <-d.done:
		default:
			if ids, err := d.docker("ps", "-aq"); err == nil && ids != "" {
				d.docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
			}
		}
		d.stopDockerd(syscall.SIGTERM)
	}
	stopDaemon(d.containerd, d.containerdDone, syscall.SIGTERM)
	for range 3 {
		pids := processesNaming(d.dir)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
	killCgroups(d.cgroup)
	unmountUnder(d.dir)
	if err := os.RemoveAll(d.dir); err != nil {
		t.Errorf("remove %s: %v", d.dir, err)
	}
	if left := processesNaming(d.dir); len(left) > 0 {
		t.Errorf("processes of the test's dockerd left running: %v", left)
	}
	os.Remove(d.pluginSock)
	// The directory the agent made for it, if nothing else is in it.
	os.Remove(filepath.Dir(d.pluginSock))
	os.Remove(filepath.Dir(filepath.Dir(d.pluginSock)))
}

// processesNaming lists processes with dir on their command line.
func processesNaming(dir string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(dir)) {
			out = append(out, pid)
		}
	}
	return out
}

// killCgroups kills what is left in the containers' cgroups (every
// hierarchy, children first) and removes them.
func killCgroups(parent string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
	if st, err := os.Stat("/sys/fs/cgroup/" + parent); err == nil && st.IsDir() {
		roots = append(roots, "/sys/fs/cgroup/"+parent)
	}
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(root, func(path string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, dir := range dirs {
			os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
			if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			for range 20 {
				if unix.Rmdir(dir) == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		unix.Unmount(p, unix.MNT_DETACH)
	}
}

// dockerProxies lists docker-proxy processes in the namespace ns.
func dockerProxies(t *testing.T, ns *testenv.Netns) []int {
	var want unix.Stat_t
	if err := unix.Stat(ns.Path(), &want); err != nil {
		t.Fatal(err)
	}
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		var st unix.Stat_t
		if strings.TrimSpace(string(comm)) == "docker-proxy" && unix.Stat(filepath.Join("/proc", e.Name(), "ns/net"), &st) == nil && st.Ino == want.Ino {
			out = append(out, pid)
		}
	}
	return out
}

// noDNAT fails when the namespace has a DNAT rule in iptables or nftables.
func noDNAT(t *testing.T, ns *testenv.Netns) {
	t.Helper()
	for _, c := range [][]string{{"iptables-save"}, {"nft", "list", "ruleset"}} {
		if _, err := exec.LookPath(c[0]); err != nil {
			continue
		}
		out := ns.Exec(t, c[0], c[1:]...)
		if strings.Contains(strings.ToLower(out), "dnat") {
			t.Errorf("%s in the host namespace shows a DNAT rule:\n%s", strings.Join(c, " "), out)
		}
	}
}

// dockerPorts is `pontoon port ls -o json` without the counters.
func (w *world) dockerPorts() []control.PortMapping {
	w.t.Helper()
	var ms []control.PortMapping
	w.okJSON(&ms, "port", "ls")
	for i := range ms {
		ms[i].Traffic = nil
	}
	return ms
}

// waitContainerNamed waits until the agent knows the container's name (it
// learns it when dockerd has set up the namespace).
func (w *world) waitContainerNamed(name string) []control.PortMapping {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second) // a hang guard
	for {
		ms := w.dockerPorts()
		named := len(ms) > 0
		for _, m := range ms {
			named = named && m.ContainerName == name
		}
		if named {
			return ms
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("port ls never named container %s: %+v\nagent log:\n%s", name, ms, w.agentLog())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitContainerNamedOf waits until the agent names container name on at
// least one mapping, and returns them all.
func (w *world) waitContainerNamedOf(name string) []control.PortMapping {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second) // a hang guard
	for {
		ms := w.dockerPorts()
		for _, m := range ms {
			if m.ContainerName == name {
				return ms
			}
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("port ls never named container %s: %+v\nagent log:\n%s", name, ms, w.agentLog())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hostPorts lists mappings as "tcp 0.0.0.0:8080->80"; a port from the
// dynamic range, which a restarted container gets afresh as with
// Docker's own driver, as "tcp 0.0.0.0:dynamic->82".
// bindingsExact fails unless the bindings map holds exactly the entries of
// the agent's mappings: none missing, none left over.
func (w *world) bindingsExact(t *testing.T, after string) {
	t.Helper()
	var want []string
	for _, m := range w.dockerPorts() {
		for i := range m.Host.Len() {
			want = append(want, fmt.Sprintf("%s:%d/%s -> %s:%d (id %d)", m.HostIP, int(m.Host.First)+i, m.Proto, m.Backend, int(m.Container.First)+i, m.ID))
		}
	}
	slices.Sort(want)
	if got := w.bindings(); !slices.Equal(got, want) {
		t.Errorf("after %s the bindings map is not the mappings':\nmap      %v\nmappings %v", after, got, want)
	}
}

func hostPorts(ms []control.PortMapping) []string {
	var out []string
	for _, m := range ms {
		host := m.Host.String()
		if m.Host.First >= 49153 {
			host = "dynamic"
		}
		out = append(out, fmt.Sprintf("%s %s:%s->%s", m.Proto, m.HostIP, host, m.Container))
	}
	slices.Sort(out)
	return out
}

// TestDocker runs Debian's dockerd against the agent's plugin: networks,
// `docker run -p` in every form, traffic from outside and from the host
// with the client's address kept, no docker-proxy and no DNAT rule, and
// the maps exact across stop, start, network connect and disconnect, an
// agent restart and a dockerd restart.
func TestDocker(t *testing.T) {
	w := newWorld(t, 0)
	plugin := "pontoon-test-" + w.id
	d := newDockerd(t, w, plugin)
	w.startAgent("--docker-plugin=" + plugin)
	d.startDockerd()
	image := "pontoon-busybox:" + w.id
	d.importBusybox(image)

	// dockerd gives a container's gateway, and so its published ports, to
	// the network whose name sorts first: netB takes them when connected.
	netA, netB := "ptb-"+w.id, "pta-"+w.id
	netAID := d.ok("network", "create", "-d", plugin, "--ipam-driver", plugin, "--subnet", "10.231.0.0/24", netA)
	netBID := d.ok("network", "create", "-d", plugin, "--ipam-driver", plugin, "-o", "mtu=1400", netB)
	pnetA, pnetB := "docker-"+netAID[:12], "docker-"+netBID[:12]
	gwA := netip.MustParseAddr("10.231.0.1")

	t.Run("docker networks are pontoon networks, protected from pontoon network rm", func(t *testing.T) {
		var nets []control.NetworkInfo
		w.okJSON(&nets, "network", "ls")
		byName := map[string]control.NetworkInfo{}
		for _, n := range nets {
			byName[n.Name] = n
		}
		a, b := byName[pnetA], byName[pnetB]
		if a.Owner != "docker" || a.Subnet.String() != "10.231.0.0/24" || a.Gateway != gwA {
			t.Errorf("network %s: %+v", pnetA, a)
		}
		if b.Owner != "docker" || b.MTU != 1400 || !b.Subnet.IsValid() {
			t.Errorf("network %s: %+v", pnetB, b)
		}
		r := w.pt("network", "rm", pnetA)
		if r.code == 0 || !strings.Contains(r.stderr, "docker network rm "+netAID[:12]) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("pontoon network rm of a Docker network: exit %d, %q", r.code, r.stderr)
		}
		// A bad request from Docker changes nothing and says why.
		if _, err := d.docker("network", "create", "-d", plugin, "--ipam-driver", plugin, "--subnet", "10.231.0.0/25", "overlap-"+w.id); err == nil || !strings.Contains(err.Error(), "overlap") {
			t.Errorf("an overlapping subnet: %v", err)
		}
		var after []control.NetworkInfo
		w.okJSON(&after, "network", "ls")
		if len(after) != 2 {
			t.Errorf("networks after a refused create: %+v", after)
		}
		if _, err := d.docker("network", "create", "-d", plugin, "--ipam-driver", plugin, "-o", "colour=blue", "bad-"+w.id); err == nil || !strings.Contains(err.Error(), `unknown option "colour"`) {
			t.Errorf("an unknown -o option: %v", err)
		}
	})

	t.Run("networks created at once without --subnet get subnets of their own", func(t *testing.T) {
		const n = 4
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = d.docker("network", "create", "-d", plugin, "--ipam-driver", plugin, fmt.Sprintf("par%d-%s", i, w.id))
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		w.distinctSubnets(t, 2+n)
		for i := range n {
			d.docker("network", "rm", fmt.Sprintf("par%d-%s", i, w.id))
		}
	})

	t.Run("--internal, --ip-range, --aux-address and -o options", func(t *testing.T) {
		id := d.ok("network", "create", "-d", plugin, "--ipam-driver", plugin, "--internal",
			"--subnet", "10.232.0.0/24", "--ip-range", "10.232.0.128/25", "--aux-address", "router=10.232.0.200",
			"-o", "icc=false", "-o", "com.docker.network.bridge.name=br-"+w.id, "int-"+w.id)
		var n control.NetworkInfo
		w.okJSON(&n, "network", "inspect", "docker-"+id[:12])
		if n.Masquerade || n.ICC || n.Bridge != "br-"+w.id || len(n.Subnets) != 1 ||
			n.Subnets[0].IPRange.String() != "10.232.0.128/25" || n.Subnets[0].AuxAddresses["router"] != netip.MustParseAddr("10.232.0.200") {
			t.Errorf("network %+v", n)
		}
		d.ok("network", "rm", "int-"+w.id)
		if r := w.pt("network", "inspect", "docker-"+id[:12]); r.code == 0 {
			t.Errorf("docker network rm left the pontoon network")
		}
	})

	web := "web-" + w.id
	d.ok("run", "-d", "--name", web, "--network", netA, "--ip", "10.231.0.50",
		"-p", "8080:80", "-p", "127.0.0.1:8081:80", "-p", "5353:53/udp",
		"-p", "7000-7001:7000-7001", "-p", "8100-8110:81", "-p", "82",
		image, "/bin/sleep", "3600")
	ms := w.waitContainerNamed(web)
	published := hostPorts(ms)
	ctr := d.containerNetns(web, "ptc"+w.id)
	ctr.ServeTCP(t, ":80")
	ctr.ServeTCP(t, ":81")
	ctr.ServeTCP(t, ":7001")
	ctr.ServeUDP(t, ":53")
	hostIP := w.hostIP.String()
	traffic := func(t *testing.T) {
		t.Helper()
		res, err := w.outside.Dial("tcp", hostIP+":8080")
		expectEcho(t, res, err, w.outsideIP, hostIP+":8080")
		res, err = w.outside.Dial("udp", hostIP+":5353")
		expectEcho(t, res, err, w.outsideIP, hostIP+":5353/udp")
		res, err = w.outside.Dial("tcp", hostIP+":7001")
		expectEcho(t, res, err, w.outsideIP, hostIP+":7001")
		res, err = w.host.DialFrom(t, w.cgroup, "tcp", "127.0.0.1:8081")
		expectEcho(t, res, err, gwA, "127.0.0.1:8081")
	}

	t.Run("docker run -p is published in BPF, named after the container", func(t *testing.T) {
		want := []string{
			"tcp 0.0.0.0:7000->7000", "tcp 0.0.0.0:7001->7001", "tcp 0.0.0.0:8080->80",
			"tcp 0.0.0.0:8100->81", "tcp 127.0.0.1:8081->80", "udp 0.0.0.0:5353->53",
		}
		if want := append(want, "tcp 0.0.0.0:dynamic->82"); !slices.Equal(published, slices.Sorted(slices.Values(want))) {
			t.Errorf("published %v, want %v", published, want)
		}
		if got := len(w.bindings()); got != 7 {
			t.Errorf("bindings map holds %d entries, want 7", got)
		}
		var eps []control.Endpoint
		w.okJSON(&eps, "endpoint", "ls")
		if len(eps) != 1 || eps[0].IP != netip.MustParseAddr("10.231.0.50") || eps[0].Owner != "docker" || eps[0].ContainerName != web || eps[0].IfName != "eth0" {
			t.Errorf("endpoints: %+v", eps)
		}
		for _, m := range ms {
			if len(m.ContainerID) != 64 {
				t.Errorf("mapping %+v: no container id", m)
			}
		}
		r := w.pt("endpoint", "detach", ms[0].Endpoint)
		if r.code == 0 || !strings.Contains(r.stderr, "belongs to Docker (container "+web+")") {
			t.Errorf("pontoon endpoint detach of a Docker endpoint: exit %d, %q", r.code, r.stderr)
		}
		if table := w.ok("port", "ls"); !regexp.MustCompile(`(?m)^docker-[0-9a-f]{12} \(` + web + `\)\s+80/tcp -> 0\.0\.0\.0:8080\s`).MatchString(table) {
			t.Errorf("port ls does not name the container:\n%s", table)
		}
	})

	t.Run("outside and host clients reach the container with their address kept", traffic)

	t.Run("no docker-proxy and no DNAT rule", func(t *testing.T) {
		if p := dockerProxies(t, w.host); len(p) > 0 {
			t.Errorf("docker-proxy runs in the host namespace: pids %v", p)
		}
		noDNAT(t, w.host)
	})

	t.Run("a port in use fails docker run with the reason and changes nothing", func(t *testing.T) {
		before := w.snapshot()
		_, err := d.docker("run", "-d", "--name", "second-"+w.id, "--network", netA, "-p", "8080:80", image, "/bin/sleep", "3600")
		if err == nil || !strings.Contains(err.Error(), "8080") || !strings.Contains(err.Error(), "in use") {
			t.Errorf("docker run with a taken port: %v", err)
		}
		d.docker("rm", "-f", "second-"+w.id)
		sameSnapshot(t, "a refused docker run", before, w.snapshot())
	})

	t.Run("-p PORT/sctp fails docker run with the reason and changes nothing", func(t *testing.T) {
		before := w.snapshot()
		_, err := d.docker("run", "-d", "--name", "sctp-"+w.id, "--network", netA, "-p", "9000:90", "-p", "9132:132/sctp", image, "/bin/sleep", "3600")
		if err == nil || !strings.Contains(err.Error(), "-p 132/sctp: the pontoon driver publishes tcp and udp ports only") {
			t.Errorf("docker run -p 9132:132/sctp: %v", err)
		}
		d.docker("rm", "-f", "sctp-"+w.id)
		sameSnapshot(t, "a refused sctp port", before, w.snapshot())
	})

	t.Run("network connect and disconnect move the ports with the gateway, exactly", func(t *testing.T) {
		d.ok("network", "connect", netB, web)
		var eps []control.Endpoint
		w.okJSON(&eps, "endpoint", "ls")
		if len(eps) != 2 {
			t.Fatalf("endpoints after network connect: %+v", eps)
		}
		var onB control.Endpoint
		for _, e := range eps {
			if e.Network == pnetB {
				onB = e
			}
		}
		moved := w.dockerPorts()
		for _, m := range moved {
			if m.Endpoint != onB.Name || m.Backend != onB.IP {
				t.Errorf("after network connect, mapping %+v is not on the endpoint of %s (%s %s)", m, netB, onB.Name, onB.IP)
			}
		}
		if got := hostPorts(moved); !slices.Equal(got, published) {
			t.Errorf("host ports after network connect: %v, want %v", got, published)
		}
		w.bindingsExact(t, "network connect")
		if out := ctr.IP(t, "-o", "addr", "show"); !strings.Contains(out, "eth1") {
			t.Errorf("no eth1 in the container after network connect:\n%s", out)
		}
		res, err := w.outside.Dial("tcp", hostIP+":8080")
		expectEcho(t, res, err, w.outsideIP, hostIP+":8080 on "+netB)
		d.ok("network", "disconnect", netB, web)
		w.okJSON(&eps, "endpoint", "ls")
		if len(eps) != 1 || eps[0].Network != pnetA {
			t.Errorf("endpoints after network disconnect: %+v", eps)
		}
		back := w.dockerPorts()
		for _, m := range back {
			if m.Endpoint != eps[0].Name || m.Backend != eps[0].IP {
				t.Errorf("after network disconnect, mapping %+v is not on %s (%s)", m, eps[0].Name, eps[0].IP)
			}
		}
		if got := hostPorts(back); !slices.Equal(got, published) {
			t.Errorf("host ports after network disconnect: %v, want %v", got, published)
		}
		w.bindingsExact(t, "network disconnect")
		traffic(t)
	})

	// republished checks the container web, started again, has the same
	// ports and the bindings map exactly them, then serves and dials
	// them; its servers outlive the subtest: the ones after it dial them.
	republished := func(t *testing.T, after string) {
		t.Helper()
		if got := hostPorts(w.waitContainerNamed(web)); !slices.Equal(got, published) {
			t.Errorf("after %s: %v, want %v", after, got, published)
		}
		w.bindingsExact(t, after)
		ctr = d.containerNetns(web, "ptc"+w.id)
		ctr.ServeTCP(w.t, ":80")
		ctr.ServeTCP(w.t, ":7001")
		ctr.ServeUDP(w.t, ":53")
		traffic(t)
	}

	t.Run("stop unpublishes everything, start publishes the same ports", func(t *testing.T) {
		d.ok("stop", "-t", "0", web)
		if got := w.bindings(); len(got) != 0 {
			t.Errorf("bindings after docker stop: %v", got)
		}
		var eps []control.Endpoint
		w.okJSON(&eps, "endpoint", "ls")
		if ms := w.dockerPorts(); len(ms) != 0 || len(eps) != 0 {
			t.Errorf("after docker stop: mappings %+v, endpoints %+v", ms, eps)
		}
		d.ok("start", web)
		republished(t, "docker start")
	})

	t.Run("an agent killed and restarted keeps the ports and the plugin", func(t *testing.T) {
		before := w.bindings()
		w.agent.stop(syscall.SIGKILL)
		res, err := w.outside.Dial("tcp", hostIP+":8080")
		expectEcho(t, res, err, w.outsideIP, hostIP+":8080 with no agent")
		w.startAgent("--docker-plugin=" + plugin)
		if got := w.bindings(); !slices.Equal(got, before) {
			t.Errorf("bindings changed over the agent's restart:\nbefore %v\nafter  %v", before, got)
		}
		traffic(t)
	})

	// With --live-restore the container runs on while dockerd is away,
	// stopped or killed; the test's own containerd outlives dockerd, as
	// the system's does under systemd.
	for _, c := range []struct {
		name string
		sig  syscall.Signal
	}{
		{"a dockerd restart with --live-restore keeps the ports", syscall.SIGTERM},
		{"a dockerd killed with SIGKILL and started again keeps the ports", syscall.SIGKILL},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := w.bindings()
			d.stopDockerd(c.sig)
			res, err := w.outside.Dial("tcp", hostIP+":8080")
			expectEcho(t, res, err, w.outsideIP, hostIP+":8080 with no dockerd")
			d.startDockerd()
			traffic(t)
			if got := w.bindings(); !slices.Equal(got, before) {
				t.Errorf("bindings changed over dockerd's %v and start:\nbefore %v\nafter  %v", c.sig, before, got)
			}
			if running := d.ok("inspect", "-f", "{{.State.Running}}", web); running != "true" {
				t.Errorf("container %s after dockerd's %v and start: running %s", web, c.sig, running)
			}
		})
	}

	// The order systemd gives them (Before=docker.service). dockerd first
	// works too, after it has waited for the plugin (35 s here).
	t.Run("agent and dockerd both down, back in systemd's order", func(t *testing.T) {
		before := w.bindings()
		w.agent.stop(syscall.SIGKILL)
		d.stopDockerd(syscall.SIGTERM)
		w.startAgent("--docker-plugin=" + plugin)
		d.startDockerd()
		traffic(t)
		if got := w.bindings(); !slices.Equal(got, before) {
			t.Errorf("bindings changed over both restarts:\nbefore %v\nafter  %v", before, got)
		}
	})

	t.Run("docker restart unpublishes and publishes the same ports", func(t *testing.T) {
		d.ok("restart", "-t", "0", web)
		republished(t, "docker restart")
		var eps []control.Endpoint
		w.okJSON(&eps, "endpoint", "ls")
		if len(eps) != 1 {
			t.Errorf("endpoints after docker restart: %+v", eps)
		}
	})

	t.Run("-P publishes every exposed port on an allocated one, and rm takes them", func(t *testing.T) {
		before := w.bindings()
		all := "all-" + w.id
		d.ok("run", "-d", "--name", all, "--network", netA, "--expose", "90", "--expose", "91/udp", "-P", image, "/bin/sleep", "3600")
		var mine []control.PortMapping
		for _, m := range w.waitContainerNamedOf(all) {
			if m.ContainerName == all {
				mine = append(mine, m)
			}
		}
		if got := hostPorts(mine); !slices.Equal(got, []string{"tcp 0.0.0.0:dynamic->90", "udp 0.0.0.0:dynamic->91"}) {
			t.Errorf("-P published %v", got)
		}
		w.bindingsExact(t, "docker run -P")
		c := d.containerNetns(all, "ptP"+w.id)
		c.ServeTCP(t, ":90")
		for _, m := range mine {
			if m.Proto == "tcp" {
				addr := fmt.Sprintf("%s:%d", hostIP, m.Host.First)
				res, err := w.outside.Dial("tcp", addr)
				expectEcho(t, res, err, w.outsideIP, addr+" (-P)")
			}
		}
		d.ok("rm", "-f", all)
		if got := w.bindings(); !slices.Equal(got, before) {
			t.Errorf("bindings after docker rm of the -P container:\nbefore %v\nafter  %v", before, got)
		}
	})

	t.Run("a rebuilt state file keeps Docker's records: owner, container, ports", func(t *testing.T) {
		before := w.snapshot()
		w.agent.stop(syscall.SIGTERM)
		r := w.inHost("state", "rebuild", "--force", "--state-dir", w.stateDir, "--bpffs", w.pins)
		if r.code != 0 {
			t.Fatalf("state rebuild: exit %d: %s%s", r.code, r.stdout, r.stderr)
		}
		t.Logf("state rebuild:\n%s", r.stdout)
		w.startAgent("--docker-plugin=" + plugin)
		sameSnapshot(t, "a rebuild", before, w.snapshot())
		r = w.pt("network", "rm", pnetA)
		if r.code == 0 || !strings.Contains(r.stderr, "docker network rm") {
			t.Errorf("pontoon network rm of a rebuilt Docker network: exit %d, %q", r.code, r.stderr)
		}
		traffic(t)
	})

	t.Run("rm and network rm leave nothing", func(t *testing.T) {
		d.ok("rm", "-f", web)
		var eps []control.Endpoint
		w.okJSON(&eps, "endpoint", "ls")
		if got := w.bindings(); len(got) != 0 || len(eps) != 0 {
			t.Errorf("after docker rm: bindings %v, endpoints %+v", got, eps)
		}
		d.ok("network", "rm", netA, netB)
		var nets []control.NetworkInfo
		w.okJSON(&nets, "network", "ls")
		if len(nets) != 0 {
			t.Errorf("networks after docker network rm: %+v", nets)
		}
		if out := w.host.IP(t, "-o", "link", "show"); strings.Contains(out, "ptv") || strings.Contains(out, "ptp") {
			t.Errorf("interfaces left in the host namespace:\n%s", out)
		}
	})
}
