/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Published ports on the wire: DNAT towards a container, and the reverse
 * translation of its replies, ICMP errors included. */
#ifndef PONTOON_DNAT_H
#define PONTOON_DNAT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"
#include "parse.h"
#include "csum.h"
#include "nat.h"
#include "ct.h"
#include "snat.h"
#include "network.h"

/* snat_reverse4 for dnat4_from, out of line: its keys beside the flow's
 * own would push the uplink's deepest chain past 512 bytes of stack. The
 * caller filters the port, so that most packets skip the call. */
static __noinline __attribute__((unused)) __u32 snat_reverse4_apart(struct __sk_buff *skb,
								     const struct packet *pkt)
{
	return snat_reverse4_unfiltered(skb, pkt);
}

/* DNAT for a published port. outside: the client came in on an uplink, so
 * the binding's --allow-from list applies, and masqueraded flows' replies
 * arrive there. Such a reply is the more specific match (it names the
 * server, a binding only the host port), and is judged before the binding
 * is, except that an established DNAT flow goes first: ports are never
 * claimed for masquerading while published, and a flow's entries go when
 * its port is unpublished, so no reply can share a DNAT flow's tuple, and
 * the common packet skips the snat lookup. It skips the check that a
 * wildcard binding's packet is for the host itself too, unless it is a SYN:
 * the flow's first packet passed it (a flow outlives its address, as in
 * netfilter's conntrack). outside is a constant: the bridge's hairpin path,
 * whose clients are containers, compiles without either. The caller strips
 * the SNAT_CLOSED that snat_reverse4's answer may carry. */
static __always_inline __u32 dnat4_from(struct __sk_buff *skb, const struct packet *pkt, int outside)
{
	const struct l4_tuple *t = &pkt->t;
	struct binding_value *b = NULL;
	struct ct_value *v = NULL;
	struct ct_key key;
	__be16 backend_port = 0;
	__be32 backend = 0;
	__u32 stat, binding_id = 0;
	int is_new = 0, wild = 0, tracked;

	if (t->proto == IPPROTO_ICMP || !t->daddr) /* no client dials 0.0.0.0 from a link */
		stat = STAT_PASS_NO_MATCH;
	else if (is_loopback4(t->daddr)) /* loopback bindings live only in the socket path */
		stat = STAT_PASS_LOCAL_ONLY;
	else if (!(b = binding_find4_unchecked(t->proto, t->daddr, t->dport, 1, &wild)))
		stat = STAT_PASS_NO_MATCH;
	else if (b->flags & BINDING_F_LOCAL_ONLY)
		stat = STAT_PASS_LOCAL_ONLY;
	else if (outside && !allow_from4(b, t->saddr))
		stat = STAT_DROP_NOT_ALLOWED;
	else
		stat = STAT_DNAT;
	/* A wildcard binding's packet must be for the host itself before
	 * the binding judges it, and before a SYN, which may restart a
	 * closed flow. */
	if (wild && (stat != STAT_DNAT || tcp_is_syn(pkt))) {
		if (!hostaddr_has4(t->daddr))
			stat = STAT_PASS_NO_MATCH;
		wild = 0;
	}
	if (stat == STAT_DNAT) {
		backend = addr_get4(b->backend_addr);
		backend_port = b->backend_port;
		binding_id = b->id;
		if (ct_follow_dnat4(pkt, &key, backend, backend_port, &v, &is_new))
			goto rewrite;
	}
	if (wild && !hostaddr_has4(t->daddr))
		stat = STAT_PASS_NO_MATCH;
	if (outside && snat_port_maybe(t->proto, t->dport)) {
		__u32 reply = snat_reverse4_apart(skb, pkt);

		if (reply != STAT_PASS_NO_MATCH)
			return reply;
	}
	if (stat != STAT_DNAT)
		return stat;

	tracked = ct_open_dnat4(skb, pkt, &key, v, is_new, binding_id, may_open_flow4(pkt));
	if (tracked == CT_NOT_TRACKED)
		return STAT_PASS_NOT_NEW;
	if (tracked == CT_CLASH)
		return STAT_DROP_CT_CLASH;
	if (tracked < 0)
		return STAT_DROP_CT_FULL;
rewrite:
	if (rewrite_endpoint4(skb, pkt, 1, backend, backend_port) < 0)
		return STAT_DROP_REWRITE;
	binding_count(skb, binding_id, 1);
	return STAT_DNAT;
}

