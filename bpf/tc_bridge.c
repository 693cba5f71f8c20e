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
#include "lib/ipv6.h"
#include "lib/ipv6_nat.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* A container may talk to its own network (that stays in L2 and never
 * comes here), to the host, and to the outside; not to another network's
 * containers. The host's addresses in another network (its gateway) are
 * the host's, and stay reachable. */
static __noinline int crosses_networks4(const struct l4_tuple *t)
{
	struct network_value *src = network_lookup4(t->saddr);
	struct network_value *dst;

	if (!src)
		return 0;
	dst = network_lookup4(t->daddr);
	return dst && dst->id != src->id && !hostaddr_has4(t->daddr);
}

/* In frames of their own: the stack space of these translations is not
 * added to masquerade's, whose chain of calls is the deepest. */
static __noinline __u32 leave_rnat4(struct __sk_buff *skb, struct packet *pkt)
{
	return rnat4(skb, pkt);
}

static __noinline __u32 leave_icmp4(struct __sk_buff *skb, struct packet *pkt, __u32 egress_ifindex)
{
	__u32 stat = icmp_rnat4(skb, pkt);

	if (stat == STAT_PASS_NO_MATCH)
		stat = icmp_snat4(skb, pkt, egress_ifindex);
	return stat;
}

/* A container's packet leaving for the outside: a reply of a published
 * port's flow, or a flow of its own to masquerade. The route is looked up
 * first, with the packet as the container sent it (as the stack routes
 * before POSTROUTING's NAT): when BPF cannot forward it (too big for the
 * uplink, no route), it goes to the stack untranslated, which answers with
 * "fragmentation needed" or fragments it, and the uplink's egress program
 * translates what leaves. Translated first, it would carry the host's own
 * address into the stack and die there as a martian. */
static __noinline __u32 leave4(struct __sk_buff *skb, struct packet *pkt, int parsed,
				    int *action)
{
	struct bpf_fib_lookup fib = {};
	int route = fib_route4(skb, pkt->l3_off, pkt->t.saddr, pkt->t.daddr, &fib);
	__u32 stat;

	if (route == FIB_STACK)
		return STAT_PASS_NO_MATCH;
	if (route == FIB_TOO_BIG)
		return STAT_FIB_TOO_BIG;
	if (parsed == PARSE_ICMP_ERROR) {
		stat = leave_icmp4(skb, pkt, fib.ifindex);
	} else {
		stat = leave_rnat4(skb, pkt);
		if (stat == STAT_PASS_NO_MATCH)
			stat = masquerade4(skb, pkt, fib.ifindex);
	}
	if (stat_translated(stat))
		*action = fib_forward4(skb, pkt->l3_off, route, &fib);
	return stat;
}

/* leave4 for IPv6: a reply of a published port's flow (or an ICMPv6 error
 * about one) leaving for the outside, routed as it came, then translated
 * and forwarded straight to the uplink. What BPF cannot forward goes to
 * the stack untranslated; the uplink's egress translates it there. Its
 * packet lives in the scratch slot (ipv6_nat.h), not on this program's
 * stack, whose IPv4 frames leave little. */
static __noinline __u32 leave6(struct __sk_buff *skb, int *action)
{
	struct packet6 *pkt = packet6_get(PACKET6_INGRESS);
	struct bpf_fib_lookup fib = {};
	int parsed, route;
	__u32 stat;

	if (!pkt)
		return STAT_PASS_NO_MATCH;
	parsed = parse_packet6(skb, pkt, ETH_HLEN);
	if (parsed != PARSE_OK && parsed != PARSE_ICMP_ERROR)
		return STAT_PASS_NO_MATCH;
	route = fib_route6(skb, ETH_HLEN, &fib);
	if (route == FIB_STACK)
		return STAT_PASS_NO_MATCH;
	if (route == FIB_TOO_BIG)
		return STAT_FIB_TOO_BIG;
	stat = parsed == PARSE_OK ? rnat6(skb, pkt) : icmp_rnat6(skb, pkt);
	if (stat_translated(stat))
		*action = fib_forward6(skb, ETH_HLEN, route, &fib);
	return stat;
}

/* A container dialled a published port of this host: DNAT, then SNAT to
 * the backend network's gateway. Each step works on the packet as the
 * previous one left it, so it is parsed again in between. */
static __noinline __u32 hairpin4(struct __sk_buff *skb, struct packet *pkt)
{
	struct network_value *backend_net;
	__u32 stat = dnat4(skb, pkt);

	if (stat != STAT_DNAT)
		return stat;
	if (parse_packet(skb, pkt, ETH_HLEN) != PARSE_OK)
		return STAT_DROP_REWRITE;
	backend_net = network_lookup4(pkt->t.daddr);
	if (!backend_net)
		return STAT_DROP_REWRITE; /* a backend outside Pontoon's networks */
	/* The flow's events are the DNAT's. */
	stat = snat4(skb, pkt, addr_get4(backend_net->gateway)) & ~SNAT_EVENT_BITS;
	return stat == STAT_SNAT ? STAT_HAIRPIN : stat;
}

/* The backend's reply to a hairpinned flow: undo the SNAT, then the DNAT. */
static __noinline __u32 hairpin_reply4(struct __sk_buff *skb, struct packet *pkt)
{
	__u32 stat = snat_reverse4(skb, pkt) & ~SNAT_CLOSED; /* the DNAT's event */

	if (stat != STAT_SNAT_REVERSE)
		return stat;
	if (parse_packet(skb, pkt, ETH_HLEN) != PARSE_OK)
		return STAT_DROP_REWRITE;
	stat = rnat4(skb, pkt);
	return stat == STAT_RNAT ? STAT_HAIRPIN_REPLY : STAT_DROP_REWRITE;
}

SEC("tc")
int bridge_ingress(struct __sk_buff *skb)
{
	struct packet pkt = {};
	int parsed = parse_packet(skb, &pkt, ETH_HLEN);
	int action = TC_ACT_UNSPEC, too_big;
	__u32 stat = parse_verdict(parsed);

	if (parsed == PARSE_NOT_IP && skb->protocol == bpf_htons(ETH_P_IPV6)) {
		stat = bridge_ipv6(skb);
		if (stat == STAT_PASS_NO_MATCH && fib_redirect_enabled())
			stat = leave6(skb, &action);
		return finish(skb, stat, action);
	}
	/* Isolation holds for every packet with addresses: any protocol,
	 * fragments, and ICMP errors whatever they quote. */
	if (!pkt.has_addrs)
		return finish(skb, stat, action);
	if (crosses_networks4(&pkt.t))
		return finish(skb, STAT_DROP_ISOLATION, action);

	if (parsed == PARSE_OK) {
		stat = hairpin_reply4(skb, &pkt);
		if (stat == STAT_PASS_NO_MATCH)
			stat = hairpin4(skb, &pkt);
		if (stat == STAT_HAIRPIN || stat == STAT_HAIRPIN_REPLY) {
			/* Its source is now the host's: the stack would drop it. */
			action = forward_translated(skb, &pkt, &too_big);
			if (action != TC_ACT_REDIRECT)
				stat = too_big ? STAT_DROP_FRAG_NEEDED : STAT_DROP_REWRITE;
			return finish(skb, stat, action);
		}
	}
	if ((parsed == PARSE_OK || parsed == PARSE_ICMP_ERROR) && stat == STAT_PASS_NO_MATCH &&
	    fib_redirect_enabled())
		stat = leave4(skb, &pkt, parsed, &action);
	return finish(skb, stat, action);
}
