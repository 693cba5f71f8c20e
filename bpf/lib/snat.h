/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Masquerade: containers reaching the outside leave with the uplink's
 * address. Each flow has two entries in the snat map, one per direction,
 * so both ways are a single exact lookup. */
#ifndef PONTOON_SNAT_H
#define PONTOON_SNAT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "maps.h"
#include "parse.h"
#include "csum.h"
#include "nat.h"
#include "ct.h"
#include "network.h"

/* Below Linux's default ephemeral range (32768-60999) and Pontoon's
 * dynamic published ports (61000-65535), used when the agent set none:
 * the kernel never picks these as a host connection's source port. */
#define SNAT_PORT_MIN_DEFAULT 1024
#define SNAT_PORT_MAX_DEFAULT 32767
/* Random probes for a free port after the original one is taken: with the
 * range at most half full, 16 misses in a row happen once in 65k flows. */
#define SNAT_PORT_TRIES 16

/* A SYN opening a flow again on a tuple whose connection closed starts its
 * TCP state over in both entries rather than inheriting the old one. */
static __always_inline void snat_restart_closed(struct snat_value *v, struct snat_value *other)
{
	struct tcp_side none = {};

	if (!tcp_closed(v->tcp_flags | other->tcp_flags))
		return;
	v->tcp_flags = 0;
	v->tcp = none;
	other->tcp_flags = 0;
	other->tcp = none;
}

/* The TCP state of a masqueraded flow lives in both of its entries: each
 * direction's own entry takes the state its packets move (GC reads the
 * two together). other is the flow's other entry. Returns whether this
 * packet closed the flow (its first FIN or an RST), for its end event. */
static __always_inline int snat_update(struct snat_value *v, struct snat_value *other,
				       const struct packet *pkt, int opener)
{
	__u8 before, after;
	int closed = 0;

	if (pkt->t.proto == IPPROTO_TCP && pkt->frag != FRAG_LATER) {
		if (opener && tcp_is_syn(pkt))
			snat_restart_closed(v, other);
		before = v->tcp_flags | other->tcp_flags;
		after = tcp_advance(before, pkt, opener, &v->tcp, &other->tcp);
		if (after != before) {
			v->tcp_flags |= after & ~before;
			closed = tcp_closed(after) && !tcp_closed(before);
		}
	}
	ct_stamp(&v->last_seen_ns);
	return closed;
}

/* Whether entry is the reverse half of the flow from addr:port. */
static __always_inline int snat_reverse_of(const struct snat_value *entry, __be32 addr, __be16 port)
{
	return entry && (entry->flags & SNAT_F_REVERSE) && entry->port == port &&
	       addr_get4(entry->addr) == addr;
}

/* Whether a socket of the host would take the replies of a flow from
 * nat_addr:port to the server: the host's own connection on that tuple,
 * or a listener on the port. The agent keeps the SNAT range clear of the
 * kernel's ephemeral ports; this covers what was bound explicitly. */
static __always_inline int host_socket_holds(struct __sk_buff *skb, const struct l4_tuple *t,
					     __be32 nat_addr, __be16 port)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;

	if (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP)
		return 0;
	tuple.ipv4.saddr = t->daddr;
	tuple.ipv4.sport = t->dport;
	tuple.ipv4.daddr = nat_addr;
	tuple.ipv4.dport = port;
	if (t->proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* The source ports masqueraded TCP and UDP flows get under cfg, host byte
 * order. */
static __always_inline void snat_port_range_of(const struct config *cfg, __u16 *min, __u16 *max)
{
	*min = SNAT_PORT_MIN_DEFAULT;
	*max = SNAT_PORT_MAX_DEFAULT;
	if (cfg && cfg->snat_port_min && cfg->snat_port_max >= cfg->snat_port_min) {
		*min = cfg->snat_port_min;
		*max = cfg->snat_port_max;
	}
}

static __always_inline void snat_port_range(__u16 *min, __u16 *max)
{
	snat_port_range_of(config_get(), min, max);
}

/* Whether a packet to port may be the reply of a masqueraded flow. TCP and
 * UDP flows only get ports of the range, and an agent that says so
 * (CONFIG_F_SNAT_IN_RANGE) has dropped those of an earlier range, so a
 * reply to any other port (most of what reaches the host) skips the
 * lookup. One config lookup for the flag and the range. */
static __always_inline int snat_port_maybe(__u8 proto, __be16 port)
{
	struct config *cfg = config_get();
	__u16 min, max;

	if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 || !cfg ||
	    !(cfg->flags & CONFIG_F_SNAT_IN_RANGE))
		return 1;
	snat_port_range_of(cfg, &min, &max);
	return bpf_ntohs(port) >= min && bpf_ntohs(port) <= max;
}

