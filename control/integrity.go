package control

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
)

// ErrStateDamaged: the state file is empty, truncated, corrupt, holds
// records that contradict each other, or is missing while a Pontoon
// datapath exists. The agent refuses to start on it and changes nothing.
var ErrStateDamaged = errors.New("state file damaged")

// stateRefusal is the one line the agent refuses to start with: which
// file, what is wrong, and what to do.
type stateRefusal struct {
	path, pinDir, problem string
}

func (r *stateRefusal) Unwrap() error { return ErrStateDamaged }

func (r *stateRefusal) Error() string {
	dir := filepath.Dir(r.path)
	fix := fmt.Sprintf("run 'pontoon state rebuild --state-dir %s --bpffs %s', which rebuilds it from the interfaces and pinned maps", dir, r.pinDir)
	backup := LastGoodPath(r.path)
	if fi, err := os.Stat(backup); err == nil && ipam.CheckBolt(backup) == nil {
		fix = fmt.Sprintf("restore the last good copy, saved %s ('cp %s %s'; changes made after it may be lost), or %s",
			fi.ModTime().Format("2006-01-02 15:04:05"), backup, r.path, fix)
	}
	return fmt.Sprintf("state file %s %s: the agent will not start on it and changed nothing; %s", r.path, r.problem, fix)
}

// openState opens the state file only once it is known to be whole: a
// missing file is a first start only when no Pontoon datapath exists
// (worldEvidence), and an existing one must pass ipam.CheckBolt and hold
// records that decode and agree. Anything else is a stateRefusal. It never
// panics, and touches nothing but the file.
func openState(path, pinDir string, opts ipam.Options) (_ *ipam.BoltStore, _ *ipam.Allocator, _ *state, err error) {
	if pinDir == "" {
		pinDir = loader.DefaultPinDir
	}
	refuse := func(format string, args ...any) error {
		return &stateRefusal{path: path, pinDir: pinDir, problem: fmt.Sprintf(format, args...)}
	}
	_, err = os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		evidence, err := worldEvidence(pinDir)
		if err != nil {
			return nil, nil, nil, err
		}
		if len(evidence) > 0 {
			return nil, nil, nil, refuse("is missing, but a Pontoon datapath is here (%s)", strings.Join(evidence, "; "))
		}
	case err != nil:
		return nil, nil, nil, fmt.Errorf("read state file %s: %w", path, err)
	default:
		if err := ipam.CheckBolt(path); errors.Is(err, ipam.ErrDamaged) {
			return nil, nil, nil, refuse("is %s", strings.TrimPrefix(err.Error(), ipam.ErrDamaged.Error()+": "))
		} else if err != nil {
			return nil, nil, nil, err
		}
	}
	store, err := ipam.OpenBolt(path)
	if err != nil {
		return nil, nil, nil, err
	}
	defer func() {
		if err != nil {
			store.Close()
		}
	}()
	alloc, err := ipam.Open(store, opts)
	if err != nil {
		return nil, nil, nil, refuse("holds address records that cannot be used (%v)", err)
	}
	st, err := loadState(store)
	if err == nil {
		err = st.check()
	}
	if err != nil {
		return nil, nil, nil, refuse("holds records that cannot be used (%v)", err)
	}
	return store, alloc, st, nil
}

// inNetwork: a network with several subnets holds addresses in any of them.
func inNetwork(n *Network, a netip.Addr) bool {
	_, ok := n.subnetOf(a)
	return ok
}

// check finds records that contradict each other or their keys, as a
// flipped byte in a name would leave them. Starting on such records would
// prune the interfaces of the records they were.
func (st *state) check() error {
	for k, n := range st.networks {
		if n.Name != k || n.Bridge == "" || !n.Subnet.IsValid() || !n.Subnet.Contains(n.Gateway) {
			return fmt.Errorf("network record %q: name %q, bridge %q, subnet %s, gateway %s do not fit", k, n.Name, n.Bridge, n.Subnet, n.Gateway)
		}
		for _, s := range n.subnets() {
			if !s.Subnet.IsValid() || !s.Subnet.Contains(s.Gateway) {
				return fmt.Errorf("network record %q: subnet %s, gateway %s do not fit", k, s.Subnet, s.Gateway)
			}
		}
	}
	for k, e := range st.endpoints {
		n := st.networks[e.Network]
		if e.Name != k || (!e.Adopted && e.HostIf != hostIfName(e.Name)) || n == nil || !e.IP.Is4() || !inNetwork(n, e.IP) {
			return fmt.Errorf("endpoint record %q: name %q, interface %s, network %q, address %s do not fit", k, e.Name, e.HostIf, e.Network, e.IP)
		}
		if e.IPv6.IsValid() && (!e.IPv6.Is6() || !inNetwork(n, e.IPv6)) {
			return fmt.Errorf("endpoint record %q: IPv6 address %s is not in network %q", k, e.IPv6, e.Network)
		}
	}
	for k, m := range st.ports {
		e := st.endpoints[m.Endpoint]
		if portKey(m) != k || e == nil || m.ID == 0 {
			return fmt.Errorf("port mapping record %q: endpoint %q, backend %s, binding id %d do not fit", k, m.Endpoint, m.Backend, m.ID)
		}
		if err := checkMappingFamilies(m, e); err != nil {
			return fmt.Errorf("port mapping record %q: %w", k, err)
		}
	}
	return nil
}

// mapPins are pins every datapath has; any of them, or any attachment,
// means a datapath was loaded here.
var mapPins = []string{"bindings", "networks", "endpoints", "ct", "config"}

// worldEvidence lists what shows a Pontoon datapath exists in this network
// namespace and pin directory: interfaces provably Pontoon's (their
// alias, kind and name, as cleanup recognises them), and pins.
func worldEvidence(pinDir string) ([]string, error) {
	var out []string
	own, err := ownLinks()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range own {
		if ok, _ := madeByPontoon(l, nil); ok {
			names = append(names, l.Attrs().Name)
		}
	}
	if n := len(names); n > 0 {
		slices.Sort(names)
		if n > 4 {
			names = append(names[:4], "...")
		}
		out = append(out, fmt.Sprintf("%d interfaces of its own: %s", n, strings.Join(names, " ")))
	}
	var pins []string
	for _, name := range mapPins {
		if _, err := os.Stat(filepath.Join(pinDir, name)); err == nil {
			pins = append(pins, name)
		}
	}
	att, err := loader.ListAttachments(pinDir)
	if err != nil {
		return nil, err
	}
	if len(pins) > 0 || len(att) > 0 {
		out = append(out, fmt.Sprintf("pins in %s: %d maps, %d attachments", pinDir, len(pins), len(att)))
	}
	return out, nil
}
