//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tc programs for uplinks: ingress DNATs packets for published ports to
 * their container, egress gives the container's replies back the address
 * the client dialled. Rewriting replies on egress, after routing, keeps the
 * kernel from dropping them as martians (their new source is ours). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lib/types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/nat.h"
#include "lib/ct.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define PORT_SRC_OFF 0
#define PORT_DST_OFF 2

/* Rewrites one address and one port of the packet quoted by an ICMP error,
 * keeping the quoted IP and L4 checksums and the ICMP checksum right. */
static __always_inline int rewrite_quoted4(struct __sk_buff *skb, const struct packet *pkt,
					   __u32 addr_off, __u32 port_off, __be32 from_addr,
					   __be32 to_addr, __be16 from_port, __be16 to_port)
{
	__u32 icmp_csum = pkt->l4_off + offsetof(struct icmphdr, checksum);
	__u32 ip_csum = pkt->inner_l3_off + IP_CSUM_OFF;
	__u32 l4_csum = l4_csum_off(pkt->inner.proto, pkt->inner_l4_off);
	__u64 l4_flags = l4_csum_flags(pkt->inner.proto);
	__be16 old_ip_csum, old_l4_csum;
	int has_l4_csum;

	if (bpf_skb_load_bytes(skb, ip_csum, &old_ip_csum, sizeof(old_ip_csum)) < 0)
		return -1;
	has_l4_csum = bpf_skb_load_bytes(skb, l4_csum, &old_l4_csum, sizeof(old_l4_csum)) == 0;
	if (!has_l4_csum)
		l4_csum = 0;

	if (rewrite_addr4(skb, pkt->inner_l3_off, addr_off, l4_csum, l4_flags, from_addr, to_addr) < 0)
		return -1;
	if (rewrite_port(skb, pkt->inner_l4_off + port_off, l4_csum, l4_flags, from_port, to_port) < 0)
		return -1;

	if (bpf_l4_csum_replace(skb, icmp_csum, from_addr, to_addr, 4) < 0)
		return -1;
	if (from_port != to_port && bpf_l4_csum_replace(skb, icmp_csum, from_port, to_port, 2) < 0)
		return -1;
	if (icmp_fold_word(skb, icmp_csum, ip_csum, old_ip_csum) < 0)
		return -1;
	if (has_l4_csum && icmp_fold_word(skb, icmp_csum, l4_csum, old_l4_csum) < 0)
		return -1;
	return 0;
}