/* Claims a source port on nat_addr for the flow t by inserting its reverse
 * entry. The original port is kept when it lies in the SNAT range and is
 * free, so two containers using the same source port towards the same
 * server both get through. rev and entry are the caller's, to keep the
 * stack small: rev ends up as the claimed reverse key. */
static __always_inline int snat_claim_port4(struct __sk_buff *skb, const struct l4_tuple *t,
					    __be32 nat_addr, __be16 *nat_port, struct ct_key *rev,
					    struct snat_value *entry)
{
	__u16 min, max;
	__be16 port = t->sport;
	int i;

	snat_port_range(&min, &max);
	/* An echo's identifier is no port: it needs no range. But never 0,
	 * or the reverse key would match the server's own echo requests. */
	if (t->proto == IPPROTO_ICMP ? port == 0 : bpf_ntohs(port) < min || bpf_ntohs(port) > max)
		port = bpf_htons(min + bpf_get_prandom_u32() % (max - min + 1));
	__builtin_memset(entry, 0, sizeof(*entry));
	entry->port = t->sport;
	entry->flags = SNAT_F_REVERSE;
	entry->last_seen_ns = ct_now();
	addr_set4(entry->addr, t->saddr);

	for (i = 0; i < SNAT_PORT_TRIES + 1; i++) {
		struct snat_value *cur;

		/* The reply comes from the server to nat_addr:port. */
		tuple_key4(rev, t->proto, t->daddr, t->dport, nat_addr, port);
		if (host_socket_holds(skb, t, nat_addr, port) ||
		    (t->proto != IPPROTO_ICMP && binding_find4(t->proto, nat_addr, port, 1, 0)))
			goto next; /* the host's, or a published port's */
		if (bpf_map_update_elem(&snat, rev, entry, BPF_NOEXIST) == 0) {
			*nat_port = port;
			return 0;
		}
		cur = bpf_map_lookup_elem(&snat, rev);
		if (cur && cur->port == t->sport && addr_get4(cur->addr) == t->saddr) {
			*nat_port = port; /* ours already: a lost forward entry */
			return 0;
		}
next:
		port = bpf_htons(min + bpf_get_prandom_u32() % (max - min + 1));
	}
	return -1;
}

/* snat4 adds these to STAT_SNAT when the packet opened the flow or
 * closed it (snat_reverse4 adds SNAT_CLOSED to STAT_SNAT_REVERSE): the
 * caller writes the flow's event, from a frame that is not snat4's (its
 * chain of calls is the deepest there is). Callers strip them. */
#define SNAT_OPENED (1U << 31)
#define SNAT_CLOSED (1U << 30)
#define SNAT_EVENT_BITS (SNAT_OPENED | SNAT_CLOSED)

/* Gives the flow of pkt the source nat_addr and a port claimed on it,
 * reusing the translation an earlier packet of the flow got. */
