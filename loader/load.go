// Package loader loads Pontoon's BPF objects, pins their maps and links in
// bpffs and attaches the programs to uplinks and cgroups. Everything it
// attaches outlives the process: a later Load adopts the pins and swaps
// programs in place, so traffic and conntrack state carry on.
package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/pontoon-net/pontoon/bpf"
)

// Options says where to pin and how to attach.
type Options struct {
	// PinDir is a directory on bpffs; DefaultPinDir when empty.
	PinDir string
	// ForceLegacyTC attaches uplinks with clsact + cls_bpf even where TCX
	// exists, so the path older kernels take is tested on new ones too.
	ForceLegacyTC bool
}

// Maps are the datapath's maps, shared by every program and pinned by name.
type Maps struct {
	Bindings  *ebpf.Map
	CT        *ebpf.Map
	CTNew     *ebpf.Map
	HostAddrs *ebpf.Map
	SockRev   *ebpf.Map
	Config    *ebpf.Map
	Stats     *ebpf.Map
	Networks  *ebpf.Map
	Uplinks   *ebpf.Map
	// Uplinks6 holds each uplink's NAT66 address.
	Uplinks6  *ebpf.Map
	SNAT      *ebpf.Map
	Endpoints *ebpf.Map
	Netns     *ebpf.Map
	Frags     *ebpf.Map
	// Prefilter (prefilter_skip) says which ports and /16s hold nothing.
	Prefilter *ebpf.Map
	// BindingFilter (bfilter_skip) tells IPv4 wildcard bindings' ports
	// from bindings on one address, which Prefilter's port bits cannot.
	BindingFilter *ebpf.Map
	// BindingStats counts each mapping's traffic, by binding id.
	BindingStats *ebpf.Map
	// Events is the ring buffer `pontoon monitor` reads; EventBudget
	// what each CPU may still write to it this second.
	Events      *ebpf.Map
	EventBudget *ebpf.Map
	// AllowFrom holds the sources bindings with an allowlist accept.
	AllowFrom *ebpf.Map
}

func (m *Maps) all() map[string]**ebpf.Map {
	return map[string]**ebpf.Map{
		"bindings":       &m.Bindings,
		"ct":             &m.CT,
		"ct_new":         &m.CTNew,
		"hostaddrs":      &m.HostAddrs,
		"sockrev":        &m.SockRev,
		"config":         &m.Config,
		"stats":          &m.Stats,
		"networks":       &m.Networks,
		"uplinks":        &m.Uplinks,
		"uplinks6":       &m.Uplinks6,
		"snat":           &m.SNAT,
		"endpoints":      &m.Endpoints,
		"netns":          &m.Netns,
		"frags":          &m.Frags,
		"prefilter_skip": &m.Prefilter,
		"bfilter_skip":   &m.BindingFilter,
		"binding_stats":  &m.BindingStats,
		"events":         &m.Events,
		"event_budget":   &m.EventBudget,
		"allow_from":     &m.AllowFrom,
	}
}

// Datapath is a loaded set of programs and their pinned maps.
type Datapath struct {
	Maps Maps

	pinDir   string
	forceTC  bool
	tc       bpf.TcUplinkPrograms
	bridge   bpf.TcBridgePrograms
	endpoint bpf.TcEndpointPrograms
	sock     bpf.SockPrograms
	kernel   kernelFeatures
	// xdp is the uplink XDP program, loaded on the first attach (most
	// agents run without XDP, and its verification costs as much as the tc
	// programs'); nil with xdpErr when this kernel refused both of its
	// builds (XDP is then unavailable, tc unaffected).
	// lazyMu guards the programs loaded on first use (uplinkProgram).
	lazyMu  sync.Mutex
	xdpOnce sync.Once
	xdp     *ebpf.Program
	xdpErr  error

	// links holds every link this datapath attached or adopted, by pin
	// path (attachments.go).
	linksMu sync.Mutex
	links   map[string]link.Link

	// upgrades are the conntrack tables Load moved to this build's
	// layout, until FinishUpgrade (migrate.go).
	upgrades []ctUpgrade
}

