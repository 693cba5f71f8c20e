/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* snat.h for IPv6: a flow's source becomes nat_addr and a port claimed on
 * it, with the same two entries per flow in the snat map (its keys carry
 * the family). The hairpin uses it to make a backend answer through the
 * host, NAT66 to give a masquerading network's flows the uplink's IPv6
 * address. The packet lives in a scratch slot (ipv6_nat.h). */
#ifndef PONTOON_SNAT6_H
#define PONTOON_SNAT6_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "maps.h"
#include "ct.h"
#include "snat.h"
#include "ipv6_nat.h"

/* The keys, entry and socket tuple snat6 builds, off the stack: the IPv4
 * frames under the IPv6 chain leave it too little on 6.1 and older. One
 * slot per CPU: a tc program never runs nested inside another there. */
struct snat6_scratch {
	struct ct_key fwd;
	struct ct_key rev;
	struct snat_value entry;
	struct in6_addr nat_addr;
	struct bpf_sock_tuple sock;
	struct binding_key binding;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct snat6_scratch);
} snat6_scratch SEC(".maps");

/* snat_update for IPv6: whether this packet closed the flow. */
static __always_inline int snat_update6(struct snat_value *v, struct snat_value *other,
					const struct packet6 *pkt, int opener)
{
	__u8 before, after;
	int closed = 0;

	if (pkt->t.proto == IPPROTO_TCP && pkt->frag != FRAG_LATER) {
		if (opener && tcp_is_syn6(pkt))
			snat_restart_closed(v, other);
		before = v->tcp_flags | other->tcp_flags;
		after = tcp_advance_seg(before, pkt->tcp_flags, pkt->frag, &pkt->tcp, opener, &v->tcp,
					&other->tcp);
		if (after != before) {
			v->tcp_flags |= after & ~before;
			closed = tcp_closed(after) && !tcp_closed(before);
		}
	}
	ct_stamp(&v->last_seen_ns);
	return closed;
}

static __always_inline int snat_reverse_of6(const struct snat_value *entry,
					    const struct in6_addr *addr, __be16 port)
{
	return entry && (entry->flags & SNAT_F_REVERSE) && entry->port == port &&
	       addr6_equal(entry->addr, addr);
}

/* host_socket_holds for IPv6, building its tuple in the scratch's. */
static __always_inline int host_socket_holds6(struct __sk_buff *skb, const struct l4_tuple6 *t,
					      struct snat6_scratch *s, __be16 port)
{
	struct bpf_sock_tuple *tuple = &s->sock;
	struct bpf_sock *sk;