static __noinline __u32 snat4(struct __sk_buff *skb, const struct packet *pkt, __be32 nat_addr)
{
	const struct l4_tuple *t = &pkt->t;
	struct ct_key fwd = {}, rev = {};
	struct snat_value entry;
	struct snat_value *v;
	__u32 done = STAT_SNAT;
	__be16 nat_port;

	tuple_key4(&fwd, t->proto, t->saddr, t->sport, t->daddr, t->dport);
	v = bpf_map_lookup_elem(&snat, &fwd);
	if (v && addr_get4(v->addr) == nat_addr) {
		struct snat_value *other;

		nat_port = v->port;
		tuple_key4(&rev, t->proto, t->daddr, t->dport, nat_addr, nat_port);
		other = bpf_map_lookup_elem(&snat, &rev);
		/* A forward entry is trusted only with its reverse half: else
		 * another flow may own that port now. Claim afresh. */
		if (snat_reverse_of(other, t->saddr, t->sport)) {
			if (snat_update(v, other, pkt, 1))
				done |= SNAT_CLOSED;
			goto rewrite;
		}
	}

	/* Later fragments follow their first; without its entry they have
	 * nowhere to go. */
	if (pkt->frag == FRAG_LATER)
		return STAT_PASS_FRAGMENT;
	if (snat_claim_port4(skb, t, nat_addr, &nat_port, &rev, &entry) < 0)
		return STAT_DROP_SNAT_EXHAUSTED;
	__builtin_memset(&entry, 0, sizeof(entry));
	entry.flags = SNAT_F_FORWARD;
	entry.last_seen_ns = ct_now();
	addr_set4(entry.addr, nat_addr);
	entry.port = nat_port;
	if (t->proto == IPPROTO_TCP)
		entry.tcp_flags = tcp_advance(0, pkt, 1, &entry.tcp, NULL);
	if (bpf_map_update_elem(&snat, &fwd, &entry, BPF_ANY) < 0) {
		bpf_map_delete_elem(&snat, &rev); /* never leave half a flow */
		return STAT_DROP_SNAT_EXHAUSTED;
	}
	done |= SNAT_OPENED;
rewrite:
	if (rewrite_endpoint4(skb, pkt, 0, nat_addr, nat_port) < 0)
		return STAT_DROP_REWRITE;
	return done;
}

/* A masqueraded flow's first packet (EVENT_FLOW_NEW) or the one that
 * closed it (EVENT_FLOW_END), from its two entries: src the container, dst
 * the server, xlat the source it leaves with. pkt is as it arrived:
 * container -> server, or for a reply server -> xlat. */
static __noinline __attribute__((unused)) void event_masquerade(const struct packet *pkt, int reply,
								__u8 type)
{
	const struct l4_tuple *t = &pkt->t;
	struct snat_value *fwd_v, *rev_v;
	struct ct_key k = {};
	struct event *e;

	if (!events_on())
		return;
	tuple_key4(&k, t->proto, t->saddr, t->sport, t->daddr, t->dport);
	if (reply) {
		rev_v = bpf_map_lookup_elem(&snat, &k);
		if (!rev_v)
			return;
		tuple_key4(&k, t->proto, addr_get4(rev_v->addr), rev_v->port, t->saddr, t->sport);
	}
	fwd_v = bpf_map_lookup_elem(&snat, &k);
	if (!fwd_v)
		return;
	e = event_reserve(type);
	if (!e)
		return;
	e->kind = EVENT_KIND_MASQUERADE;
	e->family = PONTOON_AF_INET;
	e->proto = t->proto;
	e->tcp_flags = fwd_v->tcp_flags;
	e->sport = k.sport;
	e->dport = k.dport;
	e->xlat_port = fwd_v->port;
	__builtin_memcpy(e->saddr, k.saddr, 4);
	__builtin_memcpy(e->daddr, k.daddr, 4);
	__builtin_memcpy(e->xlat_addr, fwd_v->addr, 4);
	/* The state both directions saw: an RST from the server is only
	 * in the reply entry. */
	tuple_key4(&k, t->proto, addr_get4(k.daddr), k.dport, addr_get4(fwd_v->addr), fwd_v->port);
	rev_v = bpf_map_lookup_elem(&snat, &k);
	if (rev_v)
		e->tcp_flags |= rev_v->tcp_flags;
	bpf_ringbuf_submit(e, 0);
}

/* Translates a packet from a masquerading network leaving through uplink
 * egress_ifindex. */