static __always_inline __u32 dnat4(struct __sk_buff *skb, const struct packet *pkt)
{
	return dnat4_from(skb, pkt, 0);
}

/* An ICMP error from outside about a reply we sent: the quoted packet has
 * the host address and port as its source; hand it to the backend. Only
 * an error sent to that address, where errors about the reply go: one
 * aimed at a container's own address must meet the inbound guard. */
static __always_inline __u32 icmp_dnat4(struct __sk_buff *skb, const struct packet *pkt)
{
	const struct l4_tuple *in = &pkt->inner;
	struct binding_value *b;
	struct ct_value *v;
	__be16 backend_port;
	__be32 backend;

	if (pkt->t.daddr != in->saddr)
		return STAT_PASS_NO_MATCH;
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

	if (rewrite_addr4(skb, pkt->l3_off, IP_DADDR_OFF, 0, 0, pkt->t.daddr, backend) < 0)
		return STAT_DROP_REWRITE;
	if (rewrite_quoted4(skb, pkt, IP_SADDR_OFF, 0, in->saddr, backend, in->sport,
			    backend_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_ICMP_DNAT;
}

static __always_inline __u32 rnat4(struct __sk_buff *skb, const struct packet *pkt)
{
	const struct l4_tuple *t = &pkt->t;
	struct ct_key key = {};
	struct ct_value *v;
	__u32 binding_id;
	int is_new;
	__be16 nat_port;
	__be32 nat_addr;

	tuple_key4(&key, t->proto, t->saddr, t->sport, t->daddr, t->dport);
	v = ct_find(&key, &is_new);
	if (!v || !(v->flags & CT_F_DNAT_REPLY))
		return STAT_PASS_NO_MATCH;
	ct_update(v, &key, pkt, CT_DIR_REPLY);
	if (!(v->flags & CT_F_REPLIED))
		v->flags |= CT_F_REPLIED;
	nat_addr = addr_get4(v->nat_addr);
	nat_port = v->nat_port;
	binding_id = v->binding_id;
	if (is_new && ct_answered(v, t->proto))
		ct_promote(&key, v);

	if (rewrite_endpoint4(skb, pkt, 0, nat_addr, nat_port) < 0)
		return STAT_DROP_REWRITE;
	binding_count(skb, binding_id, 0);
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
	int inside;

	v = ct_lookup_reply4(in->proto, in->daddr, in->dport, in->saddr, in->sport);
	if (!v)
		return STAT_PASS_NO_MATCH;
	nat_addr = addr_get4(v->nat_addr);
	nat_port = v->nat_port;

	/* The backend itself, or the host's gateway in its network: the
	 * client must see the address it dialled, as netfilter makes a
	 * related ICMP error look like a reply. Another container's error
	 * about the flow is not ours to send: it could cut the flow or shrink
	 * the client's path MTU. */
	inside = pkt->t.saddr == in->daddr;
	if (!inside && network_lookup4(pkt->t.saddr)) {
		if (!hostaddr_has4(pkt->t.saddr))
			return STAT_PASS_NO_MATCH;
		inside = 1;
	}
	if (inside && rewrite_addr4(skb, pkt->l3_off, IP_SADDR_OFF, 0, 0, pkt->t.saddr, nat_addr) < 0)
		return STAT_DROP_REWRITE;
	if (rewrite_quoted4(skb, pkt, IP_DADDR_OFF, 2, in->daddr, nat_addr, in->dport,
			    nat_port) < 0)
		return STAT_DROP_REWRITE;
	return STAT_ICMP_RNAT;
}

#endif
