package vmtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The agent under systemd (issue 5), all in one 6.12 guest booting systemd
// as PID 1 with cmd/pontoon/pontoon.service and a drop-in naming the uplink
// naming the uplink:
//
//	outside netns (198.51.100.2) --veth-- pup0 (198.51.100.1) --pt-vmnet-- ctr netns
//
// The script prints "MARK key: value" lines; the test asserts on them.

// agentDropIn gives the unit's agent the guest's only uplink (the guest has
// no NIC, so there is no default route to find one by). The socket hooks
// stay on the cgroup root, as shipped: the "outside" netns is under them
// too, and its connects must not be rewritten ("hooked outside connect").
const agentDropIn = `[Service]
ExecStart=
ExecStart=/usr/local/bin/pontoon agent --uplink pup0
`

// echoServer echoes every connection back, one thread each.
const echoServer = `import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
def echo(c):
    while True:
        d = c.recv(4096)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
`

// echoClient holds one connection: a round trip, then it waits for the file
// argv[3] to appear (the script creates it after the restart) and makes a
// second round trip on the same connection.
const echoClient = `import os, socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
def roundtrip(msg):
    c.sendall(msg)
    got = b""
    while len(got) < len(msg):
        d = c.recv(4096)
        if not d:
            sys.exit("client: connection closed by peer")
        got += d
    return got.decode().strip()
print("client: local %s:%d" % c.getsockname(), flush=True)
print("client: before restart echo=" + roundtrip(b"before-restart\n"), flush=True)
for _ in range(3000):
    if os.path.exists(sys.argv[3]):
        break
    time.sleep(0.1)
else:
    sys.exit("client: never told the restart was done")
print("client: after restart echo=" + roundtrip(b"after-restart\n"), flush=True)
`

