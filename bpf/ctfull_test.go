package bpf_test

import (
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/pontoon-net/pontoon/bpf"
	"github.com/pontoon-net/pontoon/maps"
)

// TestDropCTFull: a new flow whose entry the kernel refuses is dropped,
// counted as drop_ct_full and written to the ring, never DNATed without
// state (its replies would leave untranslated). No packet makes the real
// ct_new refuse: it is an LRU, which evicts an unanswered flow instead,
// and fails only when it finds no node to free (-ENOMEM) or a bucket lock
// is held by a BPF program that interrupted another on the same CPU
// (-EBUSY). A ct_new that is a full plain hash stands in for those here.
func TestDropCTFull(t *testing.T) {
	o := loadObjectsWith(t, func(spec *ebpf.CollectionSpec) {
		ctNew := spec.Maps["ct_new"]
		ctNew.Type, ctNew.MaxEntries = ebpf.Hash, 1
	})
	rd, err := ringbuf.NewReader(o.Events)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	p80 := maps.Binding{Proto: maps.TCP, Host: ap(hostIP, 80), Backend: ap(backend, 80), ID: 21}
	other := maps.CTEntry{Proto: maps.TCP, Backend: ap(backend, 80), Client: ap(notHost, 1234), Dialled: p80.Host, BindingID: 21}
	seedFlow(t, o, flowSeed{seed: seed{bindings: []maps.Binding{p80}, hostAddrs: []netip.Addr{hostIP}}, ctNew: []maps.CTEntry{other}})
	setEvents(t, o, true)
	defer setEvents(t, o, false)
	drainEvents(t, rd)
	zeroStats(t, o.Stats)

	in := tcpFrame(t, clientPort, p80.Host, syn)
	if ret, _ := run(t, o.UplinkIngress, in); ret != 2 { // TC_ACT_SHOT
		t.Errorf("returned %#x, want TC_ACT_SHOT", ret)
	}
	stats, err := maps.NewStats(o.Stats).Read()
	if err != nil {
		t.Fatal(err)
	}
	if got := nonZero(stats); len(got) != 1 || got["drop_ct_full"] != 1 {
		t.Errorf("counters %v, want drop_ct_full once", got)
	}
	got := drainEvents(t, rd)
	if len(got) != 1 {
		t.Fatalf("%d events, want the drop: %+v", len(got), got)
	}
	if e := got[0].View(); e.Type != "drop" || e.Reason != "drop_ct_full" || e.Source != clientPort || e.Destination != p80.Host {
		t.Errorf("event %q, want a drop drop_ct_full of %s -> %s", e, clientPort, p80.Host)
	}
}

// loadObjectsWith is loadObjects with the spec changed first.
func loadObjectsWith(t *testing.T, change func(*ebpf.CollectionSpec)) *objects {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs and BPF_PROG_TEST_RUN need root")
	}
	spec, err := bpf.LoadForKernel(bpf.LoadTcUplink)
	if err != nil {
		t.Fatal(err)
	}
	change(spec)
	var o objects
	if err := spec.LoadAndAssign(&o.TcUplinkObjects, nil); err != nil {
		t.Fatalf("load tc_uplink: %+v", err)
	}
	t.Cleanup(func() { o.Close() })
	return &o
}
