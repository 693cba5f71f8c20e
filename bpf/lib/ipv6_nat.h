/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Published ports over IPv6: DNAT on the uplink's ingress, conntrack,
 * reverse NAT of the replies, and ICMPv6 errors about translated flows,
 * the same shapes as IPv4's in dnat.h with 128-bit addresses.
 *
 * Checksums: IPv6 has no header checksum; TCP, UDP and ICMPv6 cover both
 * addresses through their pseudo header. An address rewrite therefore
 * changes the packet's bytes by d and its L4 checksum field by -d. For a
 * CHECKSUM_COMPLETE skb, bpf_l4_csum_replace with BPF_F_PSEUDO_HDR moves
 * skb->csum by -d (right for IPv4, where the address sits under the IP
 * checksum), so the address is stored with BPF_F_RECOMPUTE_CSUM, which
 * moves it by +d: skb->csum ends where the bytes say. Linux 6.16's
 * BPF_F_IPV6 does the same in one call; this way works from 5.10.
 *
 * Extension headers: hop-by-hop, destination options and routing headers
 * with no segments left are skipped to the upper header. A routing header
 * with segments left names a waypoint, not the destination: left alone.
 * Fragments are translated as IPv4's: the first one (its transport header
 * behind the fragment header, nothing between) records its ports in the
 * frags map and the later ones take them from there; a later fragment
 * whose first one was not seen passes untranslated (counted
 * pass_fragment), to the host, which cannot reassemble it into anything
 * it would deliver. Never a guess. */
#ifndef PONTOON_IPV6_NAT_H
#define PONTOON_IPV6_NAT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in6.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "maps.h"
#include "parse.h"
#include "csum.h"
#include "ct.h"
#include "fib.h"
#include "verdict.h"
#include "ipv6.h"

#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
#define ICMPV6_HDR_LEN 8 /* type, code, checksum, and a word (Packet Too Big's MTU) */

#define IPV6_SADDR_OFF offsetof(struct ipv6hdr, saddr)
#define IPV6_DADDR_OFF offsetof(struct ipv6hdr, daddr)
#define IPV6_FRAG_MORE 0x0001

/* One IPv6 transport header as the programs need it. */
struct l4_tuple6 {
	struct in6_addr saddr;
	struct in6_addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
};

struct packet6 {
	__u32 l3_off;
	__u32 l4_off;
	__u32 l3_end; /* where the datagram ends: bytes after it are padding */
	__u8 tcp_flags;
	__u8 udp_no_csum;
	__u8 frag; /* enum frag_kind */
	__u8 pad;
	struct l4_tuple6 t;
	struct tcp_fields tcp;
	/* For ICMPv6 errors: the quoted packet that caused the error, which
	 * starts behind the ICMPv6 header's 8 bytes. */
	__u32 inner_l4_off;
	struct l4_tuple6 inner;
};

static __always_inline int addr6_equal(const void *a, const void *b)
{
	const __u32 *x = a, *y = b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline int is_loopback6(const struct in6_addr *a)
{
	return !(a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2]) &&
	       a->in6_u.u6_addr32[3] == bpf_htonl(1);
}

/* Where the uplink's IPv6 path keeps its packet6: not on the stack, where
 * the IPv4 path's frame, which the entry's is, leaves too little below the
 * 512-byte limit on 6.1 and older. A tc program never runs nested inside
 * another on the same CPU (ingress runs in softirq context, egress with
 * bottom halves off), so one slot per direction is all the sharing there
 * is; two slots keep even that apart. */
#define PACKET6_INGRESS 0
#define PACKET6_EGRESS 1

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct packet6);
} packet6_scratch SEC(".maps");

/* The zeroed packet6 of one direction, or NULL (never: the array has the
 * slot). */
static __always_inline struct packet6 *packet6_get(__u32 slot)
{
	struct packet6 *pkt = bpf_map_lookup_elem(&packet6_scratch, &slot);

	if (pkt)
		__builtin_memset(pkt, 0, sizeof(*pkt));
	return pkt;
}

