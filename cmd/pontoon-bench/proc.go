package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// childNice is the nice value every process in the worlds runs at. A
// busy machine (other jobs, a VM's neighbours) otherwise decides the
// numbers more than the datapaths do; all datapaths get the same value.
var childNice = 0

// nsenterArgv is the command line that runs name inside a namespace, at
// childNice. nice and nsenter both exec in place, so the pid is name's.
func nsenterArgv(n netns, name string, args ...string) []string {
	argv := []string{"nsenter", "--net=" + n.path(), "--", name}
	if childNice != 0 {
		argv = append([]string{"nice", "-n", strconv.Itoa(childNice)}, argv...)
	}
	return append(argv, args...)
}

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
	argv := nsenterArgv(n, exe, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
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

// startDaemon starts a child inside a namespace; extra become fds 3, 4...
// stderr nil discards what it logs.
func startDaemon(n netns, extra []*os.File, stderr io.Writer, name string, args ...string) (*daemon, error) {
	argv := nsenterArgv(n, name, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = childAttr()
	cmd.Stderr = stderr
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