const agentSystemdScript = `
P=/usr/local/bin/pontoon
H=/usr/local/lib/pontoon-check
W=/run/pontoon-check
PINS=/sys/fs/bpf/pontoon
BR=pt-vmnet
mkdir -p "$W/www"
mark() { echo "MARK $*"; }
present() { if "$@" >/dev/null 2>&1; then echo present; else echo absent; fi; }
elements() { bpftool map dump pinned "$PINS/bindings" 2>/dev/null | grep -c '"key"' || true; }
diag() { echo "--- diag $1"; ip -br addr; ip route; ip -n out -br addr; ip -n out route; }
unitstate() { systemctl show -p ActiveState,SubState,MainPID pontoon | tr '\n' ' '; }
trap 'rc=$?; echo "--- pontoon journal"; journalctl -u pontoon --no-pager -o short-monotonic | tail -n 80; exit $rc' EXIT

echo "--- world: outside netns and uplink pup0, container netns"
ip netns add out
ip netns add ctr
ip -n out link set lo up
ip -n ctr link set lo up
ip link add pup0 type veth peer name eth0 netns out
ip addr add 198.51.100.1/24 dev pup0
ip link set pup0 up
ip -n out addr add 198.51.100.2/24 dev eth0
ip -n out link set eth0 up
diag world

mkdir -p /sys/fs/cgroup/pontoon-hooks
# in_hooks runs a command in the cgroup with the socket hooks.
in_hooks() { sh -c 'echo $$ >/sys/fs/cgroup/pontoon-hooks/cgroup.procs && exec "$@"' in_hooks "$@"; }

echo "--- first agent run: create the state"
systemctl start pontoon
mark "first start: $(unitstate)"
diag first-start
$P network create vmnet --subnet 10.123.0.0/24
$P endpoint attach vmnet web --netns /run/netns/ctr
$P port publish web 8080:80 9000:9000
VETH=$(ip -o link show master "$BR" | sed -n 's/^[0-9]*: \([^@:]*\).*/\1/p' | head -n 1)
mark "veth: $VETH"
mark "elements before: $(elements)"
systemctl stop pontoon
mark "stopped: $(unitstate)"

echo "--- remove what the agent made: veth and bridge by hand, pins with 'pontoon cleanup' (state kept)"
ip link del "$VETH"
ip link del "$BR"
$P cleanup
mark "removed: bridge=$(present ip link show "$BR") veth=$(present ip link show "$VETH") ctr-eth0=$(present ip -n ctr link show eth0) bindings-pin=$(present test -e "$PINS/bindings")"

diag removed
echo "--- check 1: READY=1 only after reconciliation"
systemctl start pontoon
# Nothing in between: what systemctl start returned on is what READY=1 meant.
mark "after start: bridge=$(present ip link show "$BR") veth=$(present ip link show "$VETH") ctr-eth0=$(present ip -n ctr link show eth0) bindings-pin=$(present test -e "$PINS/bindings") elements=$(elements)"
mark "ready state: $(unitstate)"
ip -n ctr -br addr show eth0
ip -o link show master "$BR"

diag after-start
echo "--- check 2: a published port from the outside netns"
echo "hello from the ctr netns" >"$W/www/index.html"
ip netns exec ctr busybox httpd -p 80 -h "$W/www"
ip netns exec ctr python3 "$H/echo_server.py" 9000 >"$W/server.log" 2>&1 &
SRV=$!
n=0
until ip netns exec ctr busybox wget -q -O /dev/null http://127.0.0.1/ 2>/dev/null &&
	ip netns exec ctr python3 -c 'import socket; socket.create_connection(("127.0.0.1", 9000), timeout=5).close()' 2>/dev/null; do
	n=$((n + 1))
	[ "$n" -lt 300 ] || { mark "servers: not listening"; exit 1; }
	sleep 0.1
done
if body=$(ip netns exec out curl -fsS --max-time 20 http://198.51.100.1:8080/ 2>&1); then
	mark "http: $body"
else
	mark "http failed: $body"
fi

if body=$(in_hooks curl -fsS --max-time 20 http://127.0.0.1:8080/ 2>&1); then
	mark "http local: $body"
else
	mark "http local failed: $body"
fi
# A process under the hooks in a netns Pontoon does not manage, dialling
# the uplink address: not rewritten, it takes the uplink path.
# (ip netns exec mounts its own /sys: join the cgroup first.)
mark "hooked outside connect: $(in_hooks ip netns exec out python3 -c '
import socket
try:
    socket.create_connection(("198.51.100.1", 8080), timeout=10).close()
    print("ok")
except OSError as e:
    print(e)
' 2>&1)"

echo "--- check 3: systemctl restart keeps an established connection"
ip netns exec out python3 "$H/echo_client.py" 198.51.100.1 9000 "$W/go" >"$W/client.log" 2>&1 &
CL=$!
n=0
until grep -q "before restart" "$W/client.log"; do
	n=$((n + 1))
	if [ "$n" -ge 300 ] || ! kill -0 "$CL" 2>/dev/null; then cat "$W/client.log"; mark "client: no first echo"; exit 1; fi
	sleep 0.1
done
mark "pid before restart: $(systemctl show -p MainPID --value pontoon)"
systemctl restart pontoon
mark "pid after restart: $(systemctl show -p MainPID --value pontoon)"
mark "restart state: $(unitstate)"
touch "$W/go"
if wait "$CL"; then mark "client: exit 0"; else mark "client: exit $?"; fi
cat "$W/client.log"

echo "--- check 4: bpftool shows the bindings with BTF names"
echo "--- bindings dump"
bpftool map dump pinned "$PINS/bindings"
echo "--- end bindings dump"

kill "$SRV" 2>/dev/null || true
busybox pkill -x httpd 2>/dev/null || true
systemctl stop pontoon
mark "done"
`

// requireTool skips without a host tool the guest borrows, except under CI.
func requireTool(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	why := fmt.Sprintf("needs %s in the host root (package %s)", path, pkg)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI runs `make deps`, which should have provided it", why)
	}
	t.Skip(why)
}

