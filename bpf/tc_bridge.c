//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tc ingress on a Pontoon bridge: packets from containers on their way to
 * the host's IP layer. Networks are isolated from each other here. With
 * FIB redirect on, replies of published ports and masqueraded flows are
 * translated here and sent straight to the uplink, never taking the
 * stack's forward path (and so never meeting a FORWARD policy of DROP). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lib/types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/nat.h"
#include "lib/ct.h"
#include "lib/network.h"
#include "lib/dnat.h"
#include "lib/snat.h"
#include "lib/fib.h"
#include "lib/verdict.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* A container may talk to its own network (that stays in L2 and never
 * comes here), to the host, and to the outside; not to another network's
 * containers. The host's addresses in another network (its gateway) are
 * the host's, and stay reachable. */
static __always_inline int crosses_networks4(const struct l4_tuple *t)
{
	struct network_value *src = network_lookup4(t->saddr);
	struct network_value *dst;

	if (!src)
		return 0;
	dst = network_lookup4(t->daddr);
	return dst && dst->id != src->id && !hostaddr_has4(t->daddr);
}

/* Masquerade before routing needs to know the uplink the packet will take. */
static __always_inline __u32 masquerade_routed4(struct __sk_buff *skb, const struct packet *pkt)
{
	struct bpf_fib_lookup fib = {
		.family = AF_INET,
		.l4_protocol = pkt->t.proto,
		.ipv4_src = pkt->t.saddr,
		.ipv4_dst = pkt->t.daddr,
		.ifindex = skb->ifindex,
	};
	int ret = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_DIRECT);

	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return STAT_PASS_NO_MATCH;
	return masquerade4(skb, pkt, fib.ifindex);
}

SEC("tc")
int bridge_ingress(struct __sk_buff *skb)
{
	struct packet pkt = {};
	int parsed = parse_packet(skb, &pkt);
	int redirect = fib_redirect_enabled();
	__u32 stat;

	if (parsed == PARSE_OK || parsed == PARSE_ICMP_ERROR) {
		if (crosses_networks4(&pkt.t))
			stat = STAT_DROP_ISOLATION;
		else if (!redirect)
			stat = STAT_PASS_NO_MATCH;
		else if (parsed == PARSE_ICMP_ERROR)
			stat = icmp_rnat4(skb, &pkt);
		else if ((stat = rnat4(skb, &pkt)) == STAT_PASS_NO_MATCH)
			stat = masquerade_routed4(skb, &pkt);
	} else {
		stat = parse_verdict(parsed);
	}
	return finish(skb, &pkt, stat, redirect);
}