/* Where the upper-layer header of a chain starts. */
struct ipv6_chain {
	__u32 l4_off;
	__be32 frag_id;
	__u8 proto;
	__u8 frag; /* enum frag_kind */
};

/* Follows the extension headers from off (just past the IPv6 header) to
 * the upper layer: PARSE_OK, PARSE_FRAGMENT for a later fragment (proto
 * is then the fragment header's next header), PARSE_OTHER for what is not
 * ours to translate (a routing header with segments left, headers between
 * a fragment header and the upper one), PARSE_MALFORMED when the chain is
 * cut short, runs past end or is too long to follow. */
static __noinline int ipv6_chain(struct __sk_buff *skb, __u32 off, __u32 nexthdr, __u32 end,
				 struct ipv6_chain *c)
{
	/* One buffer for every kind of header: this frame sits on the
	 * deepest call chain of the uplink's IPv6 path. */
	struct ipv6_frag_hdr h;
	int i, fragmented = 0;

	c->frag = FRAG_NONE;
	for (i = 0; i < IPV6_EXT_MAX; i++) {
		switch (nexthdr) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_DEST:
			/* next header, length in 8 bytes past the first 8,
			 * and for routing: type, segments left */
			if (fragmented)
				return PARSE_OTHER;
			if (off + 8 > end || bpf_skb_load_bytes(skb, off, &h, 4) < 0)
				return PARSE_MALFORMED;
			if (nexthdr == NEXTHDR_ROUTING && (bpf_ntohs(h.frag_off) & 0xff) != 0)
				return PARSE_OTHER; /* segments left */
			nexthdr = h.nexthdr;
			off += (h.reserved + 1) * 8;
			break;
		case NEXTHDR_FRAGMENT:
			if (fragmented || off + sizeof(h) > end ||
			    bpf_skb_load_bytes(skb, off, &h, sizeof(h)) < 0)
				return PARSE_MALFORMED;
			fragmented = 1;
			c->frag_id = h.id;
			nexthdr = h.nexthdr;
			off += sizeof(h);
			if (h.frag_off & bpf_htons(IPV6_FRAG_OFFSET)) {
				c->frag = FRAG_LATER;
				c->proto = nexthdr;
				c->l4_off = off;
				return PARSE_FRAGMENT;
			}
			if (h.frag_off & bpf_htons(IPV6_FRAG_MORE))
				c->frag = FRAG_FIRST;
			break;
		default:
			c->proto = nexthdr;
			c->l4_off = off;
			return PARSE_OK;
		}
	}
	return PARSE_MALFORMED;
}

static __always_inline void frag_key6(struct frag_key *key, const struct l4_tuple6 *t, __be32 id)
{
	key->family = PONTOON_AF_INET6;
	key->proto = t->proto;
	key->id = id;
	__builtin_memcpy(key->saddr, &t->saddr, 16);
	__builtin_memcpy(key->daddr, &t->daddr, 16);
}

/* frag_ports4 for IPv6. Out of line, as the other parts of the parse: the
 * IPv6 path's frames sit on top of the uplink's IPv4 frame. */
static __noinline int frag_ports6(struct packet6 *pkt, __be32 id)
{
	struct frag_key key = {};
	struct frag_value *v;

	frag_key6(&key, &pkt->t, id);
	if (pkt->frag == FRAG_FIRST) {
		struct frag_value ports = { .sport = pkt->t.sport, .dport = pkt->t.dport };

		bpf_map_update_elem(&frags, &key, &ports, BPF_ANY);
		return PARSE_OK;
	}
	v = bpf_map_lookup_elem(&frags, &key);
	if (!v)
		return PARSE_FRAGMENT;
	pkt->t.sport = v->sport;
	pkt->t.dport = v->dport;
	return PARSE_OK;
}

static __always_inline int icmp6_is_error(__u8 type)
{
	return type >= ICMPV6_DEST_UNREACH && type <= ICMPV6_PARAMPROB;
}

/* The first 8 bytes of an IPv6 header; the addresses are loaded straight
 * into the packet's tuple. */
struct ipv6_head {
	__u8 version; /* and the traffic class's first bits */
	__u8 flow[3];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
};

