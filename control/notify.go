package control

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"
)

// Notify sends a systemd notification (READY=1, STOPPING=1, WATCHDOG=1...)
// to $NOTIFY_SOCKET. Without one, as outside systemd, it does nothing.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("dial notify socket: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("send %q to notify socket: %w", state, err)
	}
	return nil
}

// watchdogInterval is how often to ping: half of WATCHDOG_USEC, when the
// watchdog is meant for this process.
func watchdogInterval() (time.Duration, bool) {
	usec, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || usec == 0 {
		return 0, false
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, false
	}
	return time.Duration(usec) * time.Microsecond / 2, true
}

// watchdog sends WATCHDOG=1 until ctx ends, when systemd asked for it,
// and only while healthy says nil: an agent that cannot trust its state
// store stops pinging, and systemd restarts it.
func watchdog(ctx context.Context, log *slog.Logger, healthy func() error) {
	every, ok := watchdogInterval()
	if !ok {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := healthy(); err != nil {
			log.Error("watchdog pings stopped: the agent is unhealthy; systemd restarts it", "err", err)
			<-ctx.Done()
			return
		}
		if err := Notify("WATCHDOG=1"); err != nil {
			log.Warn("watchdog ping", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