static __always_inline __u32 masquerade4(struct __sk_buff *skb, const struct packet *pkt,
					 __u32 egress_ifindex)
{
	const struct l4_tuple *t = &pkt->t;
	struct network_value *src_net;
	struct uplink_value *uplink;
	__u32 stat;

	src_net = network_lookup4(t->saddr);
	if (!src_net || !(src_net->flags & NETWORK_F_MASQUERADE))
		return STAT_PASS_NO_MATCH;
	/* The host's own address in a network (its gateway) is the host's:
	 * its answers to the outside are not a container's flows. */
	if (hostaddr_has4(t->saddr))
		return STAT_PASS_NO_MATCH;
	if (network_lookup4(t->daddr) || hostaddr_has4(t->daddr))
		return STAT_PASS_NO_MATCH;
	uplink = bpf_map_lookup_elem(&uplinks, &egress_ifindex);
	if (!uplink)
		return STAT_PASS_NO_MATCH;
	stat = snat4(skb, pkt, addr_get4(uplink->addr));
	/* The bits come only with STAT_SNAT: returning the constant keeps
	 * stat out of the caller's stack across the call, which has no
	 * room left in bridge_ingress's chain. */
	if (stat & SNAT_EVENT_BITS) {
		event_masquerade(pkt, 0, (stat & SNAT_OPENED) ? EVENT_FLOW_NEW : EVENT_FLOW_END);
		return STAT_SNAT;
	}
	return stat;
}

/* A reply to a masqueraded flow: back to the container. Adds SNAT_CLOSED
 * when the reply closed the flow. For a packet snat_port_maybe let by. */
static __always_inline __u32 snat_reverse4_unfiltered(struct __sk_buff *skb,
						      const struct packet *pkt)
{
	const struct l4_tuple *t = &pkt->t;
	struct ct_key rev = {}, fwd = {};
	struct snat_value *v, *other;
	__be32 orig_addr;
	__be16 orig_port;
	int closed;

	tuple_key4(&rev, t->proto, t->saddr, t->sport, t->daddr, t->dport);
	v = bpf_map_lookup_elem(&snat, &rev);
	if (!v || !(v->flags & SNAT_F_REVERSE))
		return STAT_PASS_NO_MATCH;
	if (v->flags & SNAT_F_HOST)
		return STAT_PASS_NO_MATCH; /* a reply to the host's own ping */
	orig_addr = addr_get4(v->addr);
	orig_port = v->port;
	tuple_key4(&fwd, t->proto, orig_addr, orig_port, t->saddr, t->sport);
	other = bpf_map_lookup_elem(&snat, &fwd);
	/* An orphaned reverse half is never trusted with a reply. */
	if (!other || !(other->flags & SNAT_F_FORWARD) || other->port != t->dport ||
	    addr_get4(other->addr) != t->daddr)
		return STAT_DROP_SNAT_ORPHAN;
	closed = snat_update(v, other, pkt, 0);

	if (rewrite_endpoint4(skb, pkt, 1, orig_addr, orig_port) < 0)
		return STAT_DROP_REWRITE;
	return closed ? STAT_SNAT_REVERSE | SNAT_CLOSED : STAT_SNAT_REVERSE;
}

static __always_inline __u32 snat_reverse4(struct __sk_buff *skb, const struct packet *pkt)
{
	if (!snat_port_maybe(pkt->t.proto, pkt->t.dport))
		return STAT_PASS_NO_MATCH;
	return snat_reverse4_unfiltered(skb, pkt);
}

/* An ICMP error about a masqueraded packet (it quotes nat_addr:nat_port as
 * the source): hand it to the container that sent the packet. Only an
 * error sent where errors about it go, nat_addr, and only about a flow
 * with both halves: else a sender on the link could aim one at any
 * container's own address past the inbound guard. */
