package control

import (
	"encoding/json"
	"math"
	"net/netip"
	"slices"
	"strings"
)

// jsonScan reads the plain JSON that Pontoon's own client and agent
// write for the two messages of a publish that hold 60,000 items (the
// request's specs, the reply's host ports), in one pass and without
// reflection: encoding/json went over a 60,000-spec body three times and
// allocated each spec apart (~25 ms of the agent's CPU, 19 MB). It takes
// only what it reads exactly as encoding/json would: a string with an
// escape, a control character or a byte beyond ASCII, a null where a
// string goes, a repeated key, and anything malformed make it give up (ok
// false), and the caller then decodes with encoding/json, whose result
// and one-line errors stay the API's.
type jsonScan struct {
	b  string
	i  int
	ok bool
}

func (s *jsonScan) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next skips white space and takes c, which must come next.
func (s *jsonScan) next(c byte) bool {
	s.space()
	if !s.ok || s.i >= len(s.b) || s.b[s.i] != c {
		s.ok = false
		return false
	}
	s.i++
	return true
}

// peek skips white space and says whether c comes next, without taking it.
func (s *jsonScan) peek(c byte) bool {
	s.space()
	return s.ok && s.i < len(s.b) && s.b[s.i] == c
}

// str takes a string and returns where its text starts and ends in b.
func (s *jsonScan) str() (start, end int) {
	if !s.next('"') {
		return 0, 0
	}
	start = s.i
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return start, s.i - 1
		case c < 0x20 || c == '\\' || c >= 0x80:
			s.ok = false
			return 0, 0
		}
	}
	s.ok = false
	return 0, 0
}

// null takes a null if one comes next.
func (s *jsonScan) null() bool {
	s.space()
	if s.ok && strings.HasPrefix(s.b[s.i:], "null") {
		s.i += len("null")
		return true
	}
	return false
}

// strings takes an array of strings, slices of b, and returns them; []
// is an empty, non-nil slice, null a nil one (what the client sends for
// no specs).
func (s *jsonScan) strings() []string {
	if s.null() || !s.next('[') {
		return nil
	}
	// Every element but the last ends in `",`: one count sizes the slice.
	out := make([]string, 0, strings.Count(s.b[s.i:], `",`)+1)
	if s.peek(']') {
		s.i++
		return out
	}
	for s.ok {
		start, end := s.str()
		out = append(out, s.b[start:end])
		if !s.peek(',') {
			break
		}
		s.i++
	}
	s.next(']')
	return out
}

// uint takes a number without sign, fraction or exponent of at most max.
func (s *jsonScan) uint(max uint64) uint64 {
	s.space()
	start := s.i
	var n uint64
	for ; s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9'; s.i++ {
		if n = n*10 + uint64(s.b[s.i]-'0'); n > max {
			s.ok = false
			return 0
		}
	}
	// A leading zero is JSON only alone: encoding/json refuses "01".
	if s.i == start || (s.b[start] == '0' && s.i-start > 1) {
		s.ok = false
	}
	return n
}

// first says whether key k of an object is new, and gives up on one seen
// before: encoding/json would keep its last value.
func (s *jsonScan) first(seen *[8]bool, k int) bool {
	if seen[k] {
		s.ok = false
	}
	seen[k] = true
	return s.ok
}

// ownString takes a string as a copy of its own, for a value that
// outlives the body it is read from.
func (s *jsonScan) ownString() string {
	start, end := s.str()
	return strings.Clone(s.b[start:end])
}

// object takes an object, calling field for each key, which takes the
// key's value (or sets s.ok to false for a key it does not know), then
// the end of the input, where only white space may follow the object.
func (s *jsonScan) object(field func(key string)) bool {
	if !s.next('{') {
		return false
	}
	if s.peek('}') {
		s.i++
	} else {
		for s.ok {
			start, end := s.str()
			if !s.next(':') {
				break
			}
			field(s.b[start:end])
			if !s.peek(',') {
				break
			}
			s.i++
		}
		s.next('}')
	}
	s.space()
	return s.ok && s.i == len(s.b)
}

