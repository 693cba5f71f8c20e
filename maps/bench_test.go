package maps_test

import (
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pontoon-net/pontoon/bpf"
	"github.com/pontoon-net/pontoon/maps"
)

const publishCount = 65536

// newBindingsMap creates an unpinned bindings map exactly as the object
// declares it (HASH, BPF_F_NO_PREALLOC, same key and value).
func newBindingsMap(b *testing.B) *ebpf.Map {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("creating BPF maps needs root")
	}
	spec, err := bpf.LoadForKernel(bpf.LoadTcUplink)
	if err != nil {
		b.Fatal(err)
	}
	ms, ok := spec.Maps[bpf.TcUplinkMapBindings]
	if !ok {
		b.Fatal("object has no bindings map")
	}
	m, err := ebpf.NewMap(ms.Copy())
	if err != nil {
		b.Fatalf("create bindings map: %v", err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// publishSet is 65,536 bindings: TCP and UDP ports 1-32768 of one host
// address, as "-p 1-32768:1-32768" for both protocols would publish.
func publishSet(b *testing.B) []maps.Binding {
	b.Helper()
	host := netip.MustParseAddr("192.0.2.1")
	backend := netip.MustParseAddr("172.18.0.2")
	var out []maps.Binding
	for i, proto := range []maps.Proto{maps.TCP, maps.UDP} {
		bs, err := maps.PortRange(proto, host, 1, publishCount/2, backend, 1, uint32(i+1))
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, bs...)
	}
	if len(out) != publishCount {
		b.Fatalf("built %d bindings, want %d", len(out), publishCount)
	}
	return out
}

func keysOf(bs []maps.Binding) []maps.BindingKey {
	keys := make([]maps.BindingKey, len(bs))
	for i, bd := range bs {
		keys[i] = bd.Key()
	}
	return keys
}

func countBindings(b *testing.B, m *ebpf.Map) int {
	b.Helper()
	all, err := maps.NewBindings(m).All()
	if err != nil {
		b.Fatal(err)
	}
	return len(all)
}

// BenchmarkPublish65536 times publishing 65,536 bindings into an empty map
// with one PutBatch; emptying the map again is left out of the timing.
func BenchmarkPublish65536(b *testing.B) {
	m := newBindingsMap(b)
	bm := maps.NewBindings(m)
	set := publishSet(b)
	keys := keysOf(set)

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := bm.PutBatch(set); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if i == 0 {
			if n := countBindings(b, m); n != publishCount {
				b.Fatalf("map holds %d bindings after PutBatch, want %d", n, publishCount)
			}
		}
		if err := bm.DeleteBatch(keys); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	if n := countBindings(b, m); n != 0 {
		b.Fatalf("map holds %d bindings after DeleteBatch, want 0", n)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/publishCount, "ns/binding")
}

// fullMap returns a bindings map already holding the 65,536 bindings and a
// binding that is not among them.
func fullMap(b *testing.B) (*maps.Bindings, maps.Binding) {
	m := newBindingsMap(b)
	bm := maps.NewBindings(m)
	if err := bm.PutBatch(publishSet(b)); err != nil {
		b.Fatal(err)
	}
	extra := maps.Binding{
		Proto:   maps.TCP,
		Host:    netip.MustParseAddrPort("192.0.2.1:40000"),
		Backend: netip.MustParseAddrPort("172.18.0.3:80"),
		ID:      9,
	}
	return bm, extra
}

// BenchmarkPutOneAt65536 times publishing one more port on a host that has
// 65,536 published already.
func BenchmarkPutOneAt65536(b *testing.B) {
	bm, extra := fullMap(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := bm.Put(extra); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := bm.Delete(extra.Proto, extra.Host); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	if _, err := bm.Lookup(extra.Proto, extra.Host); err == nil {
		b.Fatal("extra binding still present after its delete")
	}
}

// BenchmarkDeleteOneAt65536 times unpublishing one port out of 65,537.
func BenchmarkDeleteOneAt65536(b *testing.B) {
	bm, extra := fullMap(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := bm.Put(extra); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := bm.Delete(extra.Proto, extra.Host); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if _, err := bm.Lookup(extra.Proto, extra.Host); err == nil {
		b.Fatal("extra binding still present after Delete")
	}
}
