package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/pontoon-net/pontoon/maps"
)

// Monitor stream messages besides the datapath's events: "start" once
// the datapath writes events for this client, "lost" when events were
// not delivered (the datapath's per-CPU budget, a full ring, or this
// client reading too slowly), with how many since the last report.
const (
	MonitorStart = "start"
	MonitorLost  = "lost"
)

// MonitorMessage is one line of the monitor stream.
type MonitorMessage struct {
	maps.Event
	Lost uint64 `json:"lost,omitempty"`
}

func (m MonitorMessage) String() string {
	switch m.Type {
	case MonitorStart:
		return "monitoring the datapath's events (Ctrl-C stops)"
	case MonitorLost:
		return "lost     " + strconv.FormatUint(m.Lost, 10) + " events (rate limit, or the reader fell behind)"
	}
	return m.Event.String()
}

// monitorFilter says which events a client wants.
type monitorFilter struct {
	endpoint netip.Addr // only events naming this address; invalid: all
	drops    bool       // only drops
}

func (f monitorFilter) match(e maps.Event) bool {
	if f.drops && e.Type != "drop" {
		return false
	}
	if !f.endpoint.IsValid() {
		return true
	}
	for _, a := range e.Addrs() {
		if a == f.endpoint {
			return true
		}
	}
	return false
}

type monitorSub struct {
	filter monitorFilter
	ch     chan maps.Event
	lost   atomic.Uint64 // events this client's full queue turned away
}

// monitorHub fans the ring buffer's events out to the connected clients.
// The datapath writes events only while one is connected (the config
// flag ConfigEvents), so nobody listening costs nothing.
type monitorHub struct {
	mu        sync.Mutex
	subs      map[*monitorSub]bool
	closed    bool
	listeners atomic.Int32
}

func (h *monitorHub) add(f monitorFilter) (*monitorSub, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	if h.subs == nil {
		h.subs = map[*monitorSub]bool{}
	}
	s := &monitorSub{filter: f, ch: make(chan maps.Event, 1024)}
	h.subs[s] = true
	h.listeners.Add(1)
	return s, true
}

func (h *monitorHub) remove(s *monitorSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[s] {
		delete(h.subs, s)
		h.listeners.Add(-1)
		if !h.closed {
			close(s.ch)
		}
	}
}

// publish hands an event to every client that wants it, never waiting
// for one: a client that falls behind loses events, counted.
func (h *monitorHub) publish(e maps.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if !s.filter.match(e) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			s.lost.Add(1)
		}
	}
}

// close ends every client's stream: the agent is stopping.
func (h *monitorHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for s := range h.subs {
		close(s.ch)
	}
}

// setEventsFlag makes the datapath's CONFIG_F_EVENTS say whether anyone
// listens. It reads the count under a.mu, as reconcile does, so
// concurrent connects and disconnects settle on the right value.
func (a *Agent) setEventsFlag() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cfg := maps.NewConfig(a.dp.Maps.Config)
	v, err := cfg.Get()
	if err != nil {
		return err
	}
	want := v.Flags &^ maps.ConfigEvents
	if a.events.listeners.Load() > 0 {
		want |= maps.ConfigEvents
	}
	if want == v.Flags {
		return nil
	}
	v.Flags = want
	return cfg.Set(v)
}

// eventsFlag is the ConfigEvents bit reconcile keeps in the config.
func (a *Agent) eventsFlag() uint32 {
	if a.events.listeners.Load() > 0 {
		return maps.ConfigEvents
	}
	return 0
}

// readEvents reads the ring buffer until ctx ends, handing each event to
// the hub. Records written while nobody listened (left by an earlier
// agent) go to nobody.
func (a *Agent) readEvents(ctx context.Context) {
	if a.dp.Maps.Events == nil {
		return
	}
	rd, err := ringbuf.NewReader(a.dp.Maps.Events)
	if err != nil {
		a.log.Warn("no datapath events for 'pontoon monitor'", "err", err)
		return
	}
	go func() {
		<-ctx.Done()
		rd.Close()
	}()
	var rec ringbuf.Record
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if !errors.Is(err, os.ErrClosed) {
				a.log.Warn("read datapath events", "err", err)
			}
			return
		}
		raw, err := maps.ParseRawEvent(rec.RawSample)
		if err != nil {
			a.log.Warn("read datapath events", "err", err)
			continue
		}
		a.events.publish(raw.View())
	}
}

