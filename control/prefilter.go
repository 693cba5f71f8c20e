package control

import (
	"fmt"
	"net/netip"

	"github.com/pontoon-net/pontoon/maps"
)

// The prefilter_skip and bfilter_skip maps let the datapath skip lookups
// for packets that can match nothing: ports no binding uses, addresses no
// binding on that port has, /16s no network overlaps; the config's
// masquerade range does for ports outside it. Their one rule is that they
// never hide what the maps hold, so bits are added before the entries
// they cover are written, and only reconcile, which rebuilds them from
// the records, clears any. A bit left by a removed binding only costs a
// lookup.

// widenPrefilter sets the bits of bindings and subnets about to be
// written.
func (a *Agent) widenPrefilter(bindings []maps.Binding, subnets []netip.Prefix) error {
	var bits maps.PrefilterBits
	bindingBits := new(maps.BindingFilterBits)
	for _, b := range bindings {
		bits.AddBinding(b)
		bindingBits.AddBinding(b)
	}
	for _, s := range subnets {
		bits.AddNetwork(s)
	}
	if err := maps.NewPrefilter(a.dp.Maps.Prefilter).Add(&bits); err != nil {
		return fmt.Errorf("update the datapath's prefilter: %w", err)
	}
	if len(bindings) > 0 {
		if err := maps.NewBindingFilter(a.dp.Maps.BindingFilter).Add(bindingBits); err != nil {
			return fmt.Errorf("update the datapath's binding filter: %w", err)
		}
	}
	return nil
}

// disablePrefilter makes the filters hide nothing, so that reconcile may
// write bindings and networks that the filters a crashed or older agent
// left do not cover. enablePrefilter turns them back on.
func (a *Agent) disablePrefilter() error {
	if err := maps.NewPrefilter(a.dp.Maps.Prefilter).Off(); err != nil {
		return fmt.Errorf("turn the datapath's prefilter off: %w", err)
	}
	if err := maps.NewBindingFilter(a.dp.Maps.BindingFilter).Off(); err != nil {
		return fmt.Errorf("turn the datapath's binding filter off: %w", err)
	}
	return nil
}

// enablePrefilter rebuilds the filters from the bindings and networks the
// records want, and says the masquerade range holds. Masqueraded flows
// whose port lies outside this agent's range (a range changed since they
// started) go first: a reply to them would skip the snat lookup.
func (a *Agent) enablePrefilter(cfg maps.ConfigValue, bindings []maps.Binding) error {
	dropped, err := maps.NewSNAT(a.dp.Maps.SNAT).DeleteOutsidePorts(a.snatPorts.First, a.snatPorts.Last)
	if err != nil {
		return fmt.Errorf("drop masqueraded flows outside %s: %w", a.snatPorts, err)
	}
	if dropped > 0 {
		a.log.Info("dropped masqueraded flows from an earlier masquerade port range", "flows", dropped, "snat_ports", a.snatPorts.String())
	}
	var bits maps.PrefilterBits
	bindingBits := new(maps.BindingFilterBits)
	for _, b := range bindings {
		bits.AddBinding(b)
		bindingBits.AddBinding(b)
	}
	for _, n := range a.st.networks {
		for _, sub := range n.subnets() {
			bits.AddNetwork(sub.Subnet)
		}
	}
	if err := maps.NewPrefilter(a.dp.Maps.Prefilter).Write(&bits); err != nil {
		return fmt.Errorf("write the datapath's prefilter: %w", err)
	}
	if err := maps.NewBindingFilter(a.dp.Maps.BindingFilter).Write(bindingBits); err != nil {
		return fmt.Errorf("write the datapath's binding filter: %w", err)
	}
	cfg.Flags |= maps.ConfigSNATInRange
	return maps.NewConfig(a.dp.Maps.Config).Set(cfg)
}