/* The packet an ICMPv6 error quotes, as far as the quote goes: its
 * addresses and the ports of its TCP or UDP header, or an echo's
 * identifier as its port (parse_quoted_ipv4 says why). */
static __noinline int parse_quoted6(struct __sk_buff *skb, struct packet6 *pkt)
{
	__u32 inner_l3_off = pkt->l4_off + ICMPV6_HDR_LEN;
	struct ipv6_chain chain = {};
	struct ipv6_head head;
	__be16 ports[4]; /* or an echo's type and code, checksum, id, sequence */
	int ret;

	if (bpf_skb_load_bytes(skb, inner_l3_off, &head, sizeof(head)) < 0 ||
	    (head.version >> 4) != 6 ||
	    bpf_skb_load_bytes(skb, inner_l3_off + IPV6_SADDR_OFF, &pkt->inner.saddr, 32) < 0)
		return PARSE_OTHER;
	ret = ipv6_chain(skb, inner_l3_off + sizeof(struct ipv6hdr), head.nexthdr, pkt->l3_end,
			 &chain);
	if (ret != PARSE_OK)
		return PARSE_OTHER;
	pkt->inner_l4_off = chain.l4_off;
	pkt->inner.proto = chain.proto;
	if (chain.proto == NEXTHDR_ICMP) {
		/* The quoted header must lie inside the ICMPv6 message, not in
		 * padding. */
		if (chain.l4_off + sizeof(ports) > pkt->l3_end ||
		    bpf_skb_load_bytes(skb, chain.l4_off, ports, sizeof(ports)) < 0)
			return PARSE_OTHER;
		if (*(__u8 *)ports == ICMPV6_ECHO_REQUEST) {
			pkt->inner.sport = ports[2];
			pkt->inner.dport = 0;
		} else if (*(__u8 *)ports == ICMPV6_ECHO_REPLY) {
			pkt->inner.sport = 0;
			pkt->inner.dport = ports[2];
		} else {
			return PARSE_OTHER;
		}
		return PARSE_ICMP_ERROR;
	}
	if (chain.proto != IPPROTO_TCP && chain.proto != IPPROTO_UDP)
		return PARSE_OTHER;
	if (chain.l4_off + 4 > pkt->l3_end || bpf_skb_load_bytes(skb, chain.l4_off, ports, 4) < 0)
		return PARSE_OTHER;
	pkt->inner.sport = ports[0];
	pkt->inner.dport = ports[1];
	return PARSE_ICMP_ERROR;
}

/* Parses IPv6 at l3_off: TCP or UDP behind any extension headers the
 * chain walk follows, or an ICMPv6 error and what it quotes. The results
 * are parse_packet's. */