// serveMonitor streams events, one JSON object per line, until the client
// goes away or the agent stops.
func (a *Agent) serveMonitor(w http.ResponseWriter, r *http.Request) {
	f := monitorFilter{drops: r.URL.Query().Get("drops") == "true"}
	if name := r.URL.Query().Get("endpoint"); name != "" {
		a.mu.Lock()
		e := a.st.endpoints[name]
		a.mu.Unlock()
		if e == nil {
			writeError(w, kindf(ErrNotFound, "no endpoint %s; list them with 'pontoon endpoint ls'", name))
			return
		}
		f.endpoint = e.IP
	}
	sub, ok := a.events.add(f)
	if !ok {
		writeError(w, kindf(ErrUnavailable, "the agent is stopping; run 'pontoon monitor' again once it is back"))
		return
	}
	defer func() {
		a.events.remove(sub)
		if err := a.setEventsFlag(); err != nil {
			a.log.Warn("turn datapath events off", "err", err)
		}
	}()
	if err := a.setEventsFlag(); err != nil {
		writeError(w, err)
		return
	}
	losses := func() uint64 {
		l, err := maps.ReadEventLosses(a.dp.Maps.EventBudget)
		if err != nil {
			return 0
		}
		return l.Suppressed + l.RingFull
	}
	reported := losses()

	w.Header().Set("Content-Type", "application/x-ndjson")
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	send := func(m MonitorMessage) bool { return enc.Encode(m) == nil }
	if !send(MonitorMessage{Event: maps.Event{Type: MonitorStart}}) || rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case e, ok := <-sub.ch:
			if !ok {
				return
			}
			if !send(MonitorMessage{Event: e}) {
				return
			}
			// Flush once the queue is empty: a burst is one write.
			if len(sub.ch) == 0 && rc.Flush() != nil {
				return
			}
		case <-tick.C:
			// Losses are the datapath's (shared by every client) plus
			// this client's own.
			now := losses() + sub.lost.Load()
			if now > reported {
				if !send(MonitorMessage{Event: maps.Event{Type: MonitorLost}, Lost: now - reported}) || rc.Flush() != nil {
					return
				}
				reported = now
			}
		}
	}
}

// idleFlowEnds is what the conntrack GC calls with each flow it takes, or
// nil when nobody listens. A TCP flow the datapath saw close had its end
// event then; the others (UDP, ICMP, TCP gone quiet) end here.
func (a *Agent) idleFlowEnds(now time.Duration) func(maps.CTEntry) {
	if a.events.listeners.Load() == 0 {
		return nil
	}
	return func(e maps.CTEntry) {
		if e.Proto == maps.TCP && e.TCPFlags&(maps.CTTCPFin|maps.CTTCPRst) != 0 {
			return
		}
		a.events.publish(e.IdleEnd(now))
	}
}

// idleMasqueradeEnds is idleFlowEnds for the snat GC. A hairpinned flow
// (its server a container of ours) has entries there too; its events
// are the published flow's, from ct.
func (a *Agent) idleMasqueradeEnds(now time.Duration) func(maps.SNATFlow) {
	if a.events.listeners.Load() == 0 {
		return nil
	}
	networks := maps.NewNetworks(a.dp.Maps.Networks)
	return func(f maps.SNATFlow) {
		if f.Key.Proto == maps.TCP && f.Value.TCPFlags&(maps.CTTCPFin|maps.CTTCPRst) != 0 {
			return
		}
		e := f.IdleEnd(now)
		if networks.Contains(e.Destination.Addr()) {
			return
		}
		a.events.publish(e)
	}
}
