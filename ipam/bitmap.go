package ipam

import "math/bits"

// bitmap is a fixed-size bit set (1 = taken) with one summary bit per 64-bit
// word that is full, so a search for a free bit in a nearly full map skips
// 4096 taken positions per summary word instead of testing them.
type bitmap struct {
	words []uint64
	full  []uint64
}

func newBitmap(n uint32) *bitmap {
	nw := (n + 63) / 64
	b := &bitmap{words: make([]uint64, nw), full: make([]uint64, (nw+63)/64)}
	// Bits past n read as taken, so a short last word can still be full.
	if r := n % 64; r != 0 {
		b.words[nw-1] = ^uint64(0) << r
	}
	return b
}

func (b *bitmap) has(i uint32) bool {
	return b.words[i>>6]&(1<<(i&63)) != 0
}

func (b *bitmap) set(i uint32) {
	w := i >> 6
	b.words[w] |= 1 << (i & 63)
	if b.words[w] == ^uint64(0) {
		b.full[w>>6] |= 1 << (w & 63)
	}
}

func (b *bitmap) clear(i uint32) {
	w := i >> 6
	b.words[w] &^= 1 << (i & 63)
	b.full[w>>6] &^= 1 << (w & 63)
}

// wordMask has the bits of word w that fall in [first, last].
func wordMask(w, first, last uint32) uint64 {
	m := ^uint64(0)
	if first > w<<6 {
		m <<= first & 63
	}
	if last < w<<6+63 {
		m &= ^uint64(0) >> (63 - last&63)
	}
	return m
}

// setRange sets bits first..last, a word at a time.
func (b *bitmap) setRange(first, last uint32) {
	for w := first >> 6; w <= last>>6; w++ {
		b.words[w] |= wordMask(w, first, last)
		if b.words[w] == ^uint64(0) {
			b.full[w>>6] |= 1 << (w & 63)
		}
	}
}

// clearRange clears bits first..last, a word at a time.
func (b *bitmap) clearRange(first, last uint32) {
	for w := first >> 6; w <= last>>6; w++ {
		b.words[w] &^= wordMask(w, first, last)
		b.full[w>>6] &^= 1 << (w & 63)
	}
}

// word is word w of b or o; a position is free only when free in both.
func word(b, o *bitmap, w uint32) uint64 {
	if o == nil {
		return b.words[w]
	}
	return b.words[w] | o.words[w]
}

// nextOpenWord returns the first word index in [w, last] that neither b nor
// o marks full, or a value above last. A word full only in the union of the
// two is returned too; the caller's word test catches it.
func nextOpenWord(b, o *bitmap, w, last uint32) uint32 {
	for w <= last {
		s := w >> 6
		sum := b.full[s]
		if o != nil {
			sum |= o.full[s]
		}
		sum |= 1<<(w&63) - 1
		if sum != ^uint64(0) {
			return s<<6 + uint32(bits.TrailingZeros64(^sum))
		}
		w = (s + 1) << 6
	}
	return last + 1
}

// nextClear returns the first position in [from, to] free in both b and o
// (o may be nil).
func nextClear(b, o *bitmap, from, to uint32) (uint32, bool) {
	if from > to {
		return 0, false
	}
	last := to >> 6
	w := from >> 6
	x := word(b, o, w) | (1<<(from&63) - 1)
	for {
		if x != ^uint64(0) {
			i := w<<6 + uint32(bits.TrailingZeros64(^x))
			return i, i <= to
		}
		if w = nextOpenWord(b, o, w+1, last); w > last {
			return 0, false
		}
		x = word(b, o, w)
	}
}

// nextSet returns the first position in [from, to] taken in b or o.
func nextSet(b, o *bitmap, from, to uint32) (uint32, bool) {
	if from > to {
		return 0, false
	}
	last := to >> 6
	w := from >> 6
	x := word(b, o, w) &^ (1<<(from&63) - 1)
	for {
		if x != 0 {
			i := w<<6 + uint32(bits.TrailingZeros64(x))
			return i, i <= to
		}
		if w++; w > last {
			return 0, false
		}
		x = word(b, o, w)
	}
}

// clearRun returns the first start of n consecutive positions inside
// [from, to] free in both b and o. n must be at least 1.
func clearRun(b, o *bitmap, from, to, n uint32) (uint32, bool) {
	for from <= to {
		s, ok := nextClear(b, o, from, to)
		if !ok || to-s < n-1 {
			return 0, false
		}
		u, taken := nextSet(b, o, s, s+n-1)
		if !taken {
			return s, true
		}
		from = u + 1
	}
	return 0, false
}
