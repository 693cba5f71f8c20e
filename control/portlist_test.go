package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/maps"
)

// testAgentCT is testAgent with conntrack tables, which unpublish flushes.
func testAgentCT(t *testing.T) *Agent {
	a := testAgent(t)
	a.dp.Maps.CT = newHashMap(t, maps.CTKey{}, maps.CTValue{})
	a.dp.Maps.CTNew = newHashMap(t, maps.CTKey{}, maps.CTValue{})
	return a
}

// publishN publishes host ports first..first+n-1 of one protocol to the
// endpoint, one spec each.
func publishN(t *testing.T, a *Agent, endpoint, proto string, first, n int) {
	t.Helper()
	specs := make([]string, n)
	for i := range specs {
		specs[i] = fmt.Sprintf("%d:%d/%s", first+i, 1000+i, proto)
	}
	if _, err := a.Publish(PublishRequest{Endpoint: endpoint, Specs: specs}); err != nil {
		t.Fatal(err)
	}
}

func mappingNames(ms []*PortMapping) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = portKey(m) + "@" + m.Endpoint
	}
	return out
}

// TestPortsPaging: pages of every size list every mapping exactly once,
// in the order of the full list, also when mappings come and go between
// pages; the last page has no next token.
func TestPortsPaging(t *testing.T) {
	a := testAgentCT(t)
	a.st.endpoints["db"] = &Endpoint{Name: "db", Network: "net", IP: netip.MustParseAddr("10.88.0.3")}
	publishN(t, a, "web", "tcp", 20000, 40)
	publishN(t, a, "web", "udp", 20000, 30)
	publishN(t, a, "db", "tcp", 30000, 30)
	all, err := a.Ports("")
	if err != nil || len(all) != 100 {
		t.Fatalf("%d mappings, %v; want 100", len(all), err)
	}
	want := strings.Join(mappingNames(all), " ")

	for _, limit := range []int{1, 7, 50, 99, 100, 101} {
		var got []*PortMapping
		q := PortQuery{Limit: limit}
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatalf("limit %d: more than 100 pages", limit)
			}
			page, err := a.PortsPage(q)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Mappings) > limit {
				t.Fatalf("limit %d: a page of %d", limit, len(page.Mappings))
			}
			got = append(got, page.Mappings...)
			if page.Next == "" {
				break
			}
			q.After = page.Next
		}
		if g := strings.Join(mappingNames(got), " "); g != want {
			t.Errorf("limit %d: pages list\n%s\nwant\n%s", limit, g, want)
		}
	}

	// Changes between pages: what stayed is listed once, what went is
	// not listed after it went.
	page, err := a.PortsPage(PortQuery{Limit: 30})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, n := range mappingNames(page.Mappings) {
		seen[n]++
	}
	if _, err := a.Unpublish(UnpublishRequest{Endpoint: "db", Spec: "1000-1009/tcp"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "1000/tcp"}); err != nil { // on the first page
		t.Fatal(err)
	}
	publishN(t, a, "db", "udp", 40000, 5)
	for q := (PortQuery{Limit: 30, After: page.Next}); q.After != ""; {
		page, err := a.PortsPage(q)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range mappingNames(page.Mappings) {
			seen[n]++
		}
		q.After = page.Next
	}
	// Mappings there before the first page and after the last one are
	// listed exactly once; the one published before the cursor is not
	// listed, which is what a cursor means.
	initial := map[string]bool{}
	for _, n := range mappingNames(all) {
		initial[n] = true
	}
	now, _ := a.Ports("")
	stayed := 0
	for _, n := range mappingNames(now) {
		if !initial[n] {
			continue
		}
		stayed++
		if seen[n] != 1 {
			t.Errorf("%s listed %d times across the pages", n, seen[n])
		}
	}
	if stayed != 89 {
		t.Errorf("%d mappings stayed, want 100 - 11 unpublished", stayed)
	}
	for n, c := range seen {
		if c != 1 {
			t.Errorf("%s listed %d times", n, c)
		}
	}
}

