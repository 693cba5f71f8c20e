// Package control is the Pontoon node agent: it keeps networks, endpoints
// and published ports in a bbolt file, makes netlink objects and BPF maps
// match them, and serves the CLI over an HTTP/JSON API on a unix socket.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// Defaults for the agent's flags.
const (
	DefaultStateDir = "/var/lib/pontoon"
	DefaultSocket   = "/run/pontoon/pontoon.sock"
	stateFile       = "pontoon.db"
)

// Config is what `pontoon agent` is started with.
type Config struct {
	StateDir string
	Socket   string
	PinDir   string
	// Cgroup gets the socket hooks; the cgroup v2 root in production.
	Cgroup string
	// Uplinks are attached as they appear; none means every interface
	// but loopback, Pontoon's own and the ports of bridges and bonds,
	// followed as interfaces come and go.
	Uplinks       []string
	ForceLegacyTC bool
	// XDP is how the uplinks' XDP program is attached; "" or off: none,
	// and any a previous agent left is removed.
	XDP loader.XDPMode
	// StackForwarding leaves translated packets to the kernel's forward
	// path instead of forwarding them in BPF; a FORWARD policy of DROP
	// then cuts containers off.
	StackForwarding bool
	// SNATPorts are the source ports masqueraded flows may take; zero
	// picks ipam.DefaultSNATPorts for the kernel's settings.
	SNATPorts ipam.PortRange
	// MetricsAddr serves Prometheus metrics at /metrics when set; only
	// on a loopback address unless MetricsAllowRemote.
	MetricsAddr        string
	MetricsAllowRemote bool
	// DockerPlugin, when set, is the name the agent serves Docker's
	// network and IPAM plugin under, in DockerPluginDir (default
	// control.DockerPluginDir).
	DockerPlugin    string
	DockerPluginDir string
	Log             *slog.Logger
}

// Agent is a running control plane.
type Agent struct {
	cfg Config
	log *slog.Logger

	// mu serialises every change, so the records, ipam, netlink and the
	// maps move together.
	mu       sync.Mutex
	store    *ipam.BoltStore
	ipam     *ipam.Allocator
	st       *state
	dp       *loader.Datapath
	bindings *maps.Bindings
	// writer is what Publish and unpublish write bindings with: the
	// bindings map itself, or a failing one in tests.
	writer bindingWriter
	// netns is the agent's own network namespace, which no endpoint may
	// be attached to.
	netns nsID
	// snatPorts are the masquerade source ports given to the datapath.
	snatPorts ipam.PortRange
	// uplinks are the interfaces the uplink programs are attached to, by
	// index; uplinkErrs the ones they could not be attached to.
	uplinks       map[int]Uplink
	uplinkErrs    map[int]error
	uplinksSynced bool
	// raWarned: the uplink's lapsing default route was logged (raIgnored).
	raWarned map[int]bool
	// netnsCookies caches each endpoint namespace's cookie by inode:
	// reading one means a thread entering the namespace.
	netnsCookies map[uint64]uint64
	// health goes bad for good when the store breaks or a request
	// panics; backup tracks the last good copy of the state file.
	health  health
	backup  lastGood
	metrics *agentMetrics
	// damage is what the agent could not restore (heal.go).
	damage damage
	// events are the monitor clients (monitor.go).
	events monitorHub
	// docker serves Docker's plugin protocol; nil unless asked for.
	docker *dockerPlugin
	// hostNet keeps the host's addresses and routes for the subnet
	// checks of network create (nil: list them each time).
	hostNet *hostNetCache
	// locks are what Run holds the agent's paths with (nil in tests
	// that make an Agent by hand).
	locks *lockSet
	// countedLate are bindings whose traffic counters were made after
	// the binding itself (mayHaveFlows).
	countedLate map[uint32]bool
	// portsGen counts changes to st.ports, so a resync that read the
	// bindings map without mu can tell whether it is still right.
	portsGen uint64
	// pendingPools are subnets picked for Docker's RequestPool whose
	// network dockerd has not created yet, until when they stay
	// reserved: other picks skip them (engine.go).
	pendingPools map[netip.Prefix]time.Time
}

// StatePath is the bbolt file under a state directory.
func StatePath(dir string) string { return filepath.Join(dir, stateFile) }

