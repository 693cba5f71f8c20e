package control

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/maps"
)

func TestSplitOf(t *testing.T) {
	r := func(first, last uint16) ipam.PortRange { return ipam.PortRange{First: first, Last: last} }
	all := &PortMapping{Proto: "udp", Host: r(1, 65535), Container: r(1, 65535)}
	shifted := &PortMapping{Proto: "tcp", Host: r(8000, 8009), Container: r(9000, 9009)}
	for _, c := range []struct {
		m                *PortMapping
		spec             string
		whole            bool
		removedH, removC ipam.PortRange
		keptH            []ipam.PortRange
	}{
		{all, "81/udp", false, r(81, 81), r(81, 81), []ipam.PortRange{r(1, 80), r(82, 65535)}},
		{all, "1/udp", false, r(1, 1), r(1, 1), []ipam.PortRange{r(2, 65535)}},
		{all, "65000-65535/udp", false, r(65000, 65535), r(65000, 65535), []ipam.PortRange{r(1, 64999)}},
		{all, "1-65535/udp", true, r(0, 0), r(0, 0), nil},
		{shifted, "9005", false, r(8005, 8005), r(9005, 9005), []ipam.PortRange{r(8000, 8004), r(8006, 8009)}},
		{shifted, "8008-8020:9008-9020", false, r(8008, 8009), r(9008, 9009), []ipam.PortRange{r(8000, 8007)}},
		{shifted, "8000:9000", false, r(8000, 8000), r(9000, 9000), []ipam.PortRange{r(8001, 8009)}},
		{shifted, "8990-9100", true, r(0, 0), r(0, 0), nil},
	} {
		spec, err := ParsePortSpec(c.spec)
		if err != nil {
			t.Fatal(err)
		}
		s, split := splitOf(c.m, spec)
		if split == c.whole {
			t.Errorf("%s of %s: split %v, want %v", c.spec, c.m.Host, split, !c.whole)
			continue
		}
		if c.whole {
			continue
		}
		var kept []ipam.PortRange
		for _, k := range s.kept {
			kept = append(kept, k.Host)
			if int(k.Container.First)-int(k.Host.First) != int(c.m.Container.First)-int(c.m.Host.First) || k.Container.Len() != k.Host.Len() {
				t.Errorf("%s: kept part %s -> %s does not keep the mapping's offset", c.spec, k.Host, k.Container)
			}
		}
		if s.removed.Host != c.removedH || s.removed.Container != c.removC || !slices.Equal(kept, c.keptH) {
			t.Errorf("%s of %s: removed %s -> %s, kept %v; want %s -> %s, kept %v", c.spec, c.m.Host, s.removed.Host, s.removed.Container, kept, c.removedH, c.removC, c.keptH)
		}
	}
}

// TestUnpublishSplitsRange: unpublishing one port of a published range
// removes that port's binding, record, allocation and flows alone; the
// ports either side stay in the map, the state file and ipam.
func TestUnpublishSplitsRange(t *testing.T) {
	a := testAgent(t)
	a.dp.Maps.CT = newHashMap(t, maps.CTKey{}, maps.CTValue{})
	a.dp.Maps.CTNew = newHashMap(t, maps.CTKey{}, maps.CTValue{})
	ms, err := a.Publish(PublishRequest{Endpoint: "web", Specs: []string{"8000-8009:9000-9009/udp"}})
	if err != nil {
		t.Fatal(err)
	}
	oldID := ms[0].ID
	// A flow on each of 8004, 8005 and 8006.
	for _, p := range []uint16{8004, 8005, 8006} {
		k := maps.CTKey{Proto: maps.UDP, Sport: p}
		v := maps.CTValue{NatPort: binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, p)), BindingID: oldID}
		if err := a.dp.Maps.CT.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}

	out, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "9005/udp"})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Host != ipam.Port(8005) || out[0].Container != ipam.Port(9005) {
		t.Fatalf("unpublish returned %+v, want 8005 -> 9005 alone", out)
	}

	bs, err := a.bindings.All()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[uint16]uint32{}
	for _, b := range bs {
		ids[b.Host.Port()] = b.ID
		if int(b.Backend.Port())-int(b.Host.Port()) != 1000 {
			t.Errorf("binding %s points at backend port %d", b.Host, b.Backend.Port())
		}
	}
	if len(bs) != 9 || ids[8005] != 0 {
		t.Errorf("bindings %v: want 8000-8009 but 8005", bs)
	}
	if ids[8000] == oldID || ids[8009] == oldID || ids[8000] == ids[8009] || ids[8000] != ids[8004] || ids[8006] != ids[8009] {
		t.Errorf("binding ids %v: want a new id for 8000-8004 and another for 8006-8009 (old %d)", ids, oldID)
	}

	counters, err := maps.NewBindingStats(a.dp.Maps.BindingStats).All()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := counters[ids[8000]]; !ok {
		t.Errorf("no traffic counters for the new id %d of 8000-8004: %v", ids[8000], counters)
	}
	if _, ok := counters[ids[8009]]; !ok {
		t.Errorf("no traffic counters for the new id %d of 8006-8009: %v", ids[8009], counters)
	}

	want := []ipam.PortRange{{First: 8000, Last: 8004}, {First: 8006, Last: 8009}}
	st, err := loadState(a.store)
	if err != nil {
		t.Fatal(err)
	}
	var saved, mem []ipam.PortRange
	for _, m := range st.ports {
		saved = append(saved, m.Host)
	}
	for _, m := range a.st.ports {
		mem = append(mem, m.Host)
	}
	var held []ipam.PortRange
	for _, pa := range a.ipam.Ports("web") {
		held = append(held, pa.Ports)
	}
	for what, got := range map[string][]ipam.PortRange{"state file": saved, "memory": mem, "ipam": held} {
		slices.SortFunc(got, func(x, y ipam.PortRange) int { return int(x.First) - int(y.First) })
		if !slices.Equal(got, want) {
			t.Errorf("%s holds %v, want %v", what, got, want)
		}
	}
	if st.nextID != a.st.nextID || a.st.nextID != oldID+3 {
		t.Errorf("next id %d (saved %d), want %d", a.st.nextID, st.nextID, oldID+3)
	}

	flows, err := maps.NewCT(a.dp.Maps.CT).All()
	if err != nil {
		t.Fatal(err)
	}
	var ports []uint16
	for _, f := range flows {
		ports = append(ports, f.Dialled.Port())
	}
	slices.Sort(ports)
	if !slices.Equal(ports, []uint16{8004, 8006}) {
		t.Errorf("flows left on ports %v, want 8004 and 8006", ports)
	}

	// The rest goes whole, both parts at once.
	out, err = a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "9000-9009/udp"})
	if err != nil || len(out) != 2 {
		t.Fatalf("unpublish the rest: %v %+v", err, out)
	}
	if bs, _ := a.bindings.All(); len(bs) != 0 || len(a.ipam.Ports("")) != 0 || len(a.st.ports) != 0 {
		t.Errorf("left: bindings %v, ipam %v, mappings %d", bs, a.ipam.Ports(""), len(a.st.ports))
	}
}
