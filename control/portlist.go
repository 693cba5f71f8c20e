package control

import (
	"encoding/base64"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/maps"
)

// PortQuery filters and pages GET /v1/ports. Zero fields match
// everything; with neither Limit nor After the reply is the plain array
// of every match, as before paging existed.
type PortQuery struct {
	Endpoint string
	Proto    string // "tcp" or "udp"
	// HostPort matches mappings whose host range holds it.
	HostPort uint16
	// BindingID matches the mapping with this binding id (0: any).
	BindingID uint32
	// Limit is the most mappings in one page.
	Limit int
	// After is the Next of the previous page: the page starts after it.
	After string
}

// PortPage is one page of mappings, in `port ls` order. Next is empty on
// the last page; otherwise pass it as After for the page that follows.
type PortPage struct {
	Mappings []*PortMapping `json:"mappings"`
	Next     string         `json:"next,omitempty"`
}

// paged reports whether the reply is a PortPage rather than an array.
func (q PortQuery) paged() bool { return q.Limit > 0 || q.After != "" }

// values is the query string of q.
func (q PortQuery) values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("endpoint", q.Endpoint)
	set("proto", q.Proto)
	if q.HostPort != 0 {
		v.Set("host_port", strconv.Itoa(int(q.HostPort)))
	}
	if q.BindingID != 0 {
		v.Set("binding_id", strconv.FormatUint(uint64(q.BindingID), 10))
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	set("after", q.After)
	return v
}

// parsePortQuery reads the query parameters of GET /v1/ports.
func parsePortQuery(v url.Values) (PortQuery, error) {
	for k := range v {
		switch k {
		case "endpoint", "proto", "host_port", "binding_id", "limit", "after":
		default:
			return PortQuery{}, kindf(ErrInvalid, "unknown query parameter %q; GET /v1/ports takes endpoint, proto, host_port, binding_id, limit and after", k)
		}
	}
	q := PortQuery{Endpoint: v.Get("endpoint"), Proto: v.Get("proto"), After: v.Get("after")}
	if q.Proto != "" && q.Proto != "tcp" && q.Proto != "udp" {
		return PortQuery{}, kindf(ErrInvalid, "proto %q: give tcp or udp", q.Proto)
	}
	if s := v.Get("host_port"); s != "" {
		p, err := strconv.ParseUint(s, 10, 16)
		if err != nil || p == 0 {
			return PortQuery{}, kindf(ErrInvalid, "host port %q: give a port of 1-65535", s)
		}
		q.HostPort = uint16(p)
	}
	if s := v.Get("binding_id"); s != "" {
		id, err := strconv.ParseUint(s, 10, 32)
		if err != nil || id == 0 {
			return PortQuery{}, kindf(ErrInvalid, "binding id %q: give the binding_id of a mapping, 1 or more", s)
		}
		q.BindingID = uint32(id)
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return PortQuery{}, kindf(ErrInvalid, "limit %q: give how many mappings a page holds, 1 or more", s)
		}
		q.Limit = n
	}
	return q, nil
}

// servePorts answers GET /v1/ports.
func (a *Agent) servePorts(w http.ResponseWriter, r *http.Request) {
	q, err := parsePortQuery(r.URL.Query())
	if err != nil {
		writeError(w, err)
		return
	}
	page, err := a.PortsPage(q)
	if err != nil || q.paged() {
		reply(page, err)(w)
		return
	}
	replyList(page.Mappings, nil)(w)
}

