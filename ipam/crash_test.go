package ipam

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

const (
	crashChildEnv = "PONTOON_IPAM_CRASH_CHILD"
	crashRoundEnv = "PONTOON_IPAM_CRASH_ROUND"
	crashNetwork  = "crash"
)

var crashPorts = PortRange{20000, 29999}

// crashChild allocates and releases against the store at path until it is
// killed, printing each operation after it commits.
func crashChild(path string) int {
	round := os.Getenv(crashRoundEnv)
	s, err := OpenBolt(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	a, err := Open(s, Options{DynamicPorts: crashPorts})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// The limit only stops a child whose parent vanished without killing it.
	for i := 0; i < 100000; i++ {
		owner := fmt.Sprintf("r%s-%d", round, i)
		ips, err := a.AllocateIPs(IPRequest{Network: crashNetwork, Owner: owner})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Printf("ip %s %s\n", owner, ips[0])
		pa, err := a.AllocatePorts(PortRequest{Owner: owner, Proto: TCP, HostIP: netip.IPv4Unspecified()})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Printf("port %s %d\n", owner, pa.Ports.First)
		if i%5 == 4 {
			old := fmt.Sprintf("r%s-%d", round, i-3)
			if _, err := a.ReleaseIPs(crashNetwork, old); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			fmt.Printf("relip %s\n", old)
			if _, err := a.ReleaseOwnerPorts(old); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			fmt.Printf("relport %s\n", old)
		}
	}
	return 0
}

// TestKillDuringBurst kills a child allocating in a loop with SIGKILL, then
// checks that every allocation it reported is in the file, every release it
// reported is gone, and new allocations collide with none of them.
func TestKillDuringBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary; skipped in -short")
	}
	path := filepath.Join(t.TempDir(), "ipam.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Open(s, Options{DynamicPorts: crashPorts})
	if err != nil {
		t.Fatal(err)
	}
	addNet(t, a, crashNetwork, "10.77.0.0/16")
	s.Close()

	ips := map[string]string{}   // owner -> address, as the children reported
	ports := map[string]string{} // owner -> port
	for round, killAfter := range []int{150, 40, 300, 7, 501} {
		lines := runAndKill(t, path, round, killAfter)
		for _, l := range lines {
			f := strings.Fields(l)
			switch {
			case len(f) == 3 && f[0] == "ip":
				ips[f[1]] = f[2]
			case len(f) == 3 && f[0] == "port":
				ports[f[1]] = f[2]
			case len(f) == 2 && f[0] == "relip":
				delete(ips, f[1])
			case len(f) == 2 && f[0] == "relport":
				delete(ports, f[1])
			default:
				t.Fatalf("child printed %q", l)
			}
		}
		checkCrashState(t, path, round, ips, ports)
	}
}

// runAndKill starts a child, kills it after it has reported killAfter
// operations and returns everything it reported.
func runAndKill(t *testing.T, path string, round, killAfter int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path, crashRoundEnv+"="+strconv.Itoa(round))
	// Never outlive the test, even if it dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) == killAfter {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	killed = true
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v after %d lines, want death by SIGKILL mid-burst; stderr: %s", err, len(lines), stderr.String())
	}
	if len(lines) < killAfter {
		t.Fatalf("child reported %d operations, want at least %d", len(lines), killAfter)
	}
	t.Logf("round %d: killed after %d reported operations (asked at %d)", round, len(lines), killAfter)
	return lines
}

func checkCrashState(t *testing.T, path string, round int, ips, ports map[string]string) {
	t.Helper()
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := Open(s, Options{DynamicPorts: crashPorts})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	held, err := a.IPs(crashNetwork)
	if err != nil {
		t.Fatal(err)
	}
	gotIPs := map[string]string{}
	for _, h := range held {
		gotIPs[h.Owner] = h.Addr.String()
	}
	gotPorts := map[string]string{}
	for _, p := range a.Ports("") {
		gotPorts[p.Owner] = strconv.Itoa(int(p.Ports.First))
	}
	// The child runs one operation at a time, so at most one can have
	// committed without being reported.
	if n := compareCrash(t, "address", ips, gotIPs) + compareCrash(t, "port", ports, gotPorts); n > 1 {
		t.Errorf("round %d: file differs from the report in %d operations; at most the one in flight may", round, n)
	}

	// Fresh allocations must not reuse anything the file holds.
	taken := map[string]bool{}
	for _, v := range gotIPs {
		taken["ip "+v] = true
	}
	for _, v := range gotPorts {
		taken["port "+v] = true
	}
	for i := 0; i < 50; i++ {
		owner := fmt.Sprintf("check%d-%d", round, i)
		addrs := alloc(t, a, crashNetwork, owner)
		pa := allocPorts(t, a, PortRequest{Owner: owner, Proto: TCP, HostIP: netip.IPv4Unspecified()})
		for _, k := range []string{"ip " + addrs[0].String(), "port " + strconv.Itoa(int(pa.Ports.First))} {
			if taken[k] {
				t.Fatalf("after the kill, %s was handed out twice", k)
			}
			taken[k] = true
		}
	}
	// Leave the file as the children left it, plus nothing the checks did.
	for i := 0; i < 50; i++ {
		owner := fmt.Sprintf("check%d-%d", round, i)
		if _, err := a.ReleaseIPs(crashNetwork, owner); err != nil {
			t.Fatal(err)
		}
		if _, err := a.ReleaseOwnerPorts(owner); err != nil {
			t.Fatal(err)
		}
	}
}

// compareCrash checks that the file holds what the child reported and
// returns how many differences remain: only the operation in flight when the
// child died (committed but not yet printed) may cause one. The reported map
// then takes the file's view, so that operation is not counted again in later
// rounds.
func compareCrash(t *testing.T, what string, reported, got map[string]string) int {
	t.Helper()
	unreported := 0
	for owner, v := range reported {
		if g, ok := got[owner]; !ok {
			unreported++
			t.Logf("%s %s of %s released but not reported before the kill", what, v, owner)
			delete(reported, owner)
		} else if g != v {
			t.Errorf("%s of %s: reported %s committed, file holds %s", what, owner, v, g)
		}
	}
	for owner, v := range got {
		if _, ok := reported[owner]; !ok {
			unreported++
			t.Logf("%s %s of %s committed but not reported before the kill", what, v, owner)
			reported[owner] = v
		}
	}
	return unreported
}
