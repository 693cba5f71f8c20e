package ipam

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// BatchError is the failure of one request of a batch; nothing of the
// batch was taken or released.
type BatchError struct {
	Index int // of the request that failed
	Err   error
}

func (e *BatchError) Error() string { return e.Err.Error() }
func (e *BatchError) Unwrap() error { return e.Err }

// AllocatePortsBatch takes the ports of every request, all or none, in
// request order (a later request sees the ports of earlier ones as held).
// The host's sockets are read once per protocol and the records written
// in one store transaction, so a batch of thousands costs about what one
// request does. A failure is a *BatchError naming the request.
//
// with, when not nil, runs inside that transaction with the ports chosen,
// so that the caller's records of them commit or vanish with them; its
// error aborts the batch and is returned as it is.
func (a *Allocator) AllocatePortsBatch(reqs []PortRequest, with func(Tx, []PortAllocation) error) ([]PortAllocation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Indexed by protocol number: no map on the one-request path.
	var sockets [256]hostSockets
	out := make([]PortAllocation, 0, len(reqs))
	undo := portUndo{s: &a.ports}
	if len(reqs) > 0 {
		a.ports.growOwner(reqs[0].Owner, len(reqs))
	}
	// Each request is checked, picked and taken in one pass: a copy of
	// every checked request was most of a 65,535-port fill.
	var first checkedRequest
	for i := 0; i < len(reqs); {
		r, err := a.checkRequest(reqs[i])
		if err == nil && a.checkListening && sockets[r.Proto] == nil {
			sockets[r.Proto], err = a.sockets(r.Proto)
			if err != nil {
				err = fmt.Errorf("allocate %s: check listening ports: %w", r.what(), err)
			}
		}
		var pa PortAllocation
		if err == nil {
			pa, err = a.pick(r, sockets[r.Proto])
		}
		if err != nil {
			undo.rollback(out)
			return nil, &BatchError{i, err}
		}
		if i == 0 {
			first = r
		}
		undo.take(pa, r.dynamic)
		out = append(out, pa)
		i++
		if r.dynamic && r.n == 1 {
			i += a.takeRepeats(reqs[i-1], r, reqs[i:], sockets[r.Proto], &undo, &out)
		}
	}
	var withErr error
	err := a.store.Update(func(tx Tx) error {
		if err := undo.pages.write(tx, &a.ports, nil); err != nil {
			return err
		}
		// Each dynamic pool's cursor once, at its last value: a fill of
		// 65,535 ports writes one cursor, not 65,535.
		for _, c := range undo.cursors {
			if err := tx.Put(bucketPortCursors, poolCursorKey(c.pool.key), binary.BigEndian.AppendUint16(nil, c.pool.cursor)); err != nil {
				return err
			}
		}
		if with != nil {
			withErr = with(tx, out)
		}
		return withErr
	})
	if err != nil {
		undo.rollback(out)
		if withErr != nil {
			return nil, withErr
		}
		if len(out) == 1 {
			return nil, &BatchError{0, fmt.Errorf("allocate %s: %w", first.what(), err)}
		}
		return nil, fmt.Errorf("allocate %d port ranges: %w", len(out), err)
	}
	return out, nil
}

// takeRepeats serves the requests at the start of reqs that are the same
// as req, a one-port dynamic request that passed as r and was just taken,
// and returns how many it served. Most of a large publish is such a run
// (one owner, one address, a port each): its requests need no checks of
// their own, and the ports pick would give them one by one are the free
// ones met by one sweep on from the cursor. It stops at the first request
// it cannot serve, which the caller then handles (and fails) as any other.
func (a *Allocator) takeRepeats(req PortRequest, r checkedRequest, reqs []PortRequest, sockets hostSockets, undo *portUndo, out *[]PortAllocation) int {
	n := 0
	for n < len(reqs) && reqs[n] == req {
		n++
	}
	if n == 0 {
		return 0
	}
	return a.ports.takeDynamicRun(undo.last, r.Owner, n, a.dynamic, sockets, &undo.pages, out)
}

// portUndo records what a batch took (as the allocations it returns), so
// a failure gives it back and puts the dynamic cursors where they were,
// and which pages it changed.
type portUndo struct {
	s *portState
	// cursors holds each pool's cursor before the batch; a batch touches
	// a few pools, so a slice beats a map.
	cursors []poolCursor
	last    *portPool // of the previous take: batches run in one pool
	pages   dirtyPages
}

type poolCursor struct {
	pool   *portPool
	cursor uint16
}

// take takes pa, which the caller then appends to the batch's
// allocations.
func (u *portUndo) take(pa PortAllocation, dynamic bool) {
	pool := u.pool(pa)
	if dynamic && !slices.ContainsFunc(u.cursors, func(c poolCursor) bool { return c.pool == pool }) {
		u.cursors = append(u.cursors, poolCursor{pool, pool.cursor})
	}
	u.s.takeIn(pool, pa, dynamic)
	u.pages.mark(pool, pa.Ports.First)
}

// pool is the pool of pa, made if needed.
func (u *portUndo) pool(pa PortAllocation) *portPool {
	if u.last == nil || u.last.key != (poolKey{pa.Proto, pa.HostIP}) {
		u.last = u.s.pool(poolKey{pa.Proto, pa.HostIP})
	}
	return u.last
}

// rollback gives back taken, the batch's allocations so far.
func (u *portUndo) rollback(taken []PortAllocation) {
	for i := len(taken) - 1; i >= 0; i-- {
		pool := u.pool(taken[i])
		u.s.free(makeAllocID(pool, taken[i].Ports.First))
	}
	for _, c := range u.cursors {
		c.pool.cursor = c.cursor
	}
	u.cursors = nil
}

// ReleasePortsBatch frees every allocation of pas that is held exactly as
// given, in one store transaction, and returns those; the others (already
// released, or held as another range) are left alone. with, when not nil,
// runs in the same transaction, as in AllocatePortsBatch.
func (a *Allocator) ReleasePortsBatch(pas []PortAllocation, with func(Tx) error) ([]PortAllocation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var (
		ids []allocID
		out []PortAllocation
	)
	seen := map[allocID]bool{}
	for _, pa := range pas {
		ip := pa.HostIP.Unmap()
		id, al, ok := a.ports.lookup(pa.Proto, ip, pa.Ports.First)
		if !ok || al.last != pa.Ports.Last || seen[id] {
			continue
		}
		seen[id] = true
		ids = append(ids, id)
		out = append(out, a.ports.allocation(id))
	}
	if len(ids) == 0 && with == nil {
		return nil, nil
	}
	var withErr error
	var d dirtyPages
	for _, id := range ids {
		d.markID(&a.ports, id)
	}
	err := a.store.Update(func(tx Tx) error {
		if err := d.write(tx, &a.ports, func(x allocID, _ string) bool { return seen[x] }); err != nil {
			return err
		}
		if with != nil {
			withErr = with(tx)
		}
		return withErr
	})
	if withErr != nil {
		return nil, withErr
	}
	if err != nil {
		return nil, fmt.Errorf("release %d port ranges: %w", len(out), err)
	}
	for _, id := range ids {
		a.ports.free(id)
	}
	return out, nil
}
