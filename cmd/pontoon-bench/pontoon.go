package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/pontoon-net/pontoon/loader"
	"github.com/pontoon-net/pontoon/maps"
)

// pontoonDP is Pontoon's datapath as the agent sets it up: tc programs on
// the uplink and the bridge, socket hooks on a cgroup (a child one here,
// holding only the bench's host clients), the host's addresses and netns
// cookie in the maps.
type pontoonDP struct {
	w        *world
	cg       *cgroup
	pinDir   string
	legacyTC bool

	m         *ebpf.Map
	bindings  *maps.Bindings
	published []maps.BindingKey
}

func (d *pontoonDP) name() string  { return "pontoon" }
func (d *pontoonDP) world() *world { return d.w }
func (d *pontoonDP) target(c clientKind, s service) netip.AddrPort {
	return published(c, s)
}
func (d *pontoonDP) maxN() int { return 1 << 30 }

// opReps: one map operation takes microseconds; many samples are cheap.
func (d *pontoonDP) opReps(int) int { return 200 }

// clientCgroup: host processes sit in the hooked cgroup, as every process
// on a host does when the hooks are on the root; the outside client is
// another machine, so it has none.
func (d *pontoonDP) clientCgroup(c clientKind) *cgroup {
	if c == viaOutside {
		return nil
	}
	return d.cg
}

func (d *pontoonDP) setup(ctx context.Context, cl *cleanups) error {
	// The detach runs in the host namespace while its interfaces exist:
	// registered after the world, it runs before the world is deleted.
	cl.add("pontoon pins "+d.pinDir, func() error { return d.cleanup(context.Background()) })
	args := []string{"attach", "--pin-dir", d.pinDir, "--uplink", uplinkName, "--bridge", bridgeName, "--cgroup", d.cg.path}
	if d.legacyTC {
		args = append(args, "--legacy-tc")
	}
	var mode string
	if err := helper(ctx, d.w.host, nil, 30*time.Second, &mode, args...); err != nil {
		return err
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(d.pinDir, "bindings"), nil)
	if err != nil {
		return fmt.Errorf("open pinned bindings map: %w", err)
	}
	d.m, d.bindings = m, maps.NewBindings(m)
	var bs []maps.Binding
	for _, s := range services {
		bs = append(bs, binding(s))
	}
	return d.put(bs)
}

func (d *pontoonDP) cleanup(ctx context.Context) error {
	if d.m != nil {
		d.m.Close()
		d.m = nil
	}
	if _, err := os.Stat(d.pinDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// Legacy tc filters are found by ifindex, so the detach must run in
	// the namespace that owns them.
	if err := helper(ctx, d.w.host, nil, 30*time.Second, nil, "detach", "--pin-dir", d.pinDir); err != nil {
		// The namespace (and every filter in it) may be gone already;
		// the pins are all that is left then.
		if rmErr := os.RemoveAll(d.pinDir); rmErr != nil {
			return errors.Join(err, rmErr)
		}
	}
	return nil
}

// binding is the map entry publishing s.
func binding(s service) maps.Binding {
	proto := maps.TCP
	if s.udp {
		proto = maps.UDP
	}
	host := netip.IPv4Unspecified()
	if !s.wildcard() {
		host = s.hostAddr
	}
	return maps.Binding{
		Proto:   proto,
		Host:    netip.AddrPortFrom(host, s.hostPort),
		Backend: netip.AddrPortFrom(containerIP, s.containerPort),
		ID:      uint32(s.hostPort),
	}
}

func (d *pontoonDP) put(bs []maps.Binding) error {
	if err := d.bindings.PutBatch(bs); err != nil {
		return err
	}
	for _, b := range bs {
		d.published = append(d.published, b.Key())
	}
	return nil
}

// install times one batch update of n bindings; memory is what the
// kernel accounts to the bindings map (it grows with its entries).
func (d *pontoonDP) install(ctx context.Context, ports []service) (time.Duration, memUse, error) {
	if err := d.bindings.DeleteBatch(d.published); err != nil {
		return 0, memUse{}, err
	}
	d.published = nil
	bs := make([]maps.Binding, len(ports))
	for i, p := range ports {
		bs[i] = binding(p)
	}
	start := time.Now()
	if err := d.bindings.PutBatch(bs); err != nil {
		return 0, memUse{}, err
	}
	took := time.Since(start)
	for _, b := range bs {
		d.published = append(d.published, b.Key())
	}
	info, err := d.m.Info()
	if err != nil {
		return 0, memUse{}, fmt.Errorf("read bindings map info: %w", err)
	}
	memlock, ok := info.Memlock()
	if !ok {
		return 0, memUse{}, errors.New("kernel reports no memlock for the bindings map")
	}
	return took, memUse{Bytes: float64(memlock), What: "bindings map memory (memlock)"}, nil
}

func (d *pontoonDP) extra() maps.Binding {
	return binding(service{name: "extra", containerPort: extraPort, hostPort: extraPort})
}

func (d *pontoonDP) addOne(context.Context) (time.Duration, error) {
	b := d.extra()
	start := time.Now()
	err := d.bindings.Put(b)
	return time.Since(start), err
}

func (d *pontoonDP) deleteOne(context.Context) (time.Duration, error) {
	b := d.extra()
	start := time.Now()
	err := d.bindings.Delete(b.Proto, b.Host)
	return time.Since(start), err
}

// attachDatapath is the agent's part, run inside the host namespace: load,
// attach to the uplink, the bridge and the cgroup, and tell the programs
// the host's addresses and netns cookie. What it attached is pinned and
// outlives it.
func attachDatapath(pinDir, uplink, bridge, cgroupPath string, legacyTC bool) (string, error) {
	d, err := loader.Load(loader.Options{PinDir: pinDir, ForceLegacyTC: legacyTC})
	if err != nil {
		return "", err
	}
	defer d.Close()
	mode, err := d.AttachUplink(uplink)
	if err != nil {
		return "", err
	}
	if _, err := d.AttachBridge(bridge); err != nil {
		return "", err
	}
	if err := d.AttachCgroup(cgroupPath); err != nil {
		return "", err
	}
	cookie, err := loader.NetnsCookie()
	if err != nil {
		return "", err
	}
	cfg := maps.NewConfig(d.Maps.Config)
	v, err := cfg.Get()
	if err != nil {
		return "", err
	}
	v.HostNetnsCookie = cookie
	if err := cfg.Set(v); err != nil {
		return "", err
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", fmt.Errorf("list host addresses: %w", err)
	}
	want := map[netip.Addr]uint32{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			want[ip] = uint32(a.LinkIndex)
		}
	}
	if err := maps.NewHostAddrs(d.Maps.HostAddrs).Sync(want); err != nil {
		return "", err
	}
	return string(mode), nil
}
