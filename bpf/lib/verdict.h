/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The one exit of every tc program: count the verdict once, then pass,
 * drop or forward. */
#ifndef PONTOON_VERDICT_H
#define PONTOON_VERDICT_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include "types.h"
#include "maps.h"
#include "parse.h"
#include "network.h"
#include "fib.h"
#include "events.h"

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

static __always_inline int stat_translated(__u32 stat)
{
	return stat == STAT_DNAT || stat == STAT_RNAT || stat == STAT_ICMP_DNAT ||
	       stat == STAT_ICMP_RNAT || stat == STAT_SNAT || stat == STAT_SNAT_REVERSE ||
	       stat == STAT_ICMP_SNAT_REVERSE || stat == STAT_HAIRPIN || stat == STAT_HAIRPIN_REPLY ||
	       stat == STAT_ICMP_SNAT;
}

static __always_inline int stat_dropped(__u32 stat)
{
	return stat == STAT_DROP_REWRITE || stat == STAT_DROP_CT_FULL || stat == STAT_DROP_ISOLATION ||
	       stat == STAT_DROP_SNAT_EXHAUSTED || stat == STAT_DROP_UNMASQUERADED ||
	       stat == STAT_DROP_CT_CLASH || stat == STAT_DROP_FRAG_NEEDED ||
	       stat == STAT_DROP_NOT_PUBLISHED || stat == STAT_DROP_SPOOFED ||
	       stat == STAT_DROP_PROTOCOL || stat == STAT_DROP_SNAT_ORPHAN ||
	       stat == STAT_DROP_NOT_ALLOWED || stat == STAT_DROP_LOCAL_ONLY;
}

/* The last word on a packet about to leave an uplink: one from a
 * masquerading network that nothing translated (a protocol we do not
 * masquerade, a fragment whose first we missed, a flow we lost) would
 * show the outside a private address. Drop it instead. */
static __always_inline __u32 guard_private_source4(int parsed, const struct packet *pkt, __u32 stat)
{
	struct network_value *net;

	if (!pkt->has_addrs || stat_translated(stat) || stat_dropped(stat))
		return stat;
	net = network_lookup4(pkt->t.saddr);
	if (net && (net->flags & NETWORK_F_MASQUERADE) && !hostaddr_has4(pkt->t.saddr))
		return STAT_DROP_UNMASQUERADED;
	return stat;
}

/* From outside, containers are reachable only through what Pontoon
 * translated: published ports' flows and replies to flows they opened.
 * Anything else addressed to a container (a routed LAN host probing ports,
 * fragments, other protocols) is dropped, unless its network is routed.
 * The host's own addresses in a network (its gateway) stay the host's. */
static __always_inline __u32 guard_inbound4(int parsed, const struct packet *pkt, __u32 stat)
{
	struct network_value *net;

	if (!pkt->has_addrs || stat_translated(stat) || stat_dropped(stat))
		return stat;
	net = network_lookup4(pkt->t.daddr);
	if (net && !(net->flags & NETWORK_F_ROUTED) && !hostaddr_has4(pkt->t.daddr))
		return STAT_DROP_NOT_PUBLISHED;
	return stat;
}

/* Untranslated packets go on with TC_ACT_UNSPEC (TCX_NEXT) so programs of
 * other tools attached after ours still see them. A packet whose rewrite
 * failed halfway is dropped rather than sent on corrupted. */
static __always_inline int finish(struct __sk_buff *skb, __u32 stat, int action)
{
	if (stat_dropped(stat)) {
		action = TC_ACT_SHOT;
		event_drop(skb, stat);
	}
	stat_bump(stat, skb->len);
	if (action == TC_ACT_REDIRECT)
		stat_bump(STAT_REDIRECT, skb->len);
	return action;
}

/* Forwards a packet translated on its way in (DNAT, hairpin): routed as
 * it now is. One the route does not let BPF forward goes to the stack as
 * it is, which is fine for a DNATed packet (its source is the client's);
 * *too_big tells the caller when size was the reason. */
static __noinline int forward_translated(struct __sk_buff *skb, const struct packet *pkt,
					      int *too_big)
{
	int route, action = fib_redirect4(skb, pkt->l3_off, &route);

	*too_big = route == FIB_TOO_BIG;
	return action;
}

#endif
