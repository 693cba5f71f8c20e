package maps

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// StatNames are the indexes of enum stat_index, in order.
var StatNames = []string{
	"pass_not_ip",
	"pass_malformed",
	"pass_fragment",
	"pass_no_match",
	"pass_local_only",
	"pass_not_new",
	"dnat",
	"rnat",
	"icmp_dnat",
	"icmp_rnat",
	"drop_rewrite",
	"drop_ct_full",
	"drop_isolation",
	"drop_snat_exhausted",
	"snat",
	"snat_reverse",
	"icmp_snat_reverse",
	"redirect",
	"drop_icc",
	"endpoint_redirect",
	"hairpin",
	"hairpin_reply",
	"sock_connect",
	"sock_sendmsg",
	"sock_recvmsg",
	"sock_getpeername",
	"fib_too_big",
	"drop_unmasqueraded",
	"drop_ct_clash",
	"drop_frag_needed",
	"icmp_snat",
	"tcp_rst_ignored",
	"drop_not_published",
	"drop_spoofed",
	"drop_protocol",
	"sock_bind_refused",
	"ct_not_promoted",
	"drop_snat_orphan",
	"drop_not_allowed",
	"drop_local_only",
	"xdp_no_meta",
}

// Stats wraps the per-CPU counters map.
type Stats struct{ m *ebpf.Map }

func NewStats(m *ebpf.Map) *Stats { return &Stats{m: m} }

// Read sums every counter over all CPUs.
func (s *Stats) Read() (map[string]Counter, error) {
	out := make(map[string]Counter, len(StatNames))
	for i, name := range StatNames {
		var perCPU []Counter
		if err := s.m.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", name, err)
		}
		var sum Counter
		for _, c := range perCPU {
			sum.Packets += c.Packets
			sum.Bytes += c.Bytes
		}
		out[name] = sum
	}
	return out, nil
}