// Run runs the agent until ctx is cancelled. Readiness is signalled only
// after the datapath and the netlink objects match the persisted state.
// It holds its socket, state directory, pin directory, cgroup and network
// namespace to itself (lockAgent) until it returns.
func Run(ctx context.Context, cfg Config) error {
	if cfg.MetricsAddr != "" {
		if err := checkMetricsAddr(cfg.MetricsAddr, cfg.MetricsAllowRemote); err != nil {
			return err
		}
	}
	// Before anything is read or changed: a second agent on the same
	// socket, state, pins, cgroup or namespace would prune the first's
	// interfaces and bindings before noticing it.
	locks, err := lockAgent(cfg)
	if err != nil {
		return err
	}
	defer locks.release()
	metricsLn, err := listenMetrics(cfg.MetricsAddr)
	if err != nil {
		return err
	}
	if metricsLn != nil {
		defer metricsLn.Close()
	}
	var dockerLn net.Listener
	if cfg.DockerPlugin != "" {
		if cfg.DockerPluginDir == "" {
			cfg.DockerPluginDir = DockerPluginDir
		}
		// Before the state is touched: a name in use refuses the start.
		if dockerLn, err = listenDockerPlugin(cfg.DockerPluginDir, cfg.DockerPlugin); err != nil {
			return err
		}
		defer os.Remove(DockerPluginSocket(cfg.DockerPluginDir, cfg.DockerPlugin))
		defer dockerLn.Close()
	}
	a, err := open(cfg)
	if err != nil {
		return err
	}
	defer a.close()
	if dockerLn != nil {
		a.docker = &dockerPlugin{a: a, subPools: map[netip.Prefix]netip.Prefix{}, created: map[string]dockerEndpointCreate{}}
	}
	a.locks = locks
	started := time.Now()
	if err := a.reconcile(); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	a.metrics.observeReconcile("start", started)
	// Everything is attached again: the old programs no longer write to
	// conntrack tables Load upgraded to this build's layout.
	if names := a.dp.Upgraded(); len(names) > 0 {
		added, err := a.dp.FinishUpgrade()
		if err != nil {
			a.log.Warn("conntrack upgrade: some flows of the old tables were not copied", "err", err)
		}
		// The copy brings back what reconcile's flush took from the
		// new tables: the old ones still held it.
		a.mu.Lock()
		flushed := a.flushUntranslated(a.wantBindings())
		a.mu.Unlock()
		a.log.Info("conntrack tables upgraded to this build's layout", "tables", names, "flows_copied_after_attach", added,
			"flows_flushed", flushed)
	}
	ln, err := listen(cfg.Socket)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(a.events.close) // monitor streams end, or Shutdown would wait for them
	serveErr := make(chan error, 3)
	go func() { serveErr <- fmt.Errorf("serve API: %w", srv.Serve(ln)) }()
	var metricsSrv *http.Server
	if metricsLn != nil {
		metricsSrv = &http.Server{Handler: a.metrics.handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := metricsSrv.Serve(metricsLn); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("serve metrics: %w", err)
			}
		}()
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	// The plugin's socket was listening from the start, so a dockerd
	// starting meanwhile waits in its backlog; it is answered once the
	// agent has reconciled.
	var dockerSrv *http.Server
	if dockerLn != nil {
		dockerSrv = a.dockerPluginServer()
		go func() {
			if err := dockerSrv.Serve(dockerLn); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("serve docker plugin: %w", err)
			}
		}()
	}
	var wg sync.WaitGroup
	a.backup.kick = make(chan struct{}, 1)
	wg.Add(5)
	go func() { defer wg.Done(); a.readEvents(watchCtx) }()
	go func() { defer wg.Done(); a.backupLoop(watchCtx) }()
	go func() { defer wg.Done(); a.watch(watchCtx) }()
	go func() { defer wg.Done(); watchdog(watchCtx, a.log, a.healthErr) }()
	go func() { defer wg.Done(); a.collectConntrack(watchCtx.Done()) }()

	a.log.Info("ready", "socket", cfg.Socket, "state", a.store.Path(), "pins", a.dp.PinDir(), "metrics", cfg.MetricsAddr, "docker_plugin", cfg.DockerPlugin)
	if err := Notify("READY=1\nSTATUS=reconciled, serving " + cfg.Socket); err != nil {
		a.log.Warn("sd_notify", "err", err)
	}

	select {
	case <-ctx.Done():
		err = nil
	case err = <-serveErr:
	}
	Notify("STOPPING=1")
	a.log.Info("stopping; the datapath keeps running")
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)
	if metricsSrv != nil {
		metricsSrv.Shutdown(shutdown)
	}
	if dockerSrv != nil {
		dockerSrv.Shutdown(shutdown)
	}
	stopWatch()
	wg.Wait()
	os.Remove(cfg.Socket)
	return err
}

func open(cfg Config) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Cgroup == "" {
		root, err := loader.CgroupV2Root()
		if err != nil {
			return nil, err
		}
		cfg.Cgroup = root
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	a := &Agent{cfg: cfg, log: cfg.Log, uplinks: map[int]Uplink{}, uplinkErrs: map[int]error{}, netnsCookies: map[uint64]uint64{}}
	var err error
	if a.netns, err = ownNetns(); err != nil {
		return nil, fmt.Errorf("identify the agent's network namespace: %w", err)
	}
	// Before anything lists the host's addresses and routes: the cache
	// must hear of every change after its listing.
	a.hostNet = newHostNetCache()
	// Nothing is touched before the state file is known to be whole.
	if a.store, a.ipam, a.st, err = openState(StatePath(cfg.StateDir), cfg.PinDir, ipam.Options{CheckListening: true}); err != nil {
		return nil, err
	}
	// Counted now, not by the first publish after a restart (a pass over
	// every mapping: ~1 ms at 60,000).
	a.st.users()
	if a.snatPorts, err = snatPorts(cfg.SNATPorts, a.ipam.DynamicPorts()); err != nil {
		a.close()
		return nil, err
	}
	if a.snatPorts.Len() < minSNATPorts {
		a.log.Warn("few masquerade source ports; flows to one server beyond this many fail", "snat_ports", a.snatPorts.String(), "count", a.snatPorts.Len())
	}
	if a.dp, err = loader.Load(loader.Options{PinDir: cfg.PinDir, ForceLegacyTC: cfg.ForceLegacyTC}); err != nil {
		a.close()
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	for _, f := range a.dp.Features() {
		if !f.Available {
			a.log.Warn("kernel feature unavailable", "feature", f.Name, "needs", "Linux "+f.Since, "instead", f.Without)
		}
	}
	a.bindings = maps.NewBindings(a.dp.Maps.Bindings)
	a.writer = a.bindings
	a.metrics = newMetrics(a)
	return a, nil
}

func (a *Agent) close() {
	a.hostNet.close()
	if a.dp != nil {
		a.dp.Close()
	}
	if a.store != nil {
		a.store.Close()
	}
}

// listen opens the API socket, replacing a stale one a crashed agent left,
// but never one a live agent answers on. lockAgent already refused a live
// one; the dial stays for agents of builds without the socket's lock.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another agent is serving %s: stop it first", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("set socket mode: %w", err)
	}
	return ln, nil
}