static __noinline int parse_packet6(struct __sk_buff *skb, struct packet6 *pkt, __u32 l3_off)
{
	struct ipv6_chain chain = {};
	struct ipv6_head head;
	union l4_header l4;
	__u32 need;
	int ret;

	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return PARSE_NOT_IP;
	pkt->l3_off = l3_off;
	if (bpf_skb_load_bytes(skb, l3_off, &head, sizeof(head)) < 0 || (head.version >> 4) != 6 ||
	    bpf_skb_load_bytes(skb, l3_off + IPV6_SADDR_OFF, &pkt->t.saddr, 32) < 0)
		return PARSE_MALFORMED;
	/* A payload length of 0 is a jumbogram (BIG TCP's GRO aggregates):
	 * the skb ends where the datagram does. */
	pkt->l3_end = head.payload_len ? l3_off + sizeof(struct ipv6hdr) + bpf_ntohs(head.payload_len)
				       : skb->len;
	ret = ipv6_chain(skb, l3_off + sizeof(struct ipv6hdr), head.nexthdr, pkt->l3_end, &chain);
	pkt->t.proto = chain.proto;
	pkt->l4_off = chain.l4_off;
	pkt->frag = chain.frag;
	if (ret == PARSE_FRAGMENT) {
		/* A later fragment of an echo finds its first one's id as an
		 * error's never do: their first fragments record nothing. */
		if (chain.proto != IPPROTO_TCP && chain.proto != IPPROTO_UDP &&
		    chain.proto != NEXTHDR_ICMP)
			return PARSE_OTHER;
		return frag_ports6(pkt, chain.frag_id);
	}
	if (ret != PARSE_OK)
		return ret;
	if (chain.proto != IPPROTO_TCP && chain.proto != IPPROTO_UDP && chain.proto != NEXTHDR_ICMP)
		return PARSE_OTHER;

	/* The transport header must lie inside the datagram (RFC 1858's
	 * concern, as for IPv4). */
	need = chain.proto == IPPROTO_TCP ? sizeof(struct tcphdr) : 8;
	if (pkt->l4_off + need > pkt->l3_end)
		return PARSE_MALFORMED;
	if (chain.proto == IPPROTO_TCP) {
		if (load_tcphdr(skb, pkt->l4_off, &l4.tcp) < 0)
			return PARSE_MALFORMED;
		pkt->t.sport = l4.tcp.source;
		pkt->t.dport = l4.tcp.dest;
		ret = parse_tcp_fields(skb, pkt->l4_off, &l4.tcp, &pkt->tcp_flags, &pkt->tcp);
	} else {
		if (load_l4_head(skb, pkt->l4_off, (struct l4_head *)&l4) < 0)
			return PARSE_MALFORMED;
		if (chain.proto == NEXTHDR_ICMP && (l4.icmp.type == ICMPV6_ECHO_REQUEST ||
						    l4.icmp.type == ICMPV6_ECHO_REPLY)) {
			/* An echo's identifier is its "port", as for IPv4:
			 * NAT66 translates pings like any other flow. */
			pkt->t.sport = l4.icmp.type == ICMPV6_ECHO_REQUEST ? l4.icmp.id : 0;
			pkt->t.dport = l4.icmp.type == ICMPV6_ECHO_REQUEST ? 0 : l4.icmp.id;
		} else if (chain.proto == NEXTHDR_ICMP) {
			if (!icmp6_is_error(l4.icmp.type) || pkt->frag != FRAG_NONE)
				return PARSE_OTHER;
			return parse_quoted6(skb, pkt);
		} else {
			pkt->t.sport = l4.udp.source;
			pkt->t.dport = l4.udp.dest;
			pkt->udp_no_csum = l4.udp.check == 0;
		}
	}
	if (ret == PARSE_OK && pkt->frag == FRAG_FIRST) {
		/* Headers between the fragment header and this one would be
		 * missing from the later fragments' next header: ipv6_chain
		 * refused those already. */
		frag_ports6(pkt, chain.frag_id);
	}
	return ret;
}

/* ---- rewrites ---- */

/* The ICMPv6 checksum, like TCP's and UDP's, covers the pseudo header. */
static __always_inline __u32 l4_csum_off6(__u8 proto, __u32 l4_off)
{
	if (proto == IPPROTO_TCP)
		return l4_off + offsetof(struct tcphdr, check);
	if (proto == IPPROTO_UDP)
		return l4_off + offsetof(struct udphdr, check);
	return l4_off + offsetof(struct icmphdr, checksum);
}

/* Where a packet's own "port" lives: an ICMPv6 echo's identifier plays
 * both roles, as IPv4's does. */
static __always_inline __u32 port_off6(__u8 proto, __u32 l4_off, int dst)
{
	if (proto == NEXTHDR_ICMP)
		return l4_off + 4;
	return l4_off + (dst ? 2 : 0);
}

/* Rewrites the address at off (in the outer IPv6 header) from *from to
 * *to, with the L4 checksum at l4_csum (0: none in this packet, a later
 * fragment) following through its pseudo header. */
static __always_inline int rewrite_addr6(struct __sk_buff *skb, __u32 off, __u32 l4_csum,
					 __u64 l4_flags, const struct in6_addr *from,
					 const struct in6_addr *to)
{
	__s64 diff = bpf_csum_diff((__be32 *)from, 16, (__be32 *)to, 16, 0);

	if (diff < 0)
		return -1;
	if (l4_csum && bpf_l4_csum_replace(skb, l4_csum, 0, diff, l4_flags | BPF_F_PSEUDO_HDR) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, to, 16, BPF_F_RECOMPUTE_CSUM);
}