static __always_inline __u32 dnat4(struct __sk_buff *skb, const struct packet *pkt)
{
	const struct l4_tuple *t = &pkt->t;
	__u32 csum = l4_csum_off(t->proto, pkt->l4_off);
	__u64 csum_flags = l4_csum_flags(t->proto);
	struct binding_value *b;
	__be16 backend_port;
	__be32 backend;

	/* Loopback bindings live only in the socket path: never from outside. */
	if (is_loopback4(t->daddr))
		return STAT_PASS_LOCAL_ONLY;
	b = binding_lookup4(t->proto, t->daddr, t->dport, 0);
	if (!b)
		return STAT_PASS_NO_MATCH;
	if (b->flags & BINDING_F_LOCAL_ONLY)
		return STAT_PASS_LOCAL_ONLY;
	backend = addr_get4(b->backend_addr);
	backend_port = b->backend_port;

	if (ct_track_dnat4(t, ct_tcp_flags(t->proto, pkt->tcp_flags), backend, backend_port,
			   b->id) < 0)
		return STAT_DROP_CT_FULL;
	if (rewrite_addr4(skb, pkt->l3_off, IP_DADDR_OFF, csum, csum_flags, t->daddr, backend) < 0 ||
	    rewrite_port(skb, pkt->l4_off + PORT_DST_OFF, csum, csum_flags, t->dport, backend_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_DNAT;
}

/* An ICMP error from outside about a reply we sent: the quoted packet has
 * the host address and port as its source; hand it to the backend. */
static __always_inline __u32 icmp_dnat4(struct __sk_buff *skb, const struct packet *pkt)
{
	const struct l4_tuple *in = &pkt->inner;
	struct binding_value *b;
	struct ct_value *v;
	__be16 backend_port;
	__be32 backend;

	if (is_loopback4(in->saddr))
		return STAT_PASS_LOCAL_ONLY;
	b = binding_lookup4(in->proto, in->saddr, in->sport, 0);
	if (!b || (b->flags & BINDING_F_LOCAL_ONLY))
		return STAT_PASS_NO_MATCH;
	backend = addr_get4(b->backend_addr);
	backend_port = b->backend_port;

	v = ct_lookup_reply4(in->proto, backend, backend_port, in->daddr, in->dport);
	if (!v || v->nat_port != in->sport || addr_get4(v->nat_addr) != in->saddr)
		return STAT_PASS_NO_MATCH;

	if (pkt->t.daddr == in->saddr &&
	    rewrite_addr4(skb, pkt->l3_off, IP_DADDR_OFF, 0, 0, pkt->t.daddr, backend) < 0)
		return STAT_DROP_REWRITE;
	if (rewrite_quoted4(skb, pkt, IP_SADDR_OFF, PORT_SRC_OFF, in->saddr, backend, in->sport,
			    backend_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_ICMP_DNAT;
}

static __always_inline __u32 rnat4(struct __sk_buff *skb, const struct packet *pkt)
{
	const struct l4_tuple *t = &pkt->t;
	__u32 csum = l4_csum_off(t->proto, pkt->l4_off);
	__u64 csum_flags = l4_csum_flags(t->proto);
	struct ct_value *v;
	__be16 nat_port;
	__be32 nat_addr;

	v = ct_lookup_reply4(t->proto, t->saddr, t->sport, t->daddr, t->dport);
	if (!v)
		return STAT_PASS_NO_MATCH;
	ct_touch(v, ct_tcp_flags(t->proto, pkt->tcp_flags));
	nat_addr = addr_get4(v->nat_addr);
	nat_port = v->nat_port;

	if (rewrite_addr4(skb, pkt->l3_off, IP_SADDR_OFF, csum, csum_flags, t->saddr, nat_addr) < 0 ||
	    rewrite_port(skb, pkt->l4_off + PORT_SRC_OFF, csum, csum_flags, t->sport, nat_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_RNAT;
}

/* An ICMP error from a backend (or from this host while forwarding to it)
 * about a packet of a translated flow: the quoted packet must show the
 * address and port the client dialled. */
static __always_inline __u32 icmp_rnat4(struct __sk_buff *skb, const struct packet *pkt)
{
	const struct l4_tuple *in = &pkt->inner;
	struct ct_value *v;
	__be16 nat_port;
	__be32 nat_addr;

	v = ct_lookup_reply4(in->proto, in->daddr, in->dport, in->saddr, in->sport);
	if (!v)
		return STAT_PASS_NO_MATCH;
	nat_addr = addr_get4(v->nat_addr);
	nat_port = v->nat_port;

	if (pkt->t.saddr == in->daddr &&
	    rewrite_addr4(skb, pkt->l3_off, IP_SADDR_OFF, 0, 0, pkt->t.saddr, nat_addr) < 0)
		return STAT_DROP_REWRITE;
	if (rewrite_quoted4(skb, pkt, IP_DADDR_OFF, PORT_DST_OFF, in->daddr, nat_addr, in->dport,
			    nat_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_ICMP_RNAT;
}

static __always_inline __u32 parse_verdict(int parsed)
{
	switch (parsed) {
	case PARSE_NOT_IP:
		return STAT_PASS_NOT_IP;
	case PARSE_FRAGMENT:
		return STAT_PASS_FRAGMENT;
	case PARSE_MALFORMED:
		return STAT_PASS_MALFORMED;
	default:
		return STAT_PASS_NO_MATCH;
	}
}

/* Untranslated packets go on with TC_ACT_UNSPEC (TCX_NEXT) so programs of
 * other tools attached after ours still see them. A packet whose rewrite
 * failed halfway is dropped rather than sent on corrupted. */
static __always_inline int finish(struct __sk_buff *skb, __u32 stat)
{
	stat_bump(stat, skb->len);
	if (stat == STAT_DROP_REWRITE || stat == STAT_DROP_CT_FULL)
		return TC_ACT_SHOT;
	return TC_ACT_UNSPEC;
}

SEC("tc")
int uplink_ingress(struct __sk_buff *skb)
{
	struct packet pkt = {};
	int parsed = parse_packet(skb, &pkt);
	__u32 stat;

	if (parsed == PARSE_OK)
		stat = dnat4(skb, &pkt);
	else if (parsed == PARSE_ICMP_ERROR)
		stat = icmp_dnat4(skb, &pkt);
	else
		stat = parse_verdict(parsed);
	return finish(skb, stat);
}

SEC("tc")
int uplink_egress(struct __sk_buff *skb)
{
	struct packet pkt = {};
	int parsed = parse_packet(skb, &pkt);
	__u32 stat;

	if (parsed == PARSE_OK)
		stat = rnat4(skb, &pkt);
	else if (parsed == PARSE_ICMP_ERROR)
		stat = icmp_rnat4(skb, &pkt);
	else
		stat = parse_verdict(parsed);
	return finish(skb, stat);
}
