//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tc ingress on a Pontoon bridge: packets from containers on their way to
 * the host's IP layer. Networks are isolated from each other here.
 * Hairpin: a container dialling hostIP:P without the socket hooks (a VM, a
 * raw client, or a peer icc=false forbids it to reach directly) is DNATed
 * to the backend and SNATed to the backend network's gateway, so the reply
 * comes back through here too; both ways are forwarded in BPF, since the
 * stack would drop a routed packet with its own address as source. With
 * FIB redirect on, replies of published ports and masqueraded flows are
 * translated here as well and sent straight to the uplink, never taking
 * the stack's forward path (and so never meeting a FORWARD DROP policy). */
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

/* A container dialled a published port of this host: DNAT, then SNAT to
 * the backend network's gateway. Each step works on the packet as the
 * previous one left it, so it is parsed again in between. */
static __always_inline __u32 hairpin4(struct __sk_buff *skb, struct packet *pkt)
{
	struct network_value *backend_net;
	__u32 stat = dnat4(skb, pkt);

	if (stat != STAT_DNAT)
		return stat;
	if (parse_packet(skb, pkt) != PARSE_OK)
		return STAT_DROP_REWRITE;
	backend_net = network_lookup4(pkt->t.daddr);
	if (!backend_net)
		return STAT_DROP_REWRITE; /* a backend outside Pontoon's networks */
	stat = snat4(skb, pkt, addr_get4(backend_net->gateway));
	return stat == STAT_SNAT ? STAT_HAIRPIN : stat;
}

/* The backend's reply to a hairpinned flow: undo the SNAT, then the DNAT. */
static __always_inline __u32 hairpin_reply4(struct __sk_buff *skb, struct packet *pkt)
{
	__u32 stat = snat_reverse4(skb, pkt);

	if (stat != STAT_SNAT_REVERSE)
		return stat;
	if (parse_packet(skb, pkt) != PARSE_OK)
		return STAT_DROP_REWRITE;
	stat = rnat4(skb, pkt);
	return stat == STAT_RNAT ? STAT_HAIRPIN_REPLY : STAT_DROP_REWRITE;
}

SEC("tc")
int bridge_ingress(struct __sk_buff *skb)
{
	struct packet pkt = {};
	int parsed = parse_packet(skb, &pkt);
	int redirect = fib_redirect_enabled();
	__u32 stat;

	if (parsed == PARSE_OK || parsed == PARSE_ICMP_ERROR) {
		if (crosses_networks4(&pkt.t)) {
			stat = STAT_DROP_ISOLATION;
		} else if (parsed == PARSE_ICMP_ERROR) {
			stat = redirect ? icmp_rnat4(skb, &pkt) : STAT_PASS_NO_MATCH;
		} else {
			stat = hairpin_reply4(skb, &pkt);
			if (stat == STAT_PASS_NO_MATCH)
				stat = hairpin4(skb, &pkt);
			if (stat == STAT_HAIRPIN || stat == STAT_HAIRPIN_REPLY)
				redirect = 1;
			else if (stat == STAT_PASS_NO_MATCH && redirect &&
				 (stat = rnat4(skb, &pkt)) == STAT_PASS_NO_MATCH)
				stat = masquerade_routed4(skb, &pkt);
		}
	} else {
		stat = parse_verdict(parsed);
	}
	return finish(skb, &pkt, stat, redirect);
}
