package ipam

import (
	"math/rand/v2"
	"testing"
)

// naive is the obviously correct model the bitmap searches are held to.
type naive []bool

func (m naive) nextClear(o naive, from, to uint32) (uint32, bool) {
	for i := from; i <= to && int(i) < len(m); i++ {
		if !m[i] && (o == nil || !o[i]) {
			return i, true
		}
	}
	return 0, false
}

func (m naive) clearRun(o naive, from, to, n uint32) (uint32, bool) {
	for s := from; s <= to && to-s >= n-1; s++ {
		ok := true
		for i := s; i < s+n; i++ {
			if m[i] || (o != nil && o[i]) {
				ok = false
				break
			}
		}
		if ok {
			return s, true
		}
	}
	return 0, false
}

func (m naive) nextSet(o naive, from, to uint32) (uint32, bool) {
	for i := from; i <= to; i++ {
		if m[i] || (o != nil && o[i]) {
			return i, true
		}
	}
	return 0, false
}

// checkBitmapOps drives a bitmap pair and the model with ops and compares
// every search. Each op is 5 bytes: kind, two positions, a length.
func checkBitmapOps(t *testing.T, size uint32, ops []byte) {
	b, o := newBitmap(size), newBitmap(size)
	mb, mo := make(naive, size), make(naive, size)
	pos := func(x, y byte) uint32 { return (uint32(x)<<8 | uint32(y)) % size }
	for len(ops) >= 5 {
		kind, p, q, n := ops[0], pos(ops[1], ops[2]), pos(ops[3], ops[2]^ops[1]), uint32(ops[4]%9)+1
		ops = ops[5:]
		lo, hi := min(p, q), max(p, q)
		switch kind % 8 {
		case 0:
			b.set(p)
			mb[p] = true
		case 1:
			b.clear(p)
			mb[p] = false
		case 2:
			b.setRange(lo, hi)
			for i := lo; i <= hi; i++ {
				mb[i] = true
			}
		case 3:
			b.clearRange(lo, hi)
			for i := lo; i <= hi; i++ {
				mb[i] = false
			}
		case 4:
			o.setRange(lo, hi)
			for i := lo; i <= hi; i++ {
				mo[i] = true
			}
		case 5:
			o.clear(p)
			mo[p] = false
		}
		for _, other := range []bool{false, true} {
			ob, om := (*bitmap)(nil), naive(nil)
			if other {
				ob, om = o, mo
			}
			gi, gok := nextClear(b, ob, lo, hi)
			wi, wok := mb.nextClear(om, lo, hi)
			if gi != wi && wok || gok != wok {
				t.Fatalf("nextClear(%d, %d, other=%v) = %d %v, want %d %v", lo, hi, other, gi, gok, wi, wok)
			}
			gi, gok = nextSet(b, ob, lo, hi)
			wi, wok = mb.nextSet(om, lo, hi)
			if gi != wi && wok || gok != wok {
				t.Fatalf("nextSet(%d, %d, other=%v) = %d %v, want %d %v", lo, hi, other, gi, gok, wi, wok)
			}
			gi, gok = clearRun(b, ob, lo, hi, n)
			wi, wok = mb.clearRun(om, lo, hi, n)
			if gi != wi && wok || gok != wok {
				t.Fatalf("clearRun(%d, %d, %d, other=%v) = %d %v, want %d %v", lo, hi, n, other, gi, gok, wi, wok)
			}
		}
		if got := b.has(p); got != mb[p] {
			t.Fatalf("has(%d) = %v, want %v", p, got, mb[p])
		}
	}
	// The summary must agree with the words it sums up.
	for w, x := range b.words {
		full := b.full[w/64]&(1<<(w%64)) != 0
		if full != (x == ^uint64(0)) {
			t.Fatalf("word %d = %x but its summary bit says full=%v", w, x, full)
		}
	}
}

func TestBitmapAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, size := range []uint32{4, 64, 100, 4096, 1 << 16} {
		for range 20 {
			ops := make([]byte, 5*300)
			for i := range ops {
				ops[i] = byte(r.Uint32())
			}
			checkBitmapOps(t, size, ops)
		}
	}
}

func TestBitmapSummarySkipsFullWords(t *testing.T) {
	b := newBitmap(1 << 16)
	b.setRange(0, 65534)
	if got, ok := nextClear(b, nil, 0, 65535); !ok || got != 65535 {
		t.Errorf("nextClear in a full map = %d %v, want 65535", got, ok)
	}
	for w := range 1023 {
		if b.full[w/64]&(1<<(w%64)) == 0 {
			t.Fatalf("word %d is full but not marked so", w)
		}
	}
	b.clear(100)
	if got, ok := nextClear(b, nil, 0, 65535); !ok || got != 100 {
		t.Errorf("after clearing 100, nextClear = %d %v", got, ok)
	}
	// Bits past the size read as taken.
	small := newBitmap(4)
	small.setRange(0, 3)
	if small.full[0] != 1 {
		t.Errorf("a full 4-bit map is not marked full")
	}
}

func FuzzBitmap(f *testing.F) {
	f.Add(uint16(100), []byte{2, 0, 1, 0, 80, 0, 0, 5, 0, 3})
	f.Add(uint16(65535), []byte{4, 255, 255, 0, 0, 1, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, size uint16, ops []byte) {
		checkBitmapOps(t, uint32(size)+1, ops)
	})
}
