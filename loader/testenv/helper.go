package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Some checks need another process: a client inside a cgroup (socket hooks
// follow the cgroup a socket was made in), or a loader that exits while
// its datapath lives on. The test binary re-executes itself for these.
const (
	helperEnv     = "PONTOON_TESTENV_HELPER"
	helperArgsEnv = "PONTOON_TESTENV_ARGS"
	// Loading the whole datapath takes 6-8 s on 6.1 under TCG emulation
	// on a quiet machine, several times that on a busy one, and 5.10's
	// verifier under TCG at load 20 took over 2 minutes: the bound is for a
	// hung helper, not a slow one.
	helperTimeout = 6 * time.Minute
)

var helpers = map[string]func(args []string) (any, error){
	"dial": dialHelper,
	"bulk": bulkHelper,
}

// RegisterHelper makes fn runnable with Netns.Helper. Its result is
// printed as JSON and decoded by the caller.
func RegisterHelper(name string, fn func(args []string) (any, error)) {
	helpers[name] = fn
}

// MaybeRunHelper runs the requested helper instead of the tests when this
// binary was started as one. Call it first in TestMain.
func MaybeRunHelper() {
	name := os.Getenv(helperEnv)
	if name == "" {
		return
	}
	fn, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown test helper %q\n", name)
		os.Exit(2)
	}
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(helperArgsEnv)), &args); err != nil {
		fmt.Fprintf(os.Stderr, "helper arguments: %v\n", err)
		os.Exit(2)
	}
	out, err := fn(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Helper runs a registered helper inside the namespace and, when cgroup is
// set, inside that cgroup from its first instruction on (CLONE_INTO_CGROUP).
// The helper's JSON result is decoded into out.
func (n *Netns) Helper(t testing.TB, cgroup string, out any, name string, args ...string) error {
	t.Helper()
	return n.helperWithin(t, helperTimeout, cgroup, out, name, args...)
}

// helperWithin is Helper for helpers that need longer than the usual 30
// seconds, such as a bulk transfer with its own deadline.
func (n *Netns) helperWithin(t testing.TB, timeout time.Duration, cgroup string, out any, name string, args ...string) error {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	encoded, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+n.Path(), "--", self)
	cmd.Env = append(os.Environ(), helperEnv+"="+name, helperArgsEnv+"="+string(encoded))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cgroup != "" {
		dir, err := os.Open(cgroup)
		if err != nil {
			t.Fatalf("open cgroup: %v", err)
		}
		defer dir.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("helper %s %v in %s: %v: %s", name, args, n.Name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("helper %s output %q: %w", name, stdout.String(), err)
	}
	return nil
}