static __always_inline __u32 icmp_snat_reverse4(struct __sk_buff *skb, const struct packet *pkt)
{
	const struct l4_tuple *in = &pkt->inner;
	struct snat_value *v, *fwd;
	struct ct_key key = {};
	__be32 orig_addr;
	__be16 orig_port;

	if (pkt->t.daddr != in->saddr)
		return STAT_PASS_NO_MATCH;
	tuple_key4(&key, in->proto, in->daddr, in->dport, in->saddr, in->sport);
	v = bpf_map_lookup_elem(&snat, &key);
	if (!v || !(v->flags & SNAT_F_REVERSE))
		return STAT_PASS_NO_MATCH;
	orig_addr = addr_get4(v->addr);
	orig_port = v->port;
	tuple_key4(&key, in->proto, orig_addr, orig_port, in->daddr, in->dport);
	fwd = bpf_map_lookup_elem(&snat, &key);
	if (!fwd || !(fwd->flags & SNAT_F_FORWARD) || fwd->port != in->sport ||
	    addr_get4(fwd->addr) != in->saddr)
		return STAT_PASS_NO_MATCH;

	if (rewrite_addr4(skb, pkt->l3_off, IP_DADDR_OFF, 0, 0, pkt->t.daddr, orig_addr) < 0)
		return STAT_DROP_REWRITE;
	if (rewrite_quoted4(skb, pkt, IP_SADDR_OFF, 0, in->saddr, orig_addr, in->sport, orig_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_ICMP_SNAT_REVERSE;
}

/* An ICMP error about a masqueraded flow's reply (it quotes server ->
 * container:port), sent by the container: it leaves as the uplink
 * address. Or sent by this host, which could not forward the reply (a
 * bridge with a smaller MTU): it keeps the host's source. Either way the
 * quoted packet shows the address and port the server knows; else the
 * server could not match it, and the container's address would leave in
 * the quote. Another container's error about the flow is not ours to
 * send: it could cut the flow or shrink the server's path MTU. */
static __always_inline __u32 icmp_snat4(struct __sk_buff *skb, const struct packet *pkt,
					__u32 egress_ifindex)
{
	const struct l4_tuple *in = &pkt->inner;
	struct uplink_value *uplink;
	struct ct_key fwd = {};
	struct snat_value *v;
	__be32 nat_addr;
	__be16 nat_port;
	int inside;

	inside = pkt->t.saddr == in->daddr;
	if (!inside && !hostaddr_has4(pkt->t.saddr))
		return STAT_PASS_NO_MATCH;
	tuple_key4(&fwd, in->proto, in->daddr, in->dport, in->saddr, in->sport);
	v = bpf_map_lookup_elem(&snat, &fwd);
	if (!v || !(v->flags & SNAT_F_FORWARD))
		return STAT_PASS_NO_MATCH;
	uplink = bpf_map_lookup_elem(&uplinks, &egress_ifindex);
	nat_addr = addr_get4(v->addr);
	nat_port = v->port;
	if (!uplink || addr_get4(uplink->addr) != nat_addr)
		return STAT_PASS_NO_MATCH;

	if (inside && rewrite_addr4(skb, pkt->l3_off, IP_SADDR_OFF, 0, 0, pkt->t.saddr, nat_addr) < 0)
		return STAT_DROP_REWRITE;
	if (rewrite_quoted4(skb, pkt, IP_DADDR_OFF, 2, in->daddr, nat_addr, in->dport, nat_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_ICMP_SNAT;
}

/* The host's own ping leaving an uplink: its identifier is a port no
 * masqueraded echo may take, or the server's replies would reach a
 * container. Kernel ping sockets cannot be looked up from BPF the way
 * TCP and UDP sockets are, so the identifier is noted as it leaves. */
static __always_inline void snat_note_host_echo4(const struct packet *pkt)
{
	const struct l4_tuple *t = &pkt->t;
	struct snat_value host = {
		.port = t->sport,
		.flags = SNAT_F_REVERSE | SNAT_F_HOST,
	};
	struct ct_key rev = {};
	struct snat_value *v;

	if (t->proto != IPPROTO_ICMP || t->sport == 0 || !hostaddr_has4(t->saddr))
		return;
	tuple_key4(&rev, t->proto, t->daddr, 0, t->saddr, t->sport);
	v = bpf_map_lookup_elem(&snat, &rev);
	if (v) {
		if (v->flags & SNAT_F_HOST)
			ct_stamp(&v->last_seen_ns);
		return; /* a container's flow holds it: too late */
	}
	addr_set4(host.addr, t->saddr);
	host.last_seen_ns = ct_now();
	bpf_map_update_elem(&snat, &rev, &host, BPF_NOEXIST);
}

#endif
