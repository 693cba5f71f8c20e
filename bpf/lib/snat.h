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

/* Linux's own default ephemeral range, used when the agent set none. */
#define SNAT_PORT_MIN_DEFAULT 32768
#define SNAT_PORT_MAX_DEFAULT 60999
/* Random probes for a free port after the original one is taken: with the
 * range at most half full, 16 misses in a row happen once in 65k flows. */
#define SNAT_PORT_TRIES 16

static __always_inline void snat_touch(struct snat_value *v, __u8 flags)
{
	__u64 now = ct_now();

	if ((v->tcp_flags | flags) != v->tcp_flags)
		v->tcp_flags |= flags;
	if (now - v->last_seen_ns > CT_REFRESH_NS)
		v->last_seen_ns = now;
}

/* Claims a source port on nat_addr for the flow t by inserting its reverse
 * entry. The original port is kept when free, so two containers using the
 * same source port towards the same server both get through. */
static __always_inline int snat_claim_port4(const struct l4_tuple *t, __be32 nat_addr,
					    __be16 *nat_port)
{
	struct config *cfg = config_get();
	__u16 min = SNAT_PORT_MIN_DEFAULT, max = SNAT_PORT_MAX_DEFAULT;
	struct snat_value orig = {
		.port = t->sport,
		.flags = SNAT_F_REVERSE,
		.last_seen_ns = ct_now(),
	};
	struct ct_key rev = {};
	__be16 port = t->sport;
	int i;

	if (cfg && cfg->snat_port_min && cfg->snat_port_max >= cfg->snat_port_min) {
		min = cfg->snat_port_min;
		max = cfg->snat_port_max;
	}
	addr_set4(orig.addr, t->saddr);

	for (i = 0; i < SNAT_PORT_TRIES + 1; i++) {
		struct snat_value *cur;

		/* The reply comes from the server to nat_addr:port. */
		tuple_key4(&rev, t->proto, t->daddr, t->dport, nat_addr, port);
		if (bpf_map_update_elem(&snat, &rev, &orig, BPF_NOEXIST) == 0) {
			*nat_port = port;
			return 0;
		}
		cur = bpf_map_lookup_elem(&snat, &rev);
		if (cur && cur->port == t->sport && addr_get4(cur->addr) == t->saddr) {
			*nat_port = port; /* ours already: a lost forward entry */
			return 0;
		}
		port = bpf_htons(min + bpf_get_prandom_u32() % (max - min + 1));
	}
	return -1;
}

/* Gives the flow of pkt the source nat_addr and a port claimed on it,
 * reusing the translation an earlier packet of the flow got. */
static __always_inline __u32 snat4(struct __sk_buff *skb, const struct packet *pkt, __be32 nat_addr)
{
	const struct l4_tuple *t = &pkt->t;
	__u8 flags = ct_tcp_flags(t->proto, pkt->tcp_flags);
	struct snat_value *v;
	struct ct_key fwd = {};
	__be16 nat_port;

	tuple_key4(&fwd, t->proto, t->saddr, t->sport, t->daddr, t->dport);
	v = bpf_map_lookup_elem(&snat, &fwd);
	if (v && addr_get4(v->addr) == nat_addr) {
		nat_port = v->port;
		snat_touch(v, flags);
	} else {
		struct snat_value fresh = {
			.flags = SNAT_F_FORWARD,
			.tcp_flags = flags,
			.last_seen_ns = ct_now(),
		};

		if (snat_claim_port4(t, nat_addr, &nat_port) < 0)
			return STAT_DROP_SNAT_EXHAUSTED;
		addr_set4(fresh.addr, nat_addr);
		fresh.port = nat_port;
		if (bpf_map_update_elem(&snat, &fwd, &fresh, BPF_ANY) < 0)
			return STAT_DROP_SNAT_EXHAUSTED;
	}
	if (rewrite_endpoint4(skb, pkt, 0, nat_addr, nat_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_SNAT;
}

/* Translates a packet from a masquerading network leaving through uplink
 * egress_ifindex. */
static __always_inline __u32 masquerade4(struct __sk_buff *skb, const struct packet *pkt,
					 __u32 egress_ifindex)
{
	const struct l4_tuple *t = &pkt->t;
	struct network_value *src_net;
	struct uplink_value *uplink;

	src_net = network_lookup4(t->saddr);
	if (!src_net || !(src_net->flags & NETWORK_F_MASQUERADE))
		return STAT_PASS_NO_MATCH;
	if (network_lookup4(t->daddr) || hostaddr_has4(t->daddr))
		return STAT_PASS_NO_MATCH;
	uplink = bpf_map_lookup_elem(&uplinks, &egress_ifindex);
	if (!uplink)
		return STAT_PASS_NO_MATCH;
	return snat4(skb, pkt, addr_get4(uplink->addr));
}

/* A reply to a masqueraded flow: back to the container. */
static __always_inline __u32 snat_reverse4(struct __sk_buff *skb, const struct packet *pkt)
{
	const struct l4_tuple *t = &pkt->t;
	struct ct_key rev = {};
	struct snat_value *v;
	__be32 orig_addr;
	__be16 orig_port;

	tuple_key4(&rev, t->proto, t->saddr, t->sport, t->daddr, t->dport);
	v = bpf_map_lookup_elem(&snat, &rev);
	if (!v || !(v->flags & SNAT_F_REVERSE))
		return STAT_PASS_NO_MATCH;
	snat_touch(v, ct_tcp_flags(t->proto, pkt->tcp_flags));
	orig_addr = addr_get4(v->addr);
	orig_port = v->port;

	if (rewrite_endpoint4(skb, pkt, 1, orig_addr, orig_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_SNAT_REVERSE;
}

/* An ICMP error about a masqueraded packet (it quotes nat_addr:nat_port as
 * the source): hand it to the container that sent the packet. */
static __always_inline __u32 icmp_snat_reverse4(struct __sk_buff *skb, const struct packet *pkt)
{
	const struct l4_tuple *in = &pkt->inner;
	struct ct_key rev = {};
	struct snat_value *v;
	__be32 orig_addr;
	__be16 orig_port;

	tuple_key4(&rev, in->proto, in->daddr, in->dport, in->saddr, in->sport);
	v = bpf_map_lookup_elem(&snat, &rev);
	if (!v || !(v->flags & SNAT_F_REVERSE))
		return STAT_PASS_NO_MATCH;
	orig_addr = addr_get4(v->addr);
	orig_port = v->port;

	if (pkt->t.daddr == in->saddr &&
	    rewrite_addr4(skb, pkt->l3_off, IP_DADDR_OFF, 0, 0, pkt->t.daddr, orig_addr) < 0)
		return STAT_DROP_REWRITE;
	if (rewrite_quoted4(skb, pkt, IP_SADDR_OFF, 0, in->saddr, orig_addr, in->sport, orig_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_ICMP_SNAT_REVERSE;
}

#endif