// TestPortsFilter: endpoint, protocol and host port filters, alone and
// together, paged or not.
func TestPortsFilter(t *testing.T) {
	a := testAgentCT(t)
	a.st.endpoints["db"] = &Endpoint{Name: "db", Network: "net", IP: netip.MustParseAddr("10.88.0.3")}
	publishN(t, a, "web", "tcp", 20000, 10)
	publishN(t, a, "web", "udp", 20000, 10)
	publishN(t, a, "db", "tcp", 30000, 10)
	if _, err := a.Publish(PublishRequest{Endpoint: "db", Specs: []string{"25000-25009:5000-5009/udp"}}); err != nil {
		t.Fatal(err)
	}
	count := func(q PortQuery, match func(*PortMapping) bool) int {
		t.Helper()
		page, err := a.PortsPage(q)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Mappings {
			if !match(m) {
				t.Errorf("query %+v returned %+v", q, m)
			}
		}
		return len(page.Mappings)
	}
	for _, c := range []struct {
		q     PortQuery
		match func(*PortMapping) bool
		want  int
	}{
		{PortQuery{Endpoint: "db"}, func(m *PortMapping) bool { return m.Endpoint == "db" }, 11},
		{PortQuery{Proto: "udp"}, func(m *PortMapping) bool { return m.Proto == "udp" }, 11},
		{PortQuery{HostPort: 20003}, func(m *PortMapping) bool { return m.Host.Contains(20003) }, 2},
		{PortQuery{HostPort: 25004}, func(m *PortMapping) bool { return m.Host.Contains(25004) }, 1}, // inside a range
		{PortQuery{Endpoint: "web", Proto: "tcp", HostPort: 20003}, func(m *PortMapping) bool {
			return m.Endpoint == "web" && m.Proto == "tcp" && m.Host.First == 20003
		}, 1},
		{PortQuery{Proto: "tcp", Limit: 3}, func(m *PortMapping) bool { return m.Proto == "tcp" }, 3},
		{PortQuery{HostPort: 999}, func(*PortMapping) bool { return false }, 0},
	} {
		if got := count(c.q, c.match); got != c.want {
			t.Errorf("query %+v: %d mappings, want %d", c.q, got, c.want)
		}
	}
	if _, err := a.PortsPage(PortQuery{Endpoint: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown endpoint: %v, want not found", err)
	}
}

// TestPortsAPI: GET /v1/ports keeps its plain array without paging
// parameters, answers a page object with them, and refuses bad ones with
// a 400 saying what to give.
func TestPortsAPI(t *testing.T) {
	a := testAgentCT(t)
	publishN(t, a, "web", "tcp", 20000, 5)
	get := func(query string) (int, string) {
		rec := httptest.NewRecorder()
		a.routes().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/ports"+query, nil))
		return rec.Code, rec.Body.String()
	}
	code, body := get("?endpoint=web")
	var ms []*PortMapping
	if err := json.Unmarshal([]byte(body), &ms); code != http.StatusOK || err != nil || len(ms) != 5 {
		t.Errorf("plain list: %d %s (%v), want an array of 5", code, body, err)
	}
	code, body = get("?limit=2&proto=tcp")
	var page PortPage
	if err := json.Unmarshal([]byte(body), &page); code != http.StatusOK || err != nil || len(page.Mappings) != 2 || page.Next == "" {
		t.Fatalf("first page: %d %s (%v), want 2 mappings and a next token", code, body, err)
	}
	code, body = get("?limit=10&after=" + page.Next)
	page = PortPage{}
	if err := json.Unmarshal([]byte(body), &page); code != http.StatusOK || err != nil || len(page.Mappings) != 3 || page.Next != "" {
		t.Errorf("last page: %d %s (%v), want 3 mappings and no next token", code, body, err)
	}
	for query, want := range map[string]string{
		"?limit=0":         "limit",
		"?limit=x":         "limit",
		"?proto=sctp":      "give tcp or udp",
		"?host_port=0":     "1-65535",
		"?host_port=70000": "1-65535",
		"?after=%21%21":    "page token",
		"?after=" + "YQ":   "page token",
		"?colour=blue":     "unknown query parameter",
	} {
		code, body := get(query)
		if code != http.StatusBadRequest || !strings.Contains(body, want) {
			t.Errorf("GET /v1/ports%s: %d %s, want 400 saying %q", query, code, body, want)
		}
	}
}

// TestPublishSpecLimit: a request with more specs than MaxPublishSpecs is
// refused up front, saying the limit and what to do, and changes nothing.
func TestPublishSpecLimit(t *testing.T) {
	a := testAgentCT(t)
	publishN(t, a, "web", "tcp", 20000, 3)
	before, _ := a.Ports("")
	nextID := a.st.nextID
	specs := make([]string, MaxPublishSpecs+1)
	for i := range specs {
		specs[i] = fmt.Sprintf("%d", 1+i%65535)
	}
	_, err := a.Publish(PublishRequest{Endpoint: "web", Specs: specs})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("publish of %d specs: %v, want invalid", len(specs), err)
	}
	msg := err.Error()
	if !strings.Contains(msg, fmt.Sprint(MaxPublishSpecs)) || !strings.Contains(msg, "split") || strings.Contains(msg, "\n") {
		t.Errorf("message %q: want one line naming the limit %d and saying to split the request", msg, MaxPublishSpecs)
	}
	after, _ := a.Ports("")
	if strings.Join(mappingNames(before), " ") != strings.Join(mappingNames(after), " ") || a.st.nextID != nextID {
		t.Errorf("state changed: %d mappings before, %d after; next id %d, was %d", len(before), len(after), a.st.nextID, nextID)
	}
	if got := len(a.ipam.Ports("")); got != 3 {
		t.Errorf("%d port allocations, want the 3 from before", got)
	}
	if got, _ := a.bindings.All(); len(got) != 3 {
		t.Errorf("%d bindings, want the 3 from before", len(got))
	}
	// Exactly the limit is accepted as far as the count goes (it fails
	// later, on the bindings map of this test, which holds 256).
	if _, err := a.Publish(PublishRequest{Endpoint: "web", Specs: specs[:MaxPublishSpecs]}); err != nil && strings.Contains(err.Error(), "fit in one") {
		t.Errorf("publish of exactly %d specs refused for its count: %v", MaxPublishSpecs, err)
	}
}

