package ipam

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// checkAddrSets drives a bitmapSet and a spanSet over the same small IPv6
// subnet with the same ops; they must agree on every answer. Each op is 3
// bytes: kind and two offsets.
func checkAddrSets(t *testing.T, ops []byte) {
	p := mustPrefix("fd00:7::/120")
	bm := newAddrSet(p)
	sp := &spanSet{}
	at := func(b byte) netip.Addr { return bm.(*bitmapSet).addr(uint32(b)) }
	for len(ops) >= 3 {
		kind, x, y := ops[0], at(ops[1]), at(ops[2])
		ops = ops[3:]
		switch kind % 3 {
		case 0:
			bm.add(x)
			sp.add(x)
		case 1:
			bm.remove(x)
			sp.remove(x)
		}
		if bm.has(x) != sp.has(x) {
			t.Fatalf("has(%s): bitmap %v, spans %v", x, bm.has(x), sp.has(x))
		}
		lo, hi := x, y
		if lo.Compare(hi) > 0 {
			lo, hi = hi, lo
		}
		ga, gok := sp.nextFree(lo, hi)
		wa, wok := bm.nextFree(lo, hi)
		if ga != wa || gok != wok {
			t.Fatalf("nextFree(%s, %s): spans %s %v, bitmap %s %v", lo, hi, ga, gok, wa, wok)
		}
		for i := 1; i < len(sp.spans); i++ {
			if sp.spans[i-1].hi.Next().Compare(sp.spans[i].lo) >= 0 {
				t.Fatalf("spans %v and %v touch or overlap", sp.spans[i-1], sp.spans[i])
			}
		}
	}
}

func TestSpanSetAgainstBitmap(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 50 {
		ops := make([]byte, 3*400)
		for i := range ops {
			ops[i] = byte(r.Uint32())
		}
		checkAddrSets(t, ops)
	}
}

func TestSpanSetAtTheEndOfTheAddressSpace(t *testing.T) {
	s := &spanSet{}
	top := mustAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
	s.add(top)
	s.add(top.Prev())
	if _, ok := s.nextFree(top.Prev(), top); ok {
		t.Error("nextFree found room past the last address")
	}
	if len(s.spans) != 1 {
		t.Errorf("two touching addresses make %d spans, want 1", len(s.spans))
	}
	s.remove(top)
	if got, ok := s.nextFree(top.Prev(), top); !ok || got != top {
		t.Errorf("nextFree after removing the top = %s %v", got, ok)
	}
}

func FuzzAddrSets(f *testing.F) {
	f.Add([]byte{0, 1, 9, 0, 2, 9, 1, 1, 9, 0, 255, 0})
	f.Fuzz(func(t *testing.T, ops []byte) { checkAddrSets(t, ops) })
}
