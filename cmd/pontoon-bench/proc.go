package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// childAttr makes every child die with the bench, even when the bench is
// killed outright and no cleanup runs. nsenter execs its target in place,
// and the death signal survives exec.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// inCgroup starts the child inside the cgroup from its first instruction
// on (CLONE_INTO_CGROUP): the socket hooks look at the cgroup a socket is
// created in.
func inCgroup(attr *syscall.SysProcAttr, cg *cgroup) *syscall.SysProcAttr {
	if cg != nil {
		attr.UseCgroupFD = true
		attr.CgroupFD = int(cg.dir.Fd())
	}
	return attr
}

// self is this binary; the load tool and helpers are its subcommands.
func self() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable: %w", err)
	}
	return exe, nil
}

// helper runs one of this binary's subcommands inside a namespace (and a
// cgroup when cg is set) and decodes its JSON answer into out.
func helper(ctx context.Context, n netns, cg *cgroup, timeout time.Duration, out any, args ...string) error {
	exe, err := self()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.path(), "--", exe}, args...)...)
	cmd.SysProcAttr = inCgroup(childAttr(), cg)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", timeout)
		}
		return fmt.Errorf("%s in %s: %w: %s", strings.Join(args, " "), n, err, strings.TrimSpace(stderr.String()))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("%s in %s: read answer %q: %w", args[0], n, stdout.String(), err)
	}
	return nil
}

// daemon is a long-lived child: a server or a docker-proxy.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startDaemon starts a child inside a namespace. Its stderr goes to ours
// so a crash explains itself. extra become fds 3, 4, ...
func startDaemon(n netns, extra []*os.File, name string, args ...string) (*daemon, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.path(), "--", name}, args...)...)
	cmd.SysProcAttr = childAttr()
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = extra
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, n, err)
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// exited reports whether the child is gone already.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends sig, escalates to SIGKILL after a grace period and waits: no
// child outlives the bench.
func (d *daemon) stop(sig syscall.Signal) error {
	if d.exited() {
		return nil
	}
	if err := d.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal pid %d: %w", d.pid(), err)
	}
	select {
	case <-d.done:
		return nil
	case <-time.After(5 * time.Second):
	}
	if err := d.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill pid %d: %w", d.pid(), err)
	}
	<-d.done
	return nil
}