// TestUnpublishMany: one unpublish removes every matching mapping, its
// records, ports, bindings and traffic counters, and the state file
// agrees.
func TestUnpublishMany(t *testing.T) {
	a := testAgentCT(t)
	publishN(t, a, "web", "tcp", 20000, 120)
	publishN(t, a, "web", "udp", 20000, 10)
	ms, err := a.Unpublish(UnpublishRequest{Endpoint: "web", Spec: "1-65535/tcp"})
	if err != nil || len(ms) != 120 {
		t.Fatalf("unpublish every tcp mapping: %d, %v; want 120", len(ms), err)
	}
	if got, _ := a.Ports(""); len(got) != 10 {
		t.Errorf("%d mappings left, want the 10 udp ones", len(got))
	}
	if got := a.ipam.Ports(""); len(got) != 10 {
		t.Errorf("%d port allocations left, want 10", len(got))
	}
	if got, _ := a.bindings.All(); len(got) != 10 {
		t.Errorf("%d bindings left, want 10", len(got))
	}
	if stats, err := maps.NewBindingStats(a.dp.Maps.BindingStats).All(); err != nil || len(stats) != 10 {
		t.Errorf("%d traffic counters left, %v; want the 10 of the udp mappings", len(stats), err)
	}
	st, err := loadState(a.store)
	if err != nil || len(st.ports) != 10 {
		t.Errorf("state file: %d mappings, %v; want 10", len(st.ports), err)
	}
	// The ports are free again.
	publishN(t, a, "web", "tcp", 20000, 120)
}
