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
#include "lib/snat6.h"
#include "lib/hairpin_icmp.h"

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

/* dnat4 for hairpin4, out of line: its flow's key and state in
 * hairpin4's frame would push the chain down to snat4's port claim past
 * 512 bytes of stack. */
static __noinline __u32 hairpin_dnat4(struct __sk_buff *skb, const struct packet *pkt)
{
	return dnat4(skb, pkt);
}

/* A container dialled a published port of this host: DNAT, then SNAT to
 * the backend network's gateway. Each step works on the packet as the
 * previous one left it, so it is parsed again in between. */
static __noinline __u32 hairpin4(struct __sk_buff *skb, struct packet *pkt)
{
	struct network_value *backend_net;
	__u32 stat = hairpin_dnat4(skb, pkt);

	if (stat != STAT_DNAT)
		return stat;
	if (parse_packet_apart(skb, pkt, ETH_HLEN) != PARSE_OK)
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
	if (parse_packet_apart(skb, pkt, ETH_HLEN) != PARSE_OK)
		return STAT_DROP_REWRITE;
	stat = rnat4(skb, pkt);
	return stat == STAT_RNAT ? STAT_HAIRPIN_REPLY : STAT_DROP_REWRITE;
}

/* forward_translated for IPv6, in a frame of its own: the route lookup's
 * buffers stay off the chain down to snat6's port claim. */
static __noinline int forward_translated6(struct __sk_buff *skb, int *too_big)
{
	int route, action = fib_redirect6(skb, ETH_HLEN, &route);

	*too_big = route == FIB_TOO_BIG;
	return action;
}

/* The bridge's IPv6 path parses its packet once, into the ingress scratch
 * slot (ipv6_nat.h: not on this program's stack, whose IPv4 frames leave
 * little), and the steps after take it from there. The parse and the
 * hairpin's steps are global functions: the verifier checks each once, on
 * its own, where a static one is checked again at every call and for
 * every state the steps before it leave (on 6.1, whose precision tracking
 * stops at calls, a second parse_packet6 alone took the bridge past its
 * 1M-instruction limit). On 5.10 a global function takes only the context
 * and scalars: hence the slot. A rewrite keeps the slot's tuple up to date. */
static __always_inline struct packet6 *packet6_ingress(void)
{
	__u32 slot = PACKET6_INGRESS;

	return bpf_map_lookup_elem(&packet6_scratch, &slot);
}

/* parse_packet6 into the ingress slot. */
__noinline int parse6_ingress(struct __sk_buff *skb)
{
	struct packet6 *pkt = packet6_get(PACKET6_INGRESS);

	return pkt ? parse_packet6(skb, pkt, ETH_HLEN) : PARSE_MALFORMED;
}

/* leave_icmp4 for IPv6, global: checked once, not for each state the
 * bridge's steps before it leave. */
__noinline int leave6_icmp(struct __sk_buff *skb, __u32 egress_ifindex)
{
	struct packet6 *pkt = packet6_ingress();
	__u32 stat;

	if (!pkt)
		return STAT_PASS_NO_MATCH;
	stat = icmp_rnat6(skb, pkt);
	if (stat == STAT_PASS_NO_MATCH)
		stat = icmp_snat6(skb, pkt, egress_ifindex);
	return stat;
}

/* leave4 for IPv6: a reply of a published port's flow, a NAT66 flow, or
 * an ICMPv6 error about either, leaving for the outside: routed as it
 * came, then translated and forwarded straight to the uplink. What BPF
 * cannot forward goes to the stack untranslated; the uplink's egress
 * translates it there. Its packet is the one parse6_ingress left in the
 * scratch slot. */
static __noinline __u32 leave6(struct __sk_buff *skb, int parsed, int *action)
{
	struct packet6 *pkt = packet6_ingress();
	struct bpf_fib_lookup fib = {};
	int route;
	__u32 stat;

	if (!pkt || (parsed != PARSE_OK && parsed != PARSE_ICMP_ERROR))
		return STAT_PASS_NO_MATCH;
	route = fib_route6(skb, ETH_HLEN, &fib);
	if (route == FIB_STACK)
		return STAT_PASS_NO_MATCH;
	if (route == FIB_TOO_BIG)
		return STAT_FIB_TOO_BIG;
	if (parsed == PARSE_ICMP_ERROR) {
		stat = leave6_icmp(skb, fib.ifindex);
	} else {
		stat = rnat6(skb, pkt);
		if (stat == STAT_PASS_NO_MATCH)
			stat = masquerade6(skb, PACKET6_INGRESS, fib.ifindex);
	}
	if (stat_translated(stat))
		*action = fib_forward6(skb, ETH_HLEN, route, &fib);
	return stat;
}

