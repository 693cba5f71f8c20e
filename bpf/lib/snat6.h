/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* snat.h for IPv6: a flow's source becomes nat_addr and a port claimed on
 * it, with the same two entries per flow in the snat map (its keys carry
 * the family). Hairpin uses it to make a backend answer through the host;
 * the packet lives in the scratch slot (ipv6_nat.h). */
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

/* The keys and entry snat6 builds, off the stack: the bridge's IPv4
 * frame leaves the IPv6 chain under it too little on 6.1 and older. One
 * slot per CPU: a tc program never runs nested inside another there. */
struct snat6_scratch {
	struct ct_key fwd;
	struct ct_key rev;
	struct snat_value entry;
	struct in6_addr nat_addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct snat6_scratch);
} snat6_scratch SEC(".maps");

/* snat_update for IPv6. */
static __always_inline void snat_update6(struct snat_value *v, struct snat_value *other,
					 const struct packet6 *pkt, int opener)
{
	__u8 before, after;

	if (pkt->t.proto == IPPROTO_TCP && pkt->frag != FRAG_LATER) {
		if (opener && tcp_is_syn6(pkt))
			snat_restart_closed(v, other);
		before = v->tcp_flags | other->tcp_flags;
		after = tcp_advance_seg(before, pkt->tcp_flags, pkt->frag, &pkt->tcp, opener, &v->tcp,
					&other->tcp);
		if (after != before)
			v->tcp_flags |= after & ~before;
	}
	ct_stamp(&v->last_seen_ns);
}

static __always_inline int snat_reverse_of6(const struct snat_value *entry,
					    const struct in6_addr *addr, __be16 port)
{
	return entry && (entry->flags & SNAT_F_REVERSE) && entry->port == port &&
	       addr6_equal(entry->addr, addr);
}

/* host_socket_holds for IPv6. */
static __always_inline int host_socket_holds6(struct __sk_buff *skb, const struct l4_tuple6 *t,
					      const struct in6_addr *nat_addr, __be16 port)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;

	__builtin_memcpy(tuple.ipv6.saddr, &t->daddr, 16);
	__builtin_memcpy(tuple.ipv6.daddr, nat_addr, 16);
	tuple.ipv6.sport = t->dport;
	tuple.ipv6.dport = port;
	if (t->proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, &tuple, sizeof(tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* One try of snat_claim_port6: 1 when port on the scratch's nat_addr
 * is the flow's now, 0 when it is taken. A global function, checked once
 * rather than once per try (see parse6_ingress in tc_bridge.c); its flow
 * is the packet in the ingress scratch slot, its entry the scratch's. */
__noinline int snat_try_port6(struct __sk_buff *skb, __u32 port_n)
{
	__u32 slot = PACKET6_INGRESS, zero = 0;
	struct packet6 *pkt = bpf_map_lookup_elem(&packet6_scratch, &slot);
	struct snat6_scratch *s = bpf_map_lookup_elem(&snat6_scratch, &zero);
	__be16 port = (__be16)port_n;
	const struct l4_tuple6 *t;
	struct snat_value *cur;

	if (!pkt || !s)
		return 0;
	t = &pkt->t;
	tuple_key6(&s->rev, t->proto, &t->daddr, t->dport, &s->nat_addr, port);
	if (host_socket_holds6(skb, t, &s->nat_addr, port) ||
	    binding_lookup6(t->proto, &s->nat_addr, port))
		return 0;
	if (bpf_map_update_elem(&snat, &s->rev, &s->entry, BPF_NOEXIST) == 0)
		return 1;
	cur = bpf_map_lookup_elem(&snat, &s->rev);
	return cur && cur->port == t->sport && addr6_equal(cur->addr, &t->saddr);
}

/* snat_claim_port4 for IPv6 (TCP and UDP: parse_packet6 passes nothing
 * else), for the packet in the ingress scratch slot. */
static __always_inline int snat_claim_port6(struct __sk_buff *skb, const struct l4_tuple6 *t,
					    __be16 *nat_port, struct snat6_scratch *s)
{
	struct snat_value *entry = &s->entry;
	__u16 min, max;
	__be16 port = t->sport;
	int i;

	snat_port_range(&min, &max);
	if (bpf_ntohs(port) < min || bpf_ntohs(port) > max)
		port = bpf_htons(min + bpf_get_prandom_u32() % (max - min + 1));
	__builtin_memset(entry, 0, sizeof(*entry));
	entry->port = t->sport;
	entry->flags = SNAT_F_REVERSE;
	entry->last_seen_ns = ct_now();
	__builtin_memcpy(entry->addr, &t->saddr, 16);

	for (i = 0; i < SNAT_PORT_TRIES + 1; i++) {
		if (snat_try_port6(skb, port)) {
			*nat_port = port;
			return 0;
		}
		port = bpf_htons(min + bpf_get_prandom_u32() % (max - min + 1));
	}
	return -1;
}

/* snat4 for IPv6, for the packet in the ingress scratch slot (pkt). */
static __noinline __u32 snat6(struct __sk_buff *skb, const struct packet6 *pkt,
			      const struct in6_addr *nat_addr)
{
	const struct l4_tuple6 *t = &pkt->t;
	struct snat6_scratch *s;
	struct snat_value *v;
	__u32 zero = 0;
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
			snat_update6(v, other, pkt, 1);
			goto rewrite;
		}
	}

	if (pkt->frag == FRAG_LATER)
		return STAT_PASS_FRAGMENT;
	__builtin_memcpy(&s->nat_addr, nat_addr, 16);
	if (snat_claim_port6(skb, t, &nat_port, s) < 0)
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
rewrite:
	if (rewrite_endpoint6(skb, pkt, 0, nat_addr, nat_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_SNAT;
}

/* snat_reverse4 for IPv6: a reply to a flow snat6 translated. */
static __noinline __u32 snat_reverse6(struct __sk_buff *skb, struct packet6 *pkt)
{
	const struct l4_tuple6 *t = &pkt->t;
	struct ct_key rev = {}, fwd = {};
	struct snat_value *v, *other;
	struct in6_addr orig_addr;
	__be16 orig_port;

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
	snat_update6(v, other, pkt, 0);

	if (rewrite_endpoint6(skb, pkt, 1, &orig_addr, orig_port) < 0)
		return STAT_DROP_REWRITE;
	/* The tuple follows the packet, for rnat6 next. */
	pkt->t.daddr = orig_addr;
	pkt->t.dport = orig_port;
	return STAT_SNAT_REVERSE;
}

#endif