// Load loads the programs, creating the pinned maps on first use and
// reusing them afterwards. It attaches nothing by itself.
func Load(opts Options) (*Datapath, error) {
	dir := opts.PinDir
	if dir == "" {
		dir = DefaultPinDir
	}
	if err := ensureBPFFS(dir); err != nil {
		return nil, err
	}
	for _, sub := range []string{linksDir, progsDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
	}

	kernel, err := probeKernel()
	if err != nil {
		return nil, fmt.Errorf("probe kernel features: %w", err)
	}
	tcSpec, err := bpf.LoadForKernel(bpf.LoadTcUplink)
	if err != nil {
		return nil, fmt.Errorf("read tc object: %w", err)
	}
	bridgeSpec, err := bpf.LoadForKernel(bpf.LoadTcBridge)
	if err != nil {
		return nil, fmt.Errorf("read bridge object: %w", err)
	}
	endpointSpec, err := bpf.LoadForKernel(bpf.LoadTcEndpoint)
	if err != nil {
		return nil, fmt.Errorf("read endpoint object: %w", err)
	}
	sockSpec, err := bpf.LoadForKernel(bpf.LoadSock)
	if err != nil {
		return nil, fmt.Errorf("read socket object: %w", err)
	}

	d := &Datapath{pinDir: dir, forceTC: opts.ForceLegacyTC, kernel: kernel, links: map[string]link.Link{}}
	if err := d.openMaps(tcSpec); err != nil {
		d.closeUpgrades()
		d.Maps.close()
		return nil, err
	}
	collOpts := &ebpf.CollectionOptions{MapReplacements: d.Maps.replacements()}

	// The uplink programs for devices without an Ethernet header wait for
	// the first such uplink (uplinkProgram): few hosts have one, and each
	// costs a verification as long as the Ethernet build's.
	var ethernetUplink struct {
		Ingress *ebpf.Program `ebpf:"uplink_ingress"`
		Egress  *ebpf.Program `ebpf:"uplink_egress"`
	}
	if err := tcSpec.LoadAndAssign(&ethernetUplink, collOpts); err != nil {
		d.Maps.close()
		return nil, fmt.Errorf("load tc programs: %w", verifierDetail(err))
	}
	d.tc.UplinkIngress, d.tc.UplinkEgress = ethernetUplink.Ingress, ethernetUplink.Egress
	var bridgeObjs bpf.TcBridgeObjects
	if err := bridgeSpec.LoadAndAssign(&bridgeObjs.TcBridgePrograms, collOpts); err != nil {
		d.Close()
		return nil, fmt.Errorf("load bridge program: %w", verifierDetail(err))
	}
	d.bridge = bridgeObjs.TcBridgePrograms
	var endpointObjs bpf.TcEndpointObjects
	if err := endpointSpec.LoadAndAssign(&endpointObjs.TcEndpointPrograms, collOpts); err != nil {
		d.Close()
		return nil, fmt.Errorf("load endpoint program: %w", verifierDetail(err))
	}
	d.endpoint = endpointObjs.TcEndpointPrograms
	if err := d.loadSockPrograms(sockSpec, collOpts); err != nil {
		d.Close()
		return nil, err
	}
	if err := removeRetiredPins(dir); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// retiredMaps are maps of older builds that this one does without. Their
// pins go once this build has loaded: programs of the older build still
// attached keep the maps they hold until they are replaced.
var retiredMaps = []string{
	// Became prefilter_skip and bfilter_skip, whose set bits mean the
	// opposite ("nothing there") so that an empty map hides nothing.
	"prefilter", "binding_filter",
}

// removeRetiredPins removes the pins of retiredMaps under dir, if they are
// Pontoon's.
func removeRetiredPins(dir string) error {
	for _, name := range retiredMaps {
		path := filepath.Join(dir, name)
		if !isOwnMap(path, name) {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove the pin of retired map %s: %w", name, err)
		}
	}
	return nil
}

// uplinkProgram loads the uplink program name into *slot on first use.
func (d *Datapath) uplinkProgram(slot **ebpf.Program, name string) (*ebpf.Program, error) {
	d.lazyMu.Lock()
	defer d.lazyMu.Unlock()
	if *slot != nil {
		return *slot, nil
	}
	spec, err := bpf.LoadForKernel(bpf.LoadTcUplink)
	if err != nil {
		return nil, fmt.Errorf("read tc object: %w", err)
	}
	for other := range spec.Programs {
		if other != name {
			delete(spec.Programs, other)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: d.Maps.replacements()})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, verifierDetail(err))
	}
	defer coll.Close()
	*slot = coll.DetachProgram(name)
	return *slot, nil
}

// loadSockPrograms loads the socket hooks; the bind hooks only where the
// kernel can refuse a bind with EADDRINUSE (published-port reservation).
// A program left out stays nil in d.sock, and AttachCgroup skips it.
func (d *Datapath) loadSockPrograms(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	if d.kernel.portReservation {
		if err := spec.LoadAndAssign(&d.sock, opts); err != nil {
			return fmt.Errorf("load socket programs: %w", verifierDetail(err))
		}
		return nil
	}
	spec = spec.Copy()
	delete(spec.Programs, bpf.SockProgSockBind4)
	delete(spec.Programs, bpf.SockProgSockBind6)
	coll, err := ebpf.NewCollectionWithOptions(spec, *opts)
	if err != nil {
		return fmt.Errorf("load socket programs: %w", verifierDetail(err))
	}
	defer coll.Close()
	progs := reflect.ValueOf(&d.sock).Elem()
	for i := range progs.NumField() {
		name := progs.Type().Field(i).Tag.Get("ebpf")
		if p := coll.DetachProgram(name); p != nil {
			progs.Field(i).Set(reflect.ValueOf(p))
		}
	}
	return nil
}