	if (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP)
		return 0;
	__builtin_memcpy(tuple->ipv6.saddr, &t->daddr, 16);
	__builtin_memcpy(tuple->ipv6.daddr, &s->nat_addr, 16);
	tuple->ipv6.sport = t->dport;
	tuple->ipv6.dport = port;
	if (t->proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, tuple, sizeof(tuple->ipv6), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, tuple, sizeof(tuple->ipv6), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* Whether a published port holds port on the scratch's nat_addr, which is
 * the host's (an uplink's or a gateway's), so a wildcard binding counts:
 * binding_lookup6 with its key in the scratch, where snat_try_port6's
 * frame, on the deepest chain there is, has no room for it. */
static __always_inline int snat_binding_holds6(struct snat6_scratch *s, __u8 proto, __be16 port)
{
	struct binding_key *key = &s->binding;

	if (proto == IPPROTO_TCP && !prefilter_maybe(PREFILTER_TCP_PORTS, bpf_ntohs(port)))
		return 0;
	if (proto == IPPROTO_UDP && !prefilter_maybe(PREFILTER_UDP_PORTS, bpf_ntohs(port)))
		return 0;
	key->family = PONTOON_AF_INET6;
	key->proto = proto;
	key->port = port;
	__builtin_memcpy(key->addr, &s->nat_addr, 16);
	if (bpf_map_lookup_elem(&bindings, key))
		return 1;
	__builtin_memset(key->addr, 0, 16);
	return bpf_map_lookup_elem(&bindings, key) != NULL;
}

/* One try of snat_claim_port6: 1 when port on the scratch's nat_addr
 * is the flow's now, 0 when it is taken. A global function, checked once
 * rather than once per try (see parse6_ingress in tc_bridge.c); its flow
 * is the packet in scratch slot slot, its entry the scratch's. */
__noinline int snat_try_port6(struct __sk_buff *skb, __u32 port_n, __u32 slot)
{
	struct packet6 *pkt = bpf_map_lookup_elem(&packet6_scratch, &slot);
	__u32 zero = 0;
	struct snat6_scratch *s = bpf_map_lookup_elem(&snat6_scratch, &zero);
	__be16 port = (__be16)port_n;
	const struct l4_tuple6 *t;
	struct snat_value *cur;

	if (!pkt || !s)
		return 0;
	t = &pkt->t;
	tuple_key6(&s->rev, t->proto, &t->daddr, t->dport, &s->nat_addr, port);
	if (host_socket_holds6(skb, t, s, port) ||
	    (t->proto != NEXTHDR_ICMP && snat_binding_holds6(s, t->proto, port)))
		return 0;
	if (bpf_map_update_elem(&snat, &s->rev, &s->entry, BPF_NOEXIST) == 0)
		return 1;
	cur = bpf_map_lookup_elem(&snat, &s->rev);
	return cur && cur->port == t->sport && addr6_equal(cur->addr, &t->saddr);
}

/* snat_claim_port4 for IPv6, for the packet in scratch slot slot. */
static __always_inline int snat_claim_port6(struct __sk_buff *skb, const struct l4_tuple6 *t,
					    __be16 *nat_port, struct snat6_scratch *s, __u32 slot)
{
	struct snat_value *entry = &s->entry;
	__u16 min, max;
	__be16 port = t->sport;
	int i;

	snat_port_range(&min, &max);
	/* An echo's identifier needs no range, but is never 0 (snat.h). */
	if (t->proto == NEXTHDR_ICMP ? port == 0 : bpf_ntohs(port) < min || bpf_ntohs(port) > max)
		port = bpf_htons(min + bpf_get_prandom_u32() % (max - min + 1));
	__builtin_memset(entry, 0, sizeof(*entry));
	entry->port = t->sport;
	entry->flags = SNAT_F_REVERSE;
	entry->last_seen_ns = ct_now();
	__builtin_memcpy(entry->addr, &t->saddr, 16);

	for (i = 0; i < SNAT_PORT_TRIES + 1; i++) {
		if (snat_try_port6(skb, port, slot)) {
			*nat_port = port;
			return 0;
		}
		port = bpf_htons(min + bpf_get_prandom_u32() % (max - min + 1));
	}
	return -1;
}

/* snat4 for IPv6, for the packet in scratch slot slot (pkt), with
 * snat4's event bits. */
static __noinline __u32 snat6(struct __sk_buff *skb, const struct packet6 *pkt,
			      const struct in6_addr *nat_addr, __u32 slot)
{
	const struct l4_tuple6 *t = &pkt->t;
	struct snat6_scratch *s;
	struct snat_value *v;
	__u32 done = STAT_SNAT, zero = 0;
	__be16 nat_port;

	s = bpf_map_lookup_elem(&snat6_scratch, &zero);
	if (!s)
		return STAT_DROP_REWRITE;
	__builtin_memset(&s->fwd, 0, sizeof(s->fwd));
	__builtin_memset(&s->rev, 0, sizeof(s->rev));
	tuple_key6(&s->fwd, t->proto, &t->saddr, t->sport, &t->daddr, t->dport);
	v = bpf_map_lookup_elem(&snat, &s->fwd);
	if (v && addr6_equal(v->addr, nat_addr)) {
		struct snat_value *other;

		nat_port = v->port;
		tuple_key6(&s->rev, t->proto, &t->daddr, t->dport, nat_addr, nat_port);
		other = bpf_map_lookup_elem(&snat, &s->rev);
		/* A forward entry is trusted only with its reverse half. */
		if (snat_reverse_of6(other, &t->saddr, t->sport)) {
			if (snat_update6(v, other, pkt, 1))
				done |= SNAT_CLOSED;
			goto rewrite;
		}
	}

	if (pkt->frag == FRAG_LATER)
		return STAT_PASS_FRAGMENT;
	__builtin_memcpy(&s->nat_addr, nat_addr, 16);
	if (snat_claim_port6(skb, t, &nat_port, s, slot) < 0)
		return STAT_DROP_SNAT_EXHAUSTED;
	__builtin_memset(&s->entry, 0, sizeof(s->entry));
	s->entry.port = nat_port;
	s->entry.flags = SNAT_F_FORWARD;
	s->entry.last_seen_ns = ct_now();
	__builtin_memcpy(s->entry.addr, nat_addr, 16);
	if (t->proto == IPPROTO_TCP)
		s->entry.tcp_flags = tcp_advance_seg(0, pkt->tcp_flags, pkt->frag, &pkt->tcp, 1,
						     &s->entry.tcp, NULL);
	if (bpf_map_update_elem(&snat, &s->fwd, &s->entry, BPF_ANY) < 0) {
		bpf_map_delete_elem(&snat, &s->rev); /* never leave half a flow */
		return STAT_DROP_SNAT_EXHAUSTED;
	}
	done |= SNAT_OPENED;
rewrite:
	if (rewrite_endpoint6(skb, pkt, 0, nat_addr, nat_port) < 0)
		return STAT_DROP_REWRITE;
	return done;
}

/* snat_reverse4 for IPv6: a reply to a flow snat6 translated. Adds
 * SNAT_CLOSED when the reply closed the flow. */
static __noinline __u32 snat_reverse6(struct __sk_buff *skb, struct packet6 *pkt)
{
	const struct l4_tuple6 *t = &pkt->t;
	struct ct_key rev = {}, fwd = {};
	struct snat_value *v, *other;
	struct in6_addr orig_addr;
	__be16 orig_port;
	int closed;

	if (!snat_port_maybe(t->proto, t->dport))
		return STAT_PASS_NO_MATCH;
	tuple_key6(&rev, t->proto, &t->saddr, t->sport, &t->daddr, t->dport);
	v = bpf_map_lookup_elem(&snat, &rev);
	if (!v || !(v->flags & SNAT_F_REVERSE) || (v->flags & SNAT_F_HOST))
		return STAT_PASS_NO_MATCH;
	__builtin_memcpy(&orig_addr, v->addr, 16);
	orig_port = v->port;
	tuple_key6(&fwd, t->proto, &orig_addr, orig_port, &t->saddr, t->sport);
	other = bpf_map_lookup_elem(&snat, &fwd);
	if (!other || !(other->flags & SNAT_F_FORWARD) || other->port != t->dport ||
	    !addr6_equal(other->addr, &t->daddr))
		return STAT_DROP_SNAT_ORPHAN;
	closed = snat_update6(v, other, pkt, 0);

	if (rewrite_endpoint6(skb, pkt, 1, &orig_addr, orig_port) < 0)
		return STAT_DROP_REWRITE;
	/* The tuple follows the packet, for rnat6 next. */
	pkt->t.daddr = orig_addr;
	pkt->t.dport = orig_port;
	return closed ? STAT_SNAT_REVERSE | SNAT_CLOSED : STAT_SNAT_REVERSE;
}

/* event_masquerade for IPv6. pkt's tuple names the container: as it left
 * (container -> server), or as snat_reverse6 left a reply (server ->
 * container). */
static __noinline __attribute__((unused)) void event_masquerade6(const struct packet6 *pkt, int reply,
								 __u8 type)
{
	const struct l4_tuple6 *t = &pkt->t;
	struct snat_value *fwd_v, *rev_v;
	struct ct_key k = {};
	struct event *e;

	if (!events_on())
		return;
	if (reply)
		tuple_key6(&k, t->proto, &t->daddr, t->dport, &t->saddr, t->sport);
	else
		tuple_key6(&k, t->proto, &t->saddr, t->sport, &t->daddr, t->dport);
	fwd_v = bpf_map_lookup_elem(&snat, &k);
	if (!fwd_v)
		return;
	e = event_reserve(type);
	if (!e)
		return;
	e->kind = EVENT_KIND_MASQUERADE;
	e->family = PONTOON_AF_INET6;
	e->proto = t->proto;
	e->tcp_flags = fwd_v->tcp_flags;
	e->sport = k.sport;
	e->dport = k.dport;
	e->xlat_port = fwd_v->port;
	__builtin_memcpy(e->saddr, k.saddr, 16);
	__builtin_memcpy(e->daddr, k.daddr, 16);
	__builtin_memcpy(e->xlat_addr, fwd_v->addr, 16);
	/* The state both directions saw: an RST from the server is only in
	 * the reply entry. */
	tuple_key6(&k, t->proto, (const struct in6_addr *)k.daddr, k.dport,
		   (const struct in6_addr *)fwd_v->addr, fwd_v->port);
	rev_v = bpf_map_lookup_elem(&snat, &k);
	if (rev_v)
		e->tcp_flags |= rev_v->tcp_flags;
	bpf_ringbuf_submit(e, 0);
}

/* masquerade4 for IPv6 (NAT66): a packet of a network whose IPv6 subnet
 * has NAT66 on, leaving through uplink egress_ifindex, takes the uplink's
 * IPv6 address. Without NAT66 or without an address for the uplink it is
 * left alone, and the egress guard keeps its private source in. A global
 * function, checked once; on 5.10 such a function takes only the context
 * and scalars, hence the slot of the packet. Its lookup keys sit in its own
 * frame, beside snat6's rather than under it. */
__noinline int masquerade6(struct __sk_buff *skb, __u32 slot, __u32 egress_ifindex)
{
	struct packet6 *pkt = bpf_map_lookup_elem(&packet6_scratch, &slot);
	const __u32 want = NETWORK_F_MASQUERADE | NETWORK_F_NAT66;
	struct network_value *src_net;
	struct uplink_value *uplink;
	const struct l4_tuple6 *t;
	__u32 stat;

	if (!pkt)
		return STAT_PASS_NO_MATCH;
	t = &pkt->t;
	src_net = network_lookup6(&t->saddr);
	if (!src_net || (src_net->flags & want) != want)
		return STAT_PASS_NO_MATCH;
	/* The host's own address in a network (its gateway) is the host's. */
	if (hostaddr_has6(&t->saddr))
		return STAT_PASS_NO_MATCH;
	if (network_lookup6(&t->daddr) || hostaddr_has6(&t->daddr))
		return STAT_PASS_NO_MATCH;
	uplink = bpf_map_lookup_elem(&uplinks6, &egress_ifindex);
	if (!uplink)
		return STAT_PASS_NO_MATCH;
	stat = snat6(skb, pkt, (const struct in6_addr *)uplink->addr, slot);
	if (stat & SNAT_EVENT_BITS) {
		event_masquerade6(pkt, 0, (stat & SNAT_OPENED) ? EVENT_FLOW_NEW : EVENT_FLOW_END);
		return STAT_SNAT;
	}
	return stat;
}

/* icmp_snat_reverse4 for IPv6: an ICMPv6 error from outside (Packet Too
 * Big above all) quoting nat_addr:nat_port as the source goes to the
 * container that sent the packet, which must see its own address. As for
 * IPv4: only sent to nat_addr, and about a flow with both halves. */
static __noinline __attribute__((unused)) __u32 icmp_snat_reverse6(struct __sk_buff *skb,
								   const struct packet6 *pkt)
{
	const struct l4_tuple6 *in = &pkt->inner;
	struct snat_value *v, *fwd;
	struct in6_addr orig_addr;
	struct ct_key key = {};
	__be16 orig_port;

	if (!addr6_equal(&pkt->t.daddr, &in->saddr))
		return STAT_PASS_NO_MATCH;
	tuple_key6(&key, in->proto, &in->daddr, in->dport, &in->saddr, in->sport);
	v = bpf_map_lookup_elem(&snat, &key);
	if (!v || !(v->flags & SNAT_F_REVERSE) || (v->flags & SNAT_F_HOST))
		return STAT_PASS_NO_MATCH;
	__builtin_memcpy(&orig_addr, v->addr, 16);
	orig_port = v->port;
	tuple_key6(&key, in->proto, &orig_addr, orig_port, &in->daddr, in->dport);
	fwd = bpf_map_lookup_elem(&snat, &key);
	if (!fwd || !(fwd->flags & SNAT_F_FORWARD) || fwd->port != in->sport ||
	    !addr6_equal(fwd->addr, &in->saddr))
		return STAT_PASS_NO_MATCH;

	/* IPv6's outer address sits under the ICMPv6 checksum too. */
	if (rewrite_addr6(skb, pkt->l3_off + IPV6_DADDR_OFF, l4_csum_off6(NEXTHDR_ICMP, pkt->l4_off), 0,
			  &pkt->t.daddr, &orig_addr) < 0)
		return STAT_DROP_REWRITE;
	if (rewrite_quoted6(skb, pkt, IPV6_SADDR_OFF, 0, &in->saddr, &orig_addr, in->sport,
			    orig_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_ICMP_SNAT_REVERSE;
}

/* icmp_snat4 for IPv6: an ICMPv6 error about a NAT66 flow's reply (it
 * quotes server -> container:port). Sent by the container, it leaves as
 * the uplink's address; sent by this host, it keeps the host's. Either way
 * the quote shows what the server knows. */
static __noinline __attribute__((unused)) __u32 icmp_snat6(struct __sk_buff *skb,
							   const struct packet6 *pkt,
							   __u32 egress_ifindex)
{
	const struct l4_tuple6 *in = &pkt->inner;
	struct uplink_value *uplink;
	struct in6_addr nat_addr;
	struct ct_key fwd = {};
	struct snat_value *v;
	__be16 nat_port;
	int inside;

	inside = addr6_equal(&pkt->t.saddr, &in->daddr);
	if (!inside && !hostaddr_has6(&pkt->t.saddr))
		return STAT_PASS_NO_MATCH;
	tuple_key6(&fwd, in->proto, &in->daddr, in->dport, &in->saddr, in->sport);
	v = bpf_map_lookup_elem(&snat, &fwd);
	if (!v || !(v->flags & SNAT_F_FORWARD))
		return STAT_PASS_NO_MATCH;
	/* The hairpin's flows are SNATed to a gateway, not to this uplink. */
	uplink = bpf_map_lookup_elem(&uplinks6, &egress_ifindex);
	if (!uplink || !addr6_equal(uplink->addr, v->addr))
		return STAT_PASS_NO_MATCH;
	__builtin_memcpy(&nat_addr, v->addr, 16);
	nat_port = v->port;

	if (inside &&
	    rewrite_addr6(skb, pkt->l3_off + IPV6_SADDR_OFF, l4_csum_off6(NEXTHDR_ICMP, pkt->l4_off), 0,
			  &pkt->t.saddr, &nat_addr) < 0)
		return STAT_DROP_REWRITE;
	if (rewrite_quoted6(skb, pkt, IPV6_DADDR_OFF, 2, &in->daddr, &nat_addr, in->dport,
			    nat_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_ICMP_SNAT;
}

/* snat_note_host_echo4 for IPv6: the host's own ping leaving an uplink
 * holds its identifier against masqueraded echoes. */
static __noinline __attribute__((unused)) void snat_note_host_echo6(const struct packet6 *pkt)
{
	const struct l4_tuple6 *t = &pkt->t;
	struct snat_value host = {
		.port = t->sport,
		.flags = SNAT_F_REVERSE | SNAT_F_HOST,
	};
	struct ct_key rev = {};
	struct snat_value *v;

	if (t->proto != NEXTHDR_ICMP || t->sport == 0 || !hostaddr_has6(&t->saddr))
		return;
	tuple_key6(&rev, t->proto, &t->daddr, 0, &t->saddr, t->sport);
	v = bpf_map_lookup_elem(&snat, &rev);
	if (v) {
		if (v->flags & SNAT_F_HOST)
			ct_stamp(&v->last_seen_ns);
		return; /* a container's flow holds it: too late */
	}
	__builtin_memcpy(host.addr, &t->saddr, 16);
	host.last_seen_ns = ct_now();
	bpf_map_update_elem(&snat, &rev, &host, BPF_NOEXIST);
}

#endif