/* rewrite_endpoint4 for IPv6: the source (or destination) address and
 * port of a packet's own TCP or UDP header, or an echo's identifier. */
static __always_inline int rewrite_endpoint6(struct __sk_buff *skb, const struct packet6 *pkt,
					     int dst, const struct in6_addr *to_addr, __be16 to_port)
{
	const struct l4_tuple6 *t = &pkt->t;
	__u32 addr_off = pkt->l3_off + (dst ? IPV6_DADDR_OFF : IPV6_SADDR_OFF);
	__u32 csum = l4_csum_off6(t->proto, pkt->l4_off);
	__u64 flags = l4_csum_flags(t->proto);

	/* A later fragment has no transport header: the first fragment's
	 * checksum took the whole change. */
	if (pkt->frag == FRAG_LATER)
		return rewrite_addr6(skb, addr_off, 0, 0, dst ? &t->daddr : &t->saddr, to_addr);
	if (rewrite_addr6(skb, addr_off, csum, flags, dst ? &t->daddr : &t->saddr, to_addr) < 0)
		return -1;
	return rewrite_port(skb, port_off6(t->proto, pkt->l4_off, dst), csum, flags, dst ? t->dport : t->sport,
			    to_port, pkt->udp_no_csum ? BPF_F_RECOMPUTE_CSUM : 0);
}

/* Rewrites one address (at addr_off in the quoted IPv6 header) and one
 * port (at port_off in the quoted L4 header) of the packet an ICMPv6 error
 * quotes. The quoted L4 checksum follows when the quote holds it; the
 * ICMPv6 checksum absorbs every word changed inside the message, so the
 * bytes' sum, and skb->csum, stay as they were. */
static __always_inline int rewrite_quoted6(struct __sk_buff *skb, const struct packet6 *pkt,
					   __u32 addr_off, __u32 port_off,
					   const struct in6_addr *from_addr,
					   const struct in6_addr *to_addr, __be16 from_port,
					   __be16 to_port)
{
	__u32 icmp_csum = pkt->l4_off + offsetof(struct icmphdr, checksum);
	__u32 l4_csum = l4_csum_off6(pkt->inner.proto, pkt->inner_l4_off);
	__u64 l4_flags = l4_csum_flags(pkt->inner.proto);
	__s64 diff = bpf_csum_diff((__be32 *)from_addr, 16, (__be32 *)to_addr, 16, 0);
	__be16 old_l4_csum;
	int has_l4_csum;

	if (diff < 0)
		return -1;
	/* A quoted echo's identifier is its port; its checksum covers the
	 * pseudo header, as TCP's and UDP's do. */
	if (pkt->inner.proto == NEXTHDR_ICMP)
		port_off = 4;
	has_l4_csum = l4_csum + sizeof(old_l4_csum) <= pkt->l3_end &&
		      bpf_skb_load_bytes(skb, l4_csum, &old_l4_csum, sizeof(old_l4_csum)) == 0;
	if (!has_l4_csum)
		l4_csum = 0;

	if (l4_csum && bpf_l4_csum_replace(skb, l4_csum, 0, diff, l4_flags) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, pkt->l4_off + ICMPV6_HDR_LEN + addr_off, to_addr, 16, 0) < 0)
		return -1;
	if (rewrite_port(skb, pkt->inner_l4_off + port_off, l4_csum, l4_flags, from_port, to_port, 0) < 0)
		return -1;

	if (bpf_l4_csum_replace(skb, icmp_csum, 0, diff, 0) < 0)
		return -1;
	if (from_port != to_port && bpf_l4_csum_replace(skb, icmp_csum, from_port, to_port, 2) < 0)
		return -1;
	if (has_l4_csum && icmp_fold_word(skb, icmp_csum, l4_csum, old_l4_csum) < 0)
		return -1;
	return 0;
}

/* ---- conntrack ---- */

static __always_inline void tuple_key6(struct ct_key *key, __u8 proto, const struct in6_addr *saddr,
				       __be16 sport, const struct in6_addr *daddr, __be16 dport)
{
	key->family = PONTOON_AF_INET6;
	key->proto = proto;
	key->sport = sport;
	key->dport = dport;
	__builtin_memcpy(key->saddr, saddr, 16);
	__builtin_memcpy(key->daddr, daddr, 16);
}

