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
#include "fib.h"

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
	       stat == STAT_ICMP_SNAT_REVERSE || stat == STAT_HAIRPIN || stat == STAT_HAIRPIN_REPLY;
}

/* Untranslated packets go on with TC_ACT_UNSPEC (TCX_NEXT) so programs of
 * other tools attached after ours still see them. A packet whose rewrite
 * failed halfway is dropped rather than sent on corrupted. Translated ones
 * are forwarded in BPF when redirect is set and the route allows. */
static __always_inline int finish(struct __sk_buff *skb, const struct packet *pkt, __u32 stat,
				  int redirect)
{
	int action = TC_ACT_UNSPEC;

	if (stat == STAT_DROP_REWRITE || stat == STAT_DROP_CT_FULL || stat == STAT_DROP_ISOLATION ||
	    stat == STAT_DROP_SNAT_EXHAUSTED)
		action = TC_ACT_SHOT;
	else if (redirect && stat_translated(stat))
		action = fib_redirect4(skb, pkt->l3_off);

	stat_bump(stat, skb->len);
	if (action == TC_ACT_REDIRECT)
		stat_bump(STAT_REDIRECT, skb->len);
	return action;
}

#endif
