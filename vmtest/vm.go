package vmtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// powerOffGrace is how long a guest may take to power off after the command
// has reported its status; past it qemu is killed, which loses nothing.
const powerOffGrace = 30 * time.Second

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(string(l.b))
}

// boot runs qemu until the guest powers off, time runs out or ctx ends,
// streaming the command's output, and fills res.
func boot(ctx context.Context, o Options, qemu string, args []string, nonce string, k *Kernel, res *Result) error {
	conR, conW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("make console pipe: %w", err)
	}
	defer conR.Close()
	jobR, jobW, err := os.Pipe()
	if err != nil {
		conW.Close()
		return fmt.Errorf("make job pipe: %w", err)
	}
	defer jobR.Close()

	qerr := &limitedBuffer{max: 16 << 10}
	cmd := exec.Command(qemu, args...)
	cmd.Stdin = nil
	cmd.Stdout = qerr
	cmd.Stderr = qerr
	cmd.ExtraFiles = []*os.File{conW, jobW} // fds 3 and 4: see consoleFD, jobFD
	// qemu must not outlive us: Pdeathsig kills it when the thread that
	// started it exits, so that thread stays locked until qemu is reaped.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}

	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	err = <-started
	conW.Close()
	jobW.Close()
	if err != nil {
		return fmt.Errorf("start %s: %w", qemu, err)
	}
	t0 := time.Now()

	console := &lineRing{max: consoleTailLines}
	var consoleMu sync.Mutex
	events := make(chan event, 8)
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		readLines(conR, func(l string) {
			consoleMu.Lock()
			console.add(l)
			consoleMu.Unlock()
			if o.Console != nil {
				io.WriteString(o.Console, l)
			}
		})
	}()
	var failed []string
	go func() {
		defer readers.Done()
		p := newJobParser(nonce)
		running := false
		readLines(jobR, func(l string) {
			out, ev := p.line(l)
			if running && out != "" {
				io.WriteString(o.Stdout, out)
				if name, ok := failedTest(out); ok {
					failed = append(failed, name)
				}
			} else if out != "" {
				// Before the start marker only the guest scripts write here.
				consoleMu.Lock()
				console.add(out)
				consoleMu.Unlock()
			}
			if ev != nil {
				if ev.kind == evStart {
					running = true
				} else if ev.kind == evExit {
					running = false
				}
				events <- *ev
			}
		})
		close(events)
	}()

	kill := func() { _ = cmd.Process.Kill() }
	bootTimer := time.NewTimer(o.BootTimeout)
	defer bootTimer.Stop()
	deadline := time.NewTimer(o.Timeout)
	defer deadline.Stop()
	var grace <-chan time.Time

	var (
		isStarted, isExited bool
		guestErr, reason    string
		timedOut            bool
		waitErr             error
	)
	handle := func(ev event) {
		switch ev.kind {
		case evStart:
			isStarted = true
			res.Boot = time.Since(t0)
			res.SystemState = ev.text
			bootTimer.Stop()
			fmt.Fprintf(o.Log, "vmtest: %s booted in %.1fs\n", k.Release, res.Boot.Seconds())
		case evExit:
			isExited = true
			res.ExitCode = ev.code
			res.Run = time.Since(t0) - res.Boot
			grace = time.After(powerOffGrace)
		case evError:
			guestErr = ev.text
			grace = time.After(powerOffGrace)
		}
	}
loop:
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			handle(ev)
		case <-bootTimer.C:
			if !isStarted {
				reason = fmt.Sprintf("did not boot within %v", o.BootTimeout)
				timedOut = true
				kill()
			}
		case <-deadline.C:
			if isStarted {
				reason = fmt.Sprintf("was still running the command after %v", o.Timeout)
			} else {
				reason = fmt.Sprintf("did not boot within %v", o.Timeout)
			}
			timedOut = true
			kill()
		case <-ctx.Done():
			reason = "was interrupted: " + ctx.Err().Error()
			kill()
		case <-grace:
			kill()
		case waitErr = <-exited:
			break loop
		}
	}
	readers.Wait()
	if events != nil {
		for ev := range events {
			handle(ev)
		}
	}
	res.FailedTests = failed

	if isExited {
		fmt.Fprintf(o.Log, "vmtest: %s: command exited %d after %.1fs\n", k.Release, res.ExitCode, res.Run.Seconds())
		return nil
	}
	be := &BootError{Kernel: k.Release, Timeout: timedOut, Started: isStarted, Console: console.String()}
	switch {
	case reason != "":
		be.Reason = reason
	case guestErr != "":
		be.Reason = "could not set up the guest: " + guestErr
	case isStarted:
		be.Reason = "stopped while the command was running (no exit status: did the kernel panic?)"
	default:
		be.Reason = "stopped before the command started (kernel panic or broken init?)"
	}
	var ee *exec.ExitError
	if waitErr != nil && !(errors.As(waitErr, &ee) && !ee.Exited()) {
		be.Reason += " (qemu: " + waitErr.Error() + ")"
	}
	be.Qemu = qerr.String()
	return be
}

// readLines calls fn with each line of r, newline included; a last line
// without one is passed as it is.
func readLines(r io.Reader, fn func(string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		l, err := br.ReadString('\n')
		if l != "" {
			fn(l)
		}
		if err != nil {
			return
		}
	}
}