// buildPontoon compiles cmd/pontoon into a test temp folder.
func buildPontoon(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := moduleRoot(wd)
	if root == "" {
		t.Fatalf("no go.mod at or above %s", wd)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "pontoon")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/pontoon")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/pontoon: %v\n%s", err, out)
	}
	return bin
}

// marks collects "MARK key: value" lines; a key seen twice keeps the last.
func marks(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), "MARK ")
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(rest, ": ")
		m[k] = strings.TrimSpace(v)
	}
	return m
}

// TestVMAgentSystemd runs the agent from its unit file under systemd in a
// 6.12 guest: READY=1 comes after the datapath and interfaces have been
// rebuilt from the state file, a published port answers from outside,
// `systemctl restart` keeps an established connection, and bpftool shows
// the bindings with their BTF field names.
func TestVMAgentSystemd(t *testing.T) {
	const kernel = "6.12"
	requireVM(t, kernel)
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		t.Skip("the host has no systemd to boot")
	}
	requireTool(t, "/usr/sbin/bpftool", "bpftool")
	requireTool(t, "/usr/bin/python3", "python3")
	requireTool(t, "/usr/bin/curl", "curl")
	bin := buildPontoon(t)

	out, res, err := Script(context.Background(), Options{
		Kernel:  kernel,
		Systemd: true,
		Files: []File{
			UnitFile("../cmd/pontoon/pontoon.service"),
			{Src: bin, Dst: "/usr/local/bin/pontoon", Mode: 0o755},
			{Data: []byte(agentDropIn), Dst: "/etc/systemd/system/pontoon.service.d/uplink.conf"},
			{Data: []byte(echoServer), Dst: "/usr/local/lib/pontoon-check/echo_server.py"},
			{Data: []byte(echoClient), Dst: "/usr/local/lib/pontoon-check/echo_client.py"},
		},
		Log:     testLog{t},
		Timeout: 15 * time.Minute,
	}, agentSystemdScript)
	if err != nil {
		t.Fatalf("boot systemd: %v\noutput:\n%s", err, out)
	}
	t.Logf("kernel %s with systemd (%s): boot %.1fs, script %.1fs, system %s",
		res.Kernel.Release, res.Accel, res.Boot.Seconds(), res.Run.Seconds(), res.SystemState)
	t.Logf("guest output:\n%s", out)
	if res.ExitCode != 0 {
		t.Fatalf("script exited %d (output above)", res.ExitCode)
	}
	m := marks(out)
	if !strings.Contains(out, "MARK done") {
		t.Fatal("the script did not get to its end")
	}

	// 1. The state was really gone, and systemctl start (which returns on
	// READY=1 for Type=notify) returned with all of it rebuilt.
	if want := "bridge=absent veth=absent ctr-eth0=absent bindings-pin=absent"; m["removed"] != want {
		t.Errorf("after the manual removal: %q, want %q", m["removed"], want)
	}
	before := m["elements before"]
	if before == "" || before == "0" {
		t.Errorf("bindings map before the stop held %q elements, want some", before)
	}
	if want := "bridge=present veth=present ctr-eth0=present bindings-pin=present elements=" + before; m["after start"] != want {
		t.Errorf("right after systemctl start returned: %q, want %q", m["after start"], want)
	}
	for _, k := range []string{"first start", "ready state", "restart state"} {
		if !strings.Contains(m[k], "ActiveState=active SubState=running") {
			t.Errorf("%s: %q, want ActiveState=active SubState=running", k, m[k])
		}
	}
	if !strings.Contains(m["stopped"], "ActiveState=inactive") {
		t.Errorf("after systemctl stop: %q, want ActiveState=inactive", m["stopped"])
	}

	// The journal agrees: the second run logged its reconciliation (the
	// bindings it put back) between systemd's Starting and Started.
	journal := strings.Split(between(out, "--- pontoon journal\n", "\x00"), "\n")
	if err := readyAfter(journal, "bindings_added=2"); err != nil {
		t.Errorf("%v; journal:\n%s", err, strings.Join(journal, "\n"))
	}

	// 2. The published port from the outside namespace.
	if m["http"] != "hello from the ctr netns" {
		t.Errorf("fetch 198.51.100.1:8080 from outside: %q (http failed: %q)", m["http"], m["http failed"])
	}

	if m["http local"] != "hello from the ctr netns" {
		t.Errorf("fetch 127.0.0.1:8080 from the host's hooked cgroup: %q (http local failed: %q)", m["http local"], m["http local failed"])
	}
	if h := m["hooked outside connect"]; h != "ok" {
		t.Errorf("an unmanaged netns under the socket hooks dialling 198.51.100.1:8080 got %q, want ok", h)
	}

	// 3. A new agent process, and the connection opened before it still echoes.
	pb, pa := m["pid before restart"], m["pid after restart"]
	if pb == "" || pb == "0" || pa == "" || pa == "0" || pb == pa {
		t.Errorf("MainPID before/after restart: %q/%q, want two different agents", pb, pa)
	}
	if m["client"] != "exit 0" {
		t.Errorf("long-lived client: %q", m["client"])
	}
	for _, w := range []string{"client: before restart echo=before-restart", "client: after restart echo=after-restart"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}

	// 4. bpftool prints the value struct's field names (BTF).
	dump := between(out, "--- bindings dump\n", "--- end bindings dump")
	for _, w := range []string{`"backend_port"`, `"backend_addr"`} {
		if !strings.Contains(dump, w) {
			t.Errorf("bpftool map dump lacks %s:\n%s", w, dump)
		}
	}
	if n := strings.Count(dump, `"key"`); strconv.Itoa(n) != before {
		t.Errorf("bpftool map dump shows %d entries, want %s as before the stop:\n%s", n, before, dump)
	}
}

