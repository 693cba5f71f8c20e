package main

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// proxyReadyTimeout bounds one docker-proxy start; dockerd waits 16 s.
const proxyReadyTimeout = 10 * time.Second

// dockerProxyDP is Docker's userland proxy by itself: one docker-proxy
// process per published port and protocol, started with dockerd's flags
// and readiness pipe, and no iptables rules at all.
type dockerProxyDP struct {
	w       *world
	bin     string
	limit   int
	proxies []*daemon
	extra   *daemon
}

func (d *dockerProxyDP) name() string                    { return "docker-proxy" }
func (d *dockerProxyDP) world() *world                   { return d.w }
func (d *dockerProxyDP) clientCgroup(clientKind) *cgroup { return nil }
func (d *dockerProxyDP) target(c clientKind, s service) netip.AddrPort {
	return published(c, s)
}

// maxN: thousands of processes measure the machine's process table, not
// the proxy; dockerd users hit that wall at about a thousand ports.
func (d *dockerProxyDP) maxN() int           { return d.limit }
func (d *dockerProxyDP) opReps(runs int) int { return runs }

func (d *dockerProxyDP) setup(ctx context.Context, cl *cleanups) error {
	cl.add("docker-proxy processes", d.stopAll)
	for _, s := range services {
		p, err := d.start(s)
		if err != nil {
			return err
		}
		d.proxies = append(d.proxies, p)
	}
	// IPv6: what dockerd starts for "-p [::1]:P:80" and "-p [host
	// IPv6]:P:80" on a dual-stack network, one proxy per address, to the
	// container's IPv6 address. (A proxy on [::] would be dual-stack and
	// collide with the 0.0.0.0 one.)
	for _, s := range services {
		for _, host := range []netip.Addr{loopbackIP6, hostIP6} {
			s6 := s
			s6.hostAddr = host
			p, err := d.startTo(s6, containerIP6)
			if err != nil {
				return err
			}
			d.proxies = append(d.proxies, p)
		}
	}
	return nil
}

// start runs docker-proxy as dockerd does for a port.
func (d *dockerProxyDP) start(s service) (*daemon, error) {
	return d.startTo(s, containerIP)
}

func (d *dockerProxyDP) startTo(s service, backend netip.Addr) (*daemon, error) {
	hostIP := "0.0.0.0"
	if !s.wildcard() {
		hostIP = s.hostAddr.String()
	}
	// Its log is a line per stop; failures come through the readiness pipe.
	return startReady(d.w.host, proxyReadyTimeout, nil, d.bin,
		"-proto", protoOf(s),
		"-host-ip", hostIP,
		"-host-port", strconv.Itoa(int(s.hostPort)),
		"-container-ip", backend.String(),
		"-container-port", strconv.Itoa(int(s.containerPort)))
}

func (d *dockerProxyDP) stopAll() error {
	var first error
	all := d.proxies
	if d.extra != nil {
		all = append(all, d.extra)
	}
	for _, p := range all {
		if err := p.stop(syscall.SIGTERM); err != nil && first == nil {
			first = err
		}
	}
	d.proxies, d.extra = nil, nil
	return first
}

// install starts n proxies one after the other, waiting for each to be
// ready, as dockerd starts a container's ports. Memory is the sum over
// the proxies.
func (d *dockerProxyDP) install(ctx context.Context, ports []service) (time.Duration, memUse, error) {
	if err := d.stopAll(); err != nil {
		return 0, memUse{}, err
	}
	start := time.Now()
	for _, s := range ports {
		if err := ctx.Err(); err != nil {
			return 0, memUse{}, err
		}
		p, err := d.start(s)
		if err != nil {
			return 0, memUse{}, fmt.Errorf("docker-proxy %d of %d: %w", len(d.proxies)+1, len(ports), err)
		}
		d.proxies = append(d.proxies, p)
	}
	took := time.Since(start)
	pids := make([]int, len(d.proxies))
	for i, p := range d.proxies {
		pids[i] = p.pid()
	}
	rss, pss, err := processMemory(pids)
	if err != nil {
		return 0, memUse{}, err
	}
	return took, memUse{Bytes: rss, What: "RSS of the proxies", Extra: fmt.Sprintf("PSS %s", fmtBytes(pss))}, nil
}

func (d *dockerProxyDP) addOne(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	p, err := d.start(service{name: "extra", containerPort: extraPort, hostPort: extraPort})
	if err != nil {
		return 0, err
	}
	d.extra = p
	return time.Since(start), nil
}

// deleteOne stops the extra proxy the way dockerd does: SIGTERM, then
// wait for it to exit and free the port.
func (d *dockerProxyDP) deleteOne(ctx context.Context) (time.Duration, error) {
	if d.extra == nil {
		return 0, fmt.Errorf("no extra docker-proxy to stop")
	}
	start := time.Now()
	err := d.extra.stop(syscall.SIGTERM)
	d.extra = nil
	return time.Since(start), err
}
