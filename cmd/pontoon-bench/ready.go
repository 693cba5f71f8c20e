package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
)

// startReady starts a daemon that reports readiness on fd 3 the way
// dockerd expects it of docker-proxy: "0\n" once listening, "1\n<error>"
// when it cannot, then it closes the fd. Without fd 3 open, docker-proxy
// would close whatever got fd 3: its own listening socket.
func startReady(n netns, timeout time.Duration, stderr io.Writer, name string, args ...string) (*daemon, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("readiness pipe: %w", err)
	}
	defer r.Close()
	d, err := startDaemon(n, []*os.File{w}, stderr, name, args...)
	w.Close()
	if err != nil {
		return nil, err
	}
	r.SetReadDeadline(time.Now().Add(timeout))
	msg, err := io.ReadAll(r)
	switch {
	case err != nil:
		err = fmt.Errorf("%s not ready within %s: %w", name, timeout, err)
	case strings.HasPrefix(string(msg), "0\n"):
		return d, nil
	case strings.HasPrefix(string(msg), "1\n"):
		err = fmt.Errorf("%s %s: %s", name, strings.Join(args, " "), strings.TrimPrefix(string(msg), "1\n"))
	default:
		err = fmt.Errorf("%s %s exited before it was ready (readiness %q)", name, strings.Join(args, " "), msg)
	}
	d.stop(syscall.SIGKILL)
	return nil, err
}

// signalReady is the daemon side, for this binary's own server.
func signalReady(fd int) {
	if fd < 0 {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	fmt.Fprint(f, "0\n")
	f.Close()
}