// decodePublishRequest reads body into req if jsonScan can; when it says
// false, req is untouched and strictUnmarshal has the last word.
func decodePublishRequest(body string, req *PublishRequest) bool {
	// The specs are slices of the body: no allocation for each of
	// 60,000. Only the endpoint's name outlives the request (in the
	// agent's state), so it is a copy of its own.
	s := jsonScan{b: body, ok: true}
	var out PublishRequest
	var seen [8]bool
	ok := s.object(func(key string) {
		switch {
		case key == "endpoint" && s.first(&seen, 0):
			out.Endpoint = s.ownString()
		case key == "specs" && s.first(&seen, 1):
			out.Specs = s.strings()
		case key == "allow_from" && s.first(&seen, 2):
			out.AllowFrom = s.strings()
		default:
			s.ok = false
		}
	})
	if ok {
		*req = out
	}
	return ok
}

// decodePublishedPorts reads a compact publish reply into p if jsonScan
// can; when it says false, p is untouched and encoding/json has the last
// word.
func decodePublishedPorts(body string, p *PublishedPorts) bool {
	s := jsonScan{b: body, ok: true}
	var out PublishedPorts
	var seen [8]bool
	addr := func() netip.Addr {
		start, end := s.str()
		if !s.ok || start == end {
			return netip.Addr{} // "" is the zero Addr, as UnmarshalText reads it
		}
		a, err := netip.ParseAddr(body[start:end])
		if err != nil {
			s.ok = false
		}
		return a
	}
	ok := s.object(func(key string) {
		switch {
		case key == "endpoint" && s.first(&seen, 0):
			out.Endpoint = s.ownString()
		case key == "first_id" && s.first(&seen, 1):
			out.FirstID = uint32(s.uint(math.MaxUint32))
		case key == "endpoint_ip" && s.first(&seen, 2):
			out.EndpointIP = addr()
		case key == "endpoint_ipv6" && s.first(&seen, 3):
			out.EndpointIPv6 = addr()
		case key == "host_ports" && s.first(&seen, 4):
			out.HostPorts = s.ports()
		default:
			s.ok = false
		}
	})
	if ok {
		*p = out
	}
	return ok
}

// ports takes an array of port numbers; [] is an empty, non-nil slice.
func (s *jsonScan) ports() []uint16 {
	if !s.next('[') {
		return nil
	}
	// Every element but the last ends in a comma: one count sizes it.
	out := make([]uint16, 0, strings.Count(s.b[s.i:], ",")+1)
	if s.peek(']') {
		s.i++
		return out
	}
	for s.ok {
		out = append(out, uint16(s.uint(math.MaxUint16)))
		if !s.peek(',') {
			break
		}
		s.i++
	}
	s.next(']')
	return out
}

// appendPublishRequest appends req as json.Marshal writes it, a fifth
// of the time for 60,000 specs: the buffer is sized once, and a plain
// string is copied as it is.
func appendPublishRequest(b []byte, req PublishRequest) []byte {
	size := 64 + len(req.Endpoint)
	for _, s := range req.Specs {
		size += len(s) + 3
	}
	for _, s := range req.AllowFrom {
		size += len(s) + 3
	}
	b = slices.Grow(b, size)
	b = append(b, `{"endpoint":`...)
	b = appendJSONString(b, req.Endpoint)
	b = append(b, `,"specs":`...)
	b = appendJSONStrings(b, req.Specs)
	if len(req.AllowFrom) > 0 {
		b = append(b, `,"allow_from":`...)
		b = appendJSONStrings(b, req.AllowFrom)
	}
	return append(b, '}')
}

func appendJSONStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONString appends s quoted; what encoding/json would escape
// (controls, quotes, backslashes, <>&, anything not ASCII) it quotes itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