/* A backend answers a hairpinned flow: undo the SNAT, then the DNAT. */
__noinline int hairpin6_reply(struct __sk_buff *skb)
{
	struct packet6 *pkt = packet6_ingress();
	__u32 stat;

	if (!pkt)
		return STAT_PASS_NO_MATCH;
	stat = snat_reverse6(skb, pkt) & ~SNAT_CLOSED; /* the DNAT's event */
	if (stat != STAT_SNAT_REVERSE)
		return stat;
	return rnat6(skb, pkt) == STAT_RNAT ? STAT_HAIRPIN_REPLY : STAT_DROP_REWRITE;
}

/* A container dialled [host address]:P: DNAT to the backend... */
__noinline int hairpin6_dnat(struct __sk_buff *skb)
{
	struct packet6 *pkt = packet6_ingress();

	return pkt ? dnat6(skb, pkt) : STAT_PASS_NO_MATCH;
}

/* ...then SNAT to the backend network's gateway. */
__noinline int hairpin6_snat(struct __sk_buff *skb)
{
	struct packet6 *pkt = packet6_ingress();
	struct network_value *backend_net;
	__u32 stat;

	if (!pkt)
		return STAT_DROP_REWRITE;
	backend_net = network_lookup6(&pkt->t.daddr);
	if (!backend_net)
		return STAT_DROP_REWRITE; /* a backend outside Pontoon's networks */
	/* The flow's events are the DNAT's. */
	stat = snat6(skb, pkt, (const struct in6_addr *)backend_net->gateway, PACKET6_INGRESS) &
	       ~SNAT_EVENT_BITS;
	return stat == STAT_SNAT ? STAT_HAIRPIN : stat;
}

/* hairpin4 and hairpin_reply4 for IPv6, with the forward, for a TCP or
 * UDP packet (an echo has no published port). */
static __noinline __u32 hairpin6(struct __sk_buff *skb, int *action)
{
	struct packet6 *pkt = packet6_ingress();
	int too_big, stat;

	if (!pkt || pkt->t.proto == NEXTHDR_ICMP)
		return STAT_PASS_NO_MATCH;
	stat = hairpin6_reply(skb);

	if (stat == STAT_PASS_NO_MATCH) {
		stat = hairpin6_dnat(skb);
		if (stat != STAT_DNAT)
			return stat;
		stat = hairpin6_snat(skb);
	}
	if (stat != STAT_HAIRPIN && stat != STAT_HAIRPIN_REPLY)
		return stat;
	/* Its source is now the host's: BPF forwards it, or nobody does. */
	*action = forward_translated6(skb, &too_big);
	if (*action != TC_ACT_REDIRECT)
		stat = too_big ? STAT_DROP_FRAG_NEEDED : STAT_DROP_REWRITE;
	return stat;
}

SEC("tc")
int bridge_ingress(struct __sk_buff *skb)
{
	struct packet pkt = {};
	int parsed = parse_packet_apart(skb, &pkt, ETH_HLEN);
	int action = TC_ACT_UNSPEC, too_big;
	__u32 stat = parse_verdict(parsed);

	if (parsed == PARSE_NOT_IP && skb->protocol == bpf_htons(ETH_P_IPV6)) {
		stat = bridge_ipv6(skb);
		if (stat != STAT_PASS_NO_MATCH)
			return finish(skb, stat, action);
		parsed = parse6_ingress(skb);
		if (parsed == PARSE_OK)
			stat = hairpin6(skb, &action);
		if (stat == STAT_DROP_FRAG_NEEDED) {
			/* Counted and shown as dropped; the sender hears why. */
			finish(skb, stat, action);
			return hairpin_too_big6(skb);
		}
		if (stat == STAT_PASS_NO_MATCH && fib_redirect_enabled())
			stat = leave6(skb, parsed, &action);
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
			if (action != TC_ACT_REDIRECT && too_big) {
				/* Counted and shown as dropped, as it is; the
				 * sender hears why. */
				finish(skb, STAT_DROP_FRAG_NEEDED, action);
				return hairpin_frag_needed4(skb);
			}
			if (action != TC_ACT_REDIRECT)
				stat = STAT_DROP_REWRITE;
			return finish(skb, stat, action);
		}
	}
	if ((parsed == PARSE_OK || parsed == PARSE_ICMP_ERROR) && stat == STAT_PASS_NO_MATCH &&
	    fib_redirect_enabled())
		stat = leave4(skb, &pkt, parsed, &action);
	return finish(skb, stat, action);
}