// openMaps adopts each pinned map, or creates and pins it. A pin left by an
// incompatible build is an error rather than silently replaced: replacing
// it would cut the programs still attached from the new state. The one
// exceptions are tables of an older layout that migrate.go upgrades with
// their entries: conntrack, allow_from and binding_stats.
func (d *Datapath) openMaps(spec *ebpf.CollectionSpec) error {
	for name, slot := range d.Maps.all() {
		ms, ok := spec.Maps[name]
		if !ok {
			return fmt.Errorf("object has no map %q: rebuild with 'make generate'", name)
		}
		path := filepath.Join(d.pinDir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		switch {
		case err == nil:
			if err := ms.Compatible(m); err != nil && canUpgradeCT(name, ms, m) {
				upgraded, err := upgradeCT(name, path, ms, m)
				if err != nil {
					m.Close()
					return err
				}
				d.upgrades = append(d.upgrades, ctUpgrade{name: name, old: m, new: upgraded})
				m = upgraded
			} else if err != nil && canUpgradeAllowFrom(name, ms, m) {
				upgraded, err := upgradeAllowFrom(path, ms, m)
				m.Close()
				if err != nil {
					return err
				}
				m = upgraded
			} else if err != nil && canUpgradeBindingStats(name, ms, m) {
				upgraded, err := upgradeBindingStats(path, ms, m)
				m.Close()
				if err != nil {
					return err
				}
				m = upgraded
			} else if err != nil {
				m.Close()
				return fmt.Errorf("pinned map %s does not match this build (%v): remove the old datapath with 'pontoon cleanup'", path, err)
			}
		case errors.Is(err, os.ErrNotExist):
			m, err = ebpf.NewMap(ms)
			if err != nil {
				return fmt.Errorf("create map %s: %w", name, err)
			}
			if err := m.Pin(path); err != nil {
				m.Close()
				return fmt.Errorf("pin map %s: %w", name, err)
			}
		default:
			return fmt.Errorf("open pinned map %s: %w", path, err)
		}
		*slot = m
	}
	return nil
}

// replacements hands the pinned maps to a program load in place of the
// object's own.
func (m *Maps) replacements() map[string]*ebpf.Map {
	r := map[string]*ebpf.Map{}
	for name, slot := range m.all() {
		r[name] = *slot
	}
	return r
}

func (m *Maps) close() {
	for _, slot := range m.all() {
		if *slot != nil {
			(*slot).Close()
			*slot = nil
		}
	}
}

// RepinMaps puts back the pin directory and any map pins removed from it
// (rm -rf by hand): the maps live on in this process and in the attached
// programs, so pinning the same maps again keeps their contents. It
// returns the names of the maps pinned again. The directory is never
// mounted here: a pin directory that is not on a bpffs any more is an
// error, not a reason to mount one over the host's.
func (d *Datapath) RepinMaps() ([]string, error) {
	onBPFFS, err := isOnBPFFS(d.pinDir)
	if err != nil {
		return nil, err
	}
	if !onBPFFS {
		return nil, fmt.Errorf("pin directory %s is not on a bpffs any more (something was mounted over it?): unmount it, or restart the agent with --bpffs on a bpffs", d.pinDir)
	}
	for _, sub := range []string{linksDir, progsDir} {
		if err := os.MkdirAll(filepath.Join(d.pinDir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("recreate pin directory: %w", err)
		}
	}
	var repinned []string
	for name, slot := range d.Maps.all() {
		path := filepath.Join(d.pinDir, name)
		if _, err := os.Stat(path); err == nil {
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return repinned, fmt.Errorf("check pin of map %s: %w", name, err)
		}
		// Pin is a no-op for the path the map was pinned at: forget it
		// first (the file is gone already).
		if err := (*slot).Unpin(); err != nil {
			return repinned, fmt.Errorf("forget old pin of map %s: %w", name, err)
		}
		if err := (*slot).Pin(path); err != nil {
			return repinned, fmt.Errorf("pin map %s again: %w", name, err)
		}
		repinned = append(repinned, name)
	}
	sort.Strings(repinned)
	return repinned, nil
}

// PinDir is where this datapath's maps and links are pinned.
func (d *Datapath) PinDir() string { return d.pinDir }

// Close releases this process's handles. Pinned maps and links, and so the
// attached programs, stay in the kernel.
func (d *Datapath) Close() error {
	d.tc.Close()
	d.bridge.Close()
	d.endpoint.Close()
	d.sock.Close()
	if d.xdp != nil {
		d.xdp.Close()
	}
	d.releaseLinks()
	d.closeUpgrades()
	d.Maps.close()
	return nil
}

func verifierDetail(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%+v", ve)
	}
	return err
}