// PortsPage lists the mappings matching q, a page at a time when q.Limit
// is set. Pages follow the sort order of `port ls`, and Next names the
// last mapping returned rather than a position, so a mapping present
// from the first page to the last is listed exactly once even when
// others come and go in between.
func (a *Agent) PortsPage(q PortQuery) (*PortPage, error) {
	var after *PortMapping
	if q.After != "" {
		m, err := decodePageToken(q.After)
		if err != nil {
			return nil, err
		}
		after = m
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if q.Endpoint != "" {
		if _, err := a.endpoint(q.Endpoint); err != nil {
			return nil, err
		}
	}
	ms := make([]*PortMapping, 0, len(a.st.ports))
	for _, m := range a.st.ports {
		switch {
		case q.Endpoint != "" && m.Endpoint != q.Endpoint,
			q.Proto != "" && m.Proto != q.Proto,
			q.HostPort != 0 && !m.Host.Contains(q.HostPort),
			q.BindingID != 0 && m.ID != q.BindingID,
			after != nil && compareMappings(m, after) <= 0:
			continue
		}
		ms = append(ms, m)
	}
	sortMappings(ms)
	page := &PortPage{}
	if q.Limit > 0 && len(ms) > q.Limit {
		ms = ms[:q.Limit]
		page.Next = encodePageToken(ms[len(ms)-1])
	}
	page.Mappings = clones(ms)
	for _, m := range page.Mappings {
		if e := a.st.endpoints[m.Endpoint]; e != nil {
			m.ContainerID, m.ContainerName = e.ContainerID, e.ContainerName
		}
	}
	a.fillTraffic(page.Mappings)
	return page, nil
}

// fillTraffic gives listed mappings their counters: a lookup each for a
// page, one walk of the map for more.
func (a *Agent) fillTraffic(ms []*PortMapping) {
	if a.dp == nil || a.dp.Maps.BindingStats == nil {
		return
	}
	stats := maps.NewBindingStats(a.dp.Maps.BindingStats)
	var all map[uint32]maps.BindingCounter
	if len(ms) > 256 {
		var err error
		if all, err = stats.All(); err != nil {
			a.log.Warn("read traffic counters", "err", err)
			return
		}
	}
	for _, m := range ms {
		c, ok := all[m.ID]
		if all == nil {
			c, ok = stats.Get(m.ID)
		}
		if ok {
			m.Traffic = &Traffic{PacketsIn: c.PacketsIn, BytesIn: c.BytesIn, PacketsOut: c.PacketsOut, BytesOut: c.BytesOut}
		}
	}
}

// A page token is the sort key of the last mapping of a page, opaque to
// clients: endpoint, container port, protocol, host IP and host port.
func encodePageToken(m *PortMapping) string {
	key := strings.Join([]string{m.Endpoint, strconv.Itoa(int(m.Container.First)), m.Proto, m.HostIP.String(), strconv.Itoa(int(m.Host.First))}, "\x00")
	return base64.RawURLEncoding.EncodeToString([]byte(key))
}

func decodePageToken(s string) (*PortMapping, error) {
	bad := kindf(ErrInvalid, "page token %q: malformed; pass the next value of the previous page unchanged, or leave it out to start over", s)
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	f := strings.Split(string(raw), "\x00")
	if len(f) != 5 {
		return nil, bad
	}
	ctr, err1 := strconv.ParseUint(f[1], 10, 16)
	ip, err2 := netip.ParseAddr(f[3])
	host, err3 := strconv.ParseUint(f[4], 10, 16)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, bad
	}
	return &PortMapping{
		Endpoint: f[0], Proto: f[2], HostIP: ip,
		Container: ipam.Port(uint16(ctr)), Host: ipam.Port(uint16(host)),
	}, nil
}

// PortsPage asks for one page of mappings; see Agent.PortsPage.
func (c *Client) PortsPage(q PortQuery) (*PortPage, error) {
	if q.Limit == 0 && q.After == "" {
		var ms []*PortMapping
		if err := c.do("GET", "/v1/ports?"+q.values().Encode(), nil, &ms); err != nil {
			return nil, err
		}
		return &PortPage{Mappings: ms}, nil
	}
	var p PortPage
	return &p, c.do("GET", "/v1/ports?"+q.values().Encode(), nil, &p)
}