/* ct_update for IPv6. */
static __always_inline void ct_update6(struct ct_value *v, const struct ct_key *key,
				       const struct packet6 *pkt, int dir)
{
	if (pkt->t.proto == IPPROTO_TCP) {
		__u8 state = tcp_advance_seg(v->tcp_flags, pkt->tcp_flags, pkt->frag, &pkt->tcp,
					     dir == CT_DIR_ORIGINAL, &v->tcp[dir & 1],
					     &v->tcp[(dir ^ 1) & 1]);

		/* Written only when it moves: a shared cache line per packet
		 * otherwise. */
		if (state != v->tcp_flags) {
			if (tcp_closed(state) && !tcp_closed(v->tcp_flags))
				event_ct(EVENT_FLOW_END, key, v, state);
			v->tcp_flags = state;
		}
	}
	ct_stamp(&v->last_seen_ns);
}

static __always_inline int tcp_is_syn6(const struct packet6 *pkt)
{
	return pkt->t.proto == IPPROTO_TCP &&
	       (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_SYN;
}

/* ct_follow_dnat4 and ct_open_dnat4 in one, for IPv6: the entry is keyed
 * by the reply tuple (backend -> client) and holds the address and port
 * the client dialled. */
static __always_inline int ct_track_dnat6(const struct packet6 *pkt, const struct in6_addr *backend,
					  __be16 backend_port, __u32 binding_id, int may_create)
{
	const struct l4_tuple6 *t = &pkt->t;
	struct ct_key key = {};
	struct ct_value *v;
	int is_new;

	tuple_key6(&key, t->proto, backend, backend_port, &t->saddr, t->sport);
	v = ct_find(&key, &is_new);
	if (v && v->nat_port == t->dport && addr6_equal(v->nat_addr, &t->daddr)) {
		if (tcp_is_syn6(pkt) && tcp_closed(v->tcp_flags))
			ct_restart(v);
		ct_update6(v, &key, pkt, CT_DIR_ORIGINAL);
		if (is_new && ct_answered(v, t->proto))
			ct_promote(&key, v);
		return 0;
	}
	if (!may_create)
		return CT_NOT_TRACKED;
	if (v && !ct_replaceable(v, t->proto))
		return CT_CLASH;
	if (v && !is_new)
		bpf_map_delete_elem(&ct, &key); /* the new flow starts unanswered */

	{
		struct ct_value fresh = {
			.nat_port = t->dport,
			.flags = CT_F_DNAT_REPLY,
			.binding_id = binding_id,
		};

		__builtin_memcpy(fresh.nat_addr, &t->daddr, 16);
		if (t->proto == IPPROTO_TCP)
			fresh.tcp_flags = tcp_advance_seg(0, pkt->tcp_flags, pkt->frag, &pkt->tcp, 1,
							  &fresh.tcp[CT_DIR_ORIGINAL], NULL);
		fresh.last_seen_ns = ct_now();
		fresh.created_ns = fresh.last_seen_ns;
		if (bpf_map_update_elem(&ct_new, &key, &fresh, BPF_ANY) < 0)
			return -1;
		event_ct(EVENT_FLOW_NEW, &key, &fresh, fresh.tcp_flags);
		return 0;
	}
}

static __always_inline struct ct_value *ct_lookup_reply6(__u8 proto, const struct in6_addr *saddr,
							  __be16 sport, const struct in6_addr *daddr,
							  __be16 dport)
{
	struct ct_key key = {};
	struct ct_value *v;
	int is_new;

	tuple_key6(&key, proto, saddr, sport, daddr, dport);
	v = ct_find(&key, &is_new);
	if (v && !(v->flags & CT_F_DNAT_REPLY))
		return NULL;
	return v;
}

/* ---- published ports ---- */

/* binding_lookup4 for IPv6: the exact address, then the wildcard (::),
 * which counts only for the host's own addresses. */
static __always_inline struct binding_value *binding_lookup6(__u8 proto, const struct in6_addr *daddr,
							      __be16 dport)
{
	struct binding_key key = {
		.family = PONTOON_AF_INET6,
		.proto = proto,
		.port = dport,
	};
	struct binding_value *b;

	if (proto == IPPROTO_TCP && !prefilter_maybe(PREFILTER_TCP_PORTS, bpf_ntohs(dport)))
		return NULL;
	if (proto == IPPROTO_UDP && !prefilter_maybe(PREFILTER_UDP_PORTS, bpf_ntohs(dport)))
		return NULL;
	__builtin_memcpy(key.addr, daddr, 16);
	b = bpf_map_lookup_elem(&bindings, &key);
	if (b)
		return b;
	__builtin_memset(key.addr, 0, 16);
	b = bpf_map_lookup_elem(&bindings, &key);
	if (b && !hostaddr_has6(daddr))
		return NULL;
	return b;
}

/* may_open_flow4 for IPv6. */
static __always_inline int may_open_flow6(struct __sk_buff *skb, const struct packet6 *pkt)
{
	const struct l4_tuple6 *t = &pkt->t;
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;

	if (t->proto == IPPROTO_TCP)
		return (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
	__builtin_memcpy(tuple.ipv6.saddr, &t->saddr, 16);
	__builtin_memcpy(tuple.ipv6.daddr, &t->daddr, 16);
	tuple.ipv6.sport = t->sport;
	tuple.ipv6.dport = t->dport;
	sk = bpf_sk_lookup_udp(skb, &tuple, sizeof(tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 1;
	bpf_sk_release(sk);
	return 0;
}

/* DNAT for a published IPv6 port, from outside. */
static __noinline __attribute__((unused)) __u32 dnat6(struct __sk_buff *skb, struct packet6 *pkt)
{
	const struct l4_tuple6 *t = &pkt->t;
	struct binding_value *b;
	struct in6_addr backend;
	__be16 backend_port;
	int tracked;

	if (t->proto == NEXTHDR_ICMP)
		return STAT_PASS_NO_MATCH; /* an echo: no port to publish */
	if (is_loopback6(&t->daddr))
		return STAT_PASS_LOCAL_ONLY;
	b = binding_lookup6(t->proto, &t->daddr, t->dport);
	if (!b)
		return STAT_PASS_NO_MATCH;
	if (b->flags & BINDING_F_LOCAL_ONLY)
		return STAT_PASS_LOCAL_ONLY;
	if (!allow_from6(b, &t->saddr))
		return STAT_DROP_NOT_ALLOWED;
	__builtin_memcpy(&backend, b->backend_addr, 16);
	backend_port = b->backend_port;

	tracked = ct_track_dnat6(pkt, &backend, backend_port, b->id,
				 pkt->frag != FRAG_LATER && may_open_flow6(skb, pkt));
	if (tracked == CT_NOT_TRACKED)
		return STAT_PASS_NOT_NEW;
	if (tracked == CT_CLASH)
		return STAT_DROP_CT_CLASH;
	if (tracked < 0)
		return STAT_DROP_CT_FULL;
	if (rewrite_endpoint6(skb, pkt, 1, &backend, backend_port) < 0)
		return STAT_DROP_REWRITE;
	/* The tuple follows the packet: the bridge's hairpin goes on with it. */
	pkt->t.daddr = backend;
	pkt->t.dport = backend_port;
	binding_count(skb, b->id, 1);
	return STAT_DNAT;
}

/* A container's reply: the source becomes what the client dialled. */
static __noinline __attribute__((unused)) __u32 rnat6(struct __sk_buff *skb, const struct packet6 *pkt)
{
	const struct l4_tuple6 *t = &pkt->t;
	struct in6_addr nat_addr;
	struct ct_key key = {};
	struct ct_value *v;
	__u32 binding_id;
	__be16 nat_port;
	int is_new;

	if (t->proto == NEXTHDR_ICMP)
		return STAT_PASS_NO_MATCH; /* dnat6 tracks no echo */
	tuple_key6(&key, t->proto, &t->saddr, t->sport, &t->daddr, t->dport);
	v = ct_find(&key, &is_new);
	if (!v || !(v->flags & CT_F_DNAT_REPLY))
		return STAT_PASS_NO_MATCH;
	ct_update6(v, &key, pkt, CT_DIR_REPLY);
	if (!(v->flags & CT_F_REPLIED))
		v->flags |= CT_F_REPLIED;
	__builtin_memcpy(&nat_addr, v->nat_addr, 16);
	nat_port = v->nat_port;
	binding_id = v->binding_id;
	if (is_new && ct_answered(v, t->proto))
		ct_promote(&key, v);

	if (rewrite_endpoint6(skb, pkt, 0, &nat_addr, nat_port) < 0)
		return STAT_DROP_REWRITE;
	binding_count(skb, binding_id, 0);
	return STAT_RNAT;
}

/* An ICMPv6 error from outside (Packet Too Big above all) about a reply
 * we sent: the quote shows the dialled address and port as its source;
 * the backend must see its own. Only sent to that address, as for IPv4. */
static __noinline __attribute__((unused)) __u32 icmp_dnat6(struct __sk_buff *skb, const struct packet6 *pkt)
{
	const struct l4_tuple6 *in = &pkt->inner;
	struct binding_value *b;
	struct in6_addr backend;
	__be16 backend_port;
	struct ct_value *v;

	if (!addr6_equal(&pkt->t.daddr, &in->saddr))
		return STAT_PASS_NO_MATCH;
	if (is_loopback6(&in->saddr))
		return STAT_PASS_LOCAL_ONLY;
	b = binding_lookup6(in->proto, &in->saddr, in->sport);
	if (!b || (b->flags & BINDING_F_LOCAL_ONLY))
		return STAT_PASS_NO_MATCH;
	__builtin_memcpy(&backend, b->backend_addr, 16);
	backend_port = b->backend_port;

	v = ct_lookup_reply6(in->proto, &backend, backend_port, &in->daddr, in->dport);
	if (!v || v->nat_port != in->sport || !addr6_equal(v->nat_addr, &in->saddr))
		return STAT_PASS_NO_MATCH;

	if (rewrite_addr6(skb, pkt->l3_off + IPV6_DADDR_OFF, l4_csum_off6(NEXTHDR_ICMP, pkt->l4_off), 0,
			  &pkt->t.daddr, &backend) < 0)
		return STAT_DROP_REWRITE;
	if (rewrite_quoted6(skb, pkt, IPV6_SADDR_OFF, 0, &in->saddr, &backend, in->sport,
			    backend_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_ICMP_DNAT;
}

/* An ICMPv6 error from a backend (or the host's gateway in its network)
 * about a client's packet: the client must see the address it dialled,
 * outside and in the quote. Another container's is dropped, as for IPv4. */
static __noinline __attribute__((unused)) __u32 icmp_rnat6(struct __sk_buff *skb, const struct packet6 *pkt)
{
	const struct l4_tuple6 *in = &pkt->inner;
	struct in6_addr nat_addr;
	struct ct_value *v;
	__be16 nat_port;
	int inside;

	v = ct_lookup_reply6(in->proto, &in->daddr, in->dport, &in->saddr, in->sport);
	if (!v)
		return STAT_PASS_NO_MATCH;
	__builtin_memcpy(&nat_addr, v->nat_addr, 16);
	nat_port = v->nat_port;

	inside = addr6_equal(&pkt->t.saddr, &in->daddr);
	if (!inside && network_lookup6(&pkt->t.saddr)) {
		if (!hostaddr_has6(&pkt->t.saddr))
			return STAT_PASS_NO_MATCH;
		inside = 1;
	}
	if (inside &&
	    rewrite_addr6(skb, pkt->l3_off + IPV6_SADDR_OFF, l4_csum_off6(NEXTHDR_ICMP, pkt->l4_off), 0,
			  &pkt->t.saddr, &nat_addr) < 0)
		return STAT_DROP_REWRITE;
	if (rewrite_quoted6(skb, pkt, IPV6_DADDR_OFF, 2, &in->daddr, &nat_addr, in->dport,
			    nat_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_ICMP_RNAT;
}

#endif
