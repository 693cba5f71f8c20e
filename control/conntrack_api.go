package control

import (
	"cmp"
	"fmt"
	"net/netip"
	"net/url"
	"slices"

	"github.com/pontoon-net/pontoon/maps"
)

// ConntrackList is every tracked flow, decoded: translated connections
// to published ports, and masqueraded flows of containers.
type ConntrackList struct {
	Flows []maps.CTFlow   `json:"flows"`
	SNAT  []maps.SNATView `json:"snat"`
}

// ConntrackFlush asks to forget tracked flows: those of one binding (its
// translated connections), or with no binding every flow of ct, ct_new
// and snat.
type ConntrackFlush struct {
	BindingID *uint32 `json:"binding_id,omitempty"`
}

// ConntrackFlushed counts the entries a flush deleted.
type ConntrackFlushed struct {
	Conntrack int `json:"conntrack"`
	SNAT      int `json:"snat"`
}

// Conntrack lists the tracked flows, or with endpoint only those whose
// backend or masqueraded container is that endpoint.
func (a *Agent) Conntrack(endpoint string) (*ConntrackList, error) {
	now, lifetimes := maps.MonotonicNow(), conntrackLifetimes()
	var ip netip.Addr
	if endpoint != "" {
		a.mu.Lock()
		e := a.st.endpoints[endpoint]
		a.mu.Unlock()
		if e == nil {
			return nil, kindf(ErrNotFound, "no endpoint %s; list them with 'pontoon endpoint ls'", endpoint)
		}
		ip = e.IP
	}
	out := &ConntrackList{Flows: []maps.CTFlow{}, SNAT: []maps.SNATView{}}
	for _, t := range []struct {
		name string
		ct   *maps.CT
	}{{"ct", maps.NewCT(a.dp.Maps.CT)}, {"ct_new", maps.NewCT(a.dp.Maps.CTNew)}} {
		es, err := t.ct.All()
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", t.name, err)
		}
		for _, e := range es {
			if !ip.IsValid() || e.Backend.Addr() == ip {
				out.Flows = append(out.Flows, e.View(t.name, now, lifetimes))
			}
		}
	}
	snat, err := maps.NewSNAT(a.dp.Maps.SNAT).Flows(now, lifetimes)
	if err != nil {
		return nil, err
	}
	for _, f := range snat {
		if !ip.IsValid() || f.Container.Addr() == ip {
			out.SNAT = append(out.SNAT, f)
		}
	}
	slices.SortFunc(out.Flows, func(x, y maps.CTFlow) int {
		return cmp.Or(cmp.Compare(x.BindingID, y.BindingID), x.Backend.Compare(y.Backend), x.Client.Compare(y.Client), cmp.Compare(x.Proto, y.Proto))
	})
	slices.SortFunc(out.SNAT, func(x, y maps.SNATView) int {
		return cmp.Or(x.Container.Compare(y.Container), x.Server.Compare(y.Server), cmp.Compare(x.Proto, y.Proto))
	})
	return out, nil
}

// FlushConntrack deletes tracked flows; see ConntrackFlush. A binding
// that is neither published nor has flows is refused, so a mistyped id
// does not pass for a flush that found nothing.
func (a *Agent) FlushConntrack(req ConntrackFlush) (*ConntrackFlushed, error) {
	ct := maps.NewCT(a.dp.Maps.CT, a.dp.Maps.CTNew)
	if req.BindingID == nil {
		n, err := ct.Flush()
		if err != nil {
			return nil, fmt.Errorf("flush conntrack: %w", err)
		}
		s, err := maps.NewSNAT(a.dp.Maps.SNAT).Flush()
		if err != nil {
			return nil, fmt.Errorf("flush snat: %w", err)
		}
		a.log.Info("flushed conntrack", "conntrack", n, "snat", s)
		return &ConntrackFlushed{Conntrack: n, SNAT: s}, nil
	}
	id := *req.BindingID
	n, err := ct.DeleteBinding(id)
	if err != nil {
		return nil, fmt.Errorf("flush conntrack of binding %d: %w", id, err)
	}
	if n == 0 && !a.published(id) {
		return nil, kindf(ErrNotFound, "no binding %d: the ids are in 'pontoon port ls -o json' (binding_id)", id)
	}
	a.log.Info("flushed conntrack", "binding", id, "conntrack", n)
	return &ConntrackFlushed{Conntrack: n}, nil
}

// published reports whether a port mapping has binding id.
func (a *Agent) published(id uint32) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range a.st.ports {
		if m.ID == id {
			return true
		}
	}
	return false
}

func (c *Client) Conntrack(endpoint string) (*ConntrackList, error) {
	var l ConntrackList
	return &l, c.do("GET", "/v1/conntrack?endpoint="+url.QueryEscape(endpoint), nil, &l)
}

func (c *Client) FlushConntrack(req ConntrackFlush) (*ConntrackFlushed, error) {
	var f ConntrackFlushed
	return &f, c.do("POST", "/v1/conntrack/flush", req, &f)
}