// between returns the text of s after the first from and before the next to.
func between(s, from, to string) string {
	_, s, _ = strings.Cut(s, from)
	s, _, _ = strings.Cut(s, to)
	return s
}

// readyAfter checks that the first agent line with "msg=reconciled" and
// what comes after systemd's "Starting pontoon.service" for that run and
// before its "Started pontoon.service".
func readyAfter(journal []string, what string) error {
	r := slices.IndexFunc(journal, func(l string) bool {
		return strings.Contains(l, "msg=reconciled") && strings.Contains(l, what)
	})
	if r < 0 {
		return fmt.Errorf("no reconciliation with %s in the journal", what)
	}
	for i := r - 1; i >= 0 && !strings.Contains(journal[i], "Starting pontoon.service"); i-- {
		if strings.Contains(journal[i], "Started pontoon.service") {
			return fmt.Errorf("systemd logged Started before the reconciliation with %s", what)
		}
	}
	if !slices.ContainsFunc(journal[r+1:], func(l string) bool { return strings.Contains(l, "Started pontoon.service") }) {
		return fmt.Errorf("systemd never logged Started after the reconciliation with %s", what)
	}
	return nil
}

func TestReadyAfter(t *testing.T) {
	const (
		starting   = "systemd[1]: Starting pontoon.service - Pontoon"
		started    = "systemd[1]: Started pontoon.service - Pontoon"
		reconciled = "pontoon[9]: level=INFO msg=reconciled networks=1 bindings_added=2"
	)
	for _, tc := range []struct {
		name    string
		journal []string
		ok      bool
	}{
		{"notify after reconcile", []string{starting, reconciled, started}, true},
		{"started first", []string{starting, started, reconciled, starting, started}, false},
		{"never started", []string{starting, reconciled}, false},
		{"no reconciliation", []string{starting, started}, false},
	} {
		err := readyAfter(tc.journal, "bindings_added=2")
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
