package ipam

import (
	"net/netip"
	"slices"
)

// spanSet holds taken addresses as sorted, disjoint, non-touching runs. An
// IPv6 /64 costs memory per run, not per address, and next-fit allocation
// mostly grows the last run, so the slice stays short.
type spanSet struct {
	spans []span
}

type span struct{ lo, hi netip.Addr }

// find returns the index of the last span starting at or below a, or -1.
func (s *spanSet) find(a netip.Addr) int {
	i, _ := slices.BinarySearchFunc(s.spans, a, func(sp span, a netip.Addr) int {
		if sp.lo.Compare(a) <= 0 {
			return -1
		}
		return 1
	})
	return i - 1
}

func (s *spanSet) has(a netip.Addr) bool {
	i := s.find(a)
	return i >= 0 && a.Compare(s.spans[i].hi) <= 0
}

func (s *spanSet) add(a netip.Addr) {
	i := s.find(a)
	if i >= 0 && a.Compare(s.spans[i].hi) <= 0 {
		return
	}
	joinPrev := i >= 0 && s.spans[i].hi.Next() == a
	joinNext := i+1 < len(s.spans) && a.Next() == s.spans[i+1].lo
	switch {
	case joinPrev && joinNext:
		s.spans[i].hi = s.spans[i+1].hi
		s.spans = slices.Delete(s.spans, i+1, i+2)
	case joinPrev:
		s.spans[i].hi = a
	case joinNext:
		s.spans[i+1].lo = a
	default:
		s.spans = slices.Insert(s.spans, i+1, span{a, a})
	}
}

func (s *spanSet) remove(a netip.Addr) {
	i := s.find(a)
	if i < 0 || a.Compare(s.spans[i].hi) > 0 {
		return
	}
	sp := s.spans[i]
	switch {
	case sp.lo == sp.hi:
		s.spans = slices.Delete(s.spans, i, i+1)
	case a == sp.lo:
		s.spans[i].lo = a.Next()
	case a == sp.hi:
		s.spans[i].hi = a.Prev()
	default:
		s.spans[i].hi = a.Prev()
		s.spans = slices.Insert(s.spans, i+1, span{a.Next(), sp.hi})
	}
}

func (s *spanSet) nextFree(from, to netip.Addr) (netip.Addr, bool) {
	if from.Compare(to) > 0 {
		return netip.Addr{}, false
	}
	i := s.find(from)
	if i < 0 || from.Compare(s.spans[i].hi) > 0 {
		return from, true
	}
	// Runs never touch, so the address after a run is free.
	c := s.spans[i].hi.Next()
	if !c.IsValid() || c.Compare(to) > 0 {
		return netip.Addr{}, false
	}
	return c, true
}
