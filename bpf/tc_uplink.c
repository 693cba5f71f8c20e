//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tc programs for uplinks. Ingress DNATs packets for published ports to
 * their container and hands replies of masqueraded flows back to theirs;
 * egress gives a container's replies the address the client dialled and
 * masquerades containers' own flows. Rewriting on egress, after routing,
 * keeps the kernel from dropping them as martians (their new source is
 * ours). With FIB redirect on, tc_bridge.c does the egress work earlier.
 * Each program comes twice: for Ethernet devices, and for devices whose
 * packets start at the IP header (ipip, WireGuard, tun). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lib/types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/nat.h"
#include "lib/ct.h"
#include "lib/dnat.h"
#include "lib/snat.h"
#include "lib/fib.h"
#include "lib/verdict.h"
#include "lib/ipv6.h"
#include "lib/ipv6_nat.h"
#include "lib/snat6.h"
#include "lib/xdp_meta.h"
#include "lib/kernel.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Forwards a translated IPv6 packet, as forward_translated; counts the
 * packets too big to forward here, keeping the caller's frame small. */
static __noinline int forward_translated6(struct __sk_buff *skb, __u32 l3_off)
{
	int route, action = fib_redirect6(skb, l3_off, &route);

	if (route == FIB_TOO_BIG)
		stat_bump(STAT_FIB_TOO_BIG, skb->len);
	return action;
}

/* Uplink ingress: replies of NAT66 flows, published ports, and ICMPv6
 * errors about either; anything else addressed to a container gets in
 * only in a routed network.
 * Its packet lives in packet6_scratch: IPv4's frame, the entry's, leaves
 * this chain little stack. */
static __noinline int uplink_ingress6(struct __sk_buff *skb, __u32 l3_off, int may_forward)
{
	struct packet6 *pkt = packet6_get(PACKET6_INGRESS);
	int action = TC_ACT_UNSPEC, parsed;
	__u32 stat;

	if (!pkt)
		return finish(skb, STAT_PASS_NO_MATCH, action);
	parsed = parse_packet6(skb, pkt, l3_off);
	if (parsed == PARSE_OK) {
		/* A masqueraded flow's reply is the more specific match: it
		 * names the server, a binding only the host port. */
		stat = snat_reverse6(skb, pkt);
		if (stat & SNAT_CLOSED) {
			stat &= ~SNAT_CLOSED;
			event_masquerade6(pkt, 1, EVENT_FLOW_END);
		}
		if (stat == STAT_PASS_NO_MATCH)
			stat = dnat6(skb, pkt);
	} else if (parsed == PARSE_ICMP_ERROR) {
		stat = icmp_snat_reverse6(skb, pkt);
		if (stat == STAT_PASS_NO_MATCH)
			stat = icmp_dnat6(skb, pkt);
	} else {
		stat = parse_verdict(parsed);
	}
	/* The guard's verdict only when it drops: the parse's says more (a
	 * fragment, a loopback-only port). */
	if (!stat_translated(stat) && !stat_dropped(stat) && !inbound_allowed6(&pkt->t.daddr))
		stat = STAT_DROP_NOT_PUBLISHED;
	if (stat_translated(stat) && may_forward && fib_redirect_enabled())
		action = forward_translated6(skb, l3_off);
	return finish(skb, stat, action);
}

/* Uplink egress: a container's replies get the address the client
 * dialled, its own flows the uplink's (NAT66); no masquerading network's
 * source leaves as it is. */
static __noinline int uplink_egress6(struct __sk_buff *skb, __u32 l3_off)
{
	struct packet6 *pkt = packet6_get(PACKET6_EGRESS);
	int parsed;
	__u32 stat;

	if (!pkt)
		return finish(skb, STAT_PASS_NO_MATCH, TC_ACT_UNSPEC);
	parsed = parse_packet6(skb, pkt, l3_off);
	if (parsed == PARSE_OK) {
		stat = rnat6(skb, pkt);
		if (stat == STAT_PASS_NO_MATCH)
			stat = masquerade6(skb, PACKET6_EGRESS, skb->ifindex);
		if (stat == STAT_PASS_NO_MATCH)
			snat_note_host_echo6(pkt);
	} else if (parsed == PARSE_ICMP_ERROR) {
		stat = icmp_rnat6(skb, pkt);
		if (stat == STAT_PASS_NO_MATCH)
			stat = icmp_snat6(skb, pkt, skb->ifindex);
	} else {
		stat = parse_verdict(parsed);
	}
	if (!stat_translated(stat) && !stat_dropped(stat) && !outbound_allowed6(&pkt->t.saddr))
		stat = STAT_DROP_UNMASQUERADED;
	return finish(skb, stat, TC_ACT_UNSPEC);
}

static __always_inline int uplink_ingress_at(struct __sk_buff *skb, __u32 l3_off, int may_forward)
{
	struct packet pkt = { .l3_off = l3_off };
	int action = TC_ACT_UNSPEC, too_big, parsed;
	__u32 stat;

	if (xdp_translated(skb)) {
		/* xdp_uplink.c translated and counted it; only forwarding is left. */
		if (may_forward && fib_redirect_enabled()) {
			action = forward_translated(skb, &pkt, &too_big);
			if (action == TC_ACT_REDIRECT)
				stat_bump(STAT_REDIRECT, skb->len);
		}
		return action;
	}
	if (xdp_missed(skb)) {
		/* xdp_uplink.c looked and found nothing of ours. */
		stat_bump(STAT_PASS_NO_MATCH, skb->len);
		return action;
	}
	parsed = parse_packet(skb, &pkt, l3_off);
	if (parsed == PARSE_NOT_IP && skb->protocol == bpf_htons(ETH_P_IPV6))
		return uplink_ingress6(skb, l3_off, may_forward);
	if (parsed == PARSE_OK) {
		/* Published ports, and the replies of masqueraded flows. */
		stat = dnat4_from(skb, &pkt, 1);
		if (stat & SNAT_CLOSED) {
			stat &= ~SNAT_CLOSED;
			event_masquerade(&pkt, 1, EVENT_FLOW_END);
		}
	} else if (parsed == PARSE_ICMP_ERROR) {
		stat = icmp_snat_reverse4(skb, &pkt);
		if (stat == STAT_PASS_NO_MATCH)
			stat = icmp_dnat4(skb, &pkt);
	} else {
		stat = parse_verdict(parsed);
	}
	stat = guard_inbound4(parsed, &pkt, stat);
	if (stat_translated(stat) && may_forward && fib_redirect_enabled()) {
		action = forward_translated(skb, &pkt, &too_big);
		if (too_big)
			stat_bump(STAT_FIB_TOO_BIG, skb->len);
	}
	return finish(skb, stat, action);
}

static __always_inline int uplink_egress_at(struct __sk_buff *skb, __u32 l3_off)
{
	struct packet pkt = {};
	int parsed = parse_packet(skb, &pkt, l3_off);
	__u32 stat;

	if (parsed == PARSE_NOT_IP && skb->protocol == bpf_htons(ETH_P_IPV6))
		return uplink_egress6(skb, l3_off);
	if (parsed == PARSE_OK) {
		stat = rnat4(skb, &pkt);
		if (stat == STAT_PASS_NO_MATCH)
			stat = masquerade4(skb, &pkt, skb->ifindex);
		if (stat == STAT_PASS_NO_MATCH)
			snat_note_host_echo4(&pkt);
	} else if (parsed == PARSE_ICMP_ERROR) {
		stat = icmp_rnat4(skb, &pkt);
		if (stat == STAT_PASS_NO_MATCH)
			stat = icmp_snat4(skb, &pkt, skb->ifindex);
	} else {
		stat = parse_verdict(parsed);
	}
	stat = guard_private_source4(parsed, &pkt, stat);
	return finish(skb, stat, TC_ACT_UNSPEC);
}

SEC("tc")
int uplink_ingress(struct __sk_buff *skb)
{
	return uplink_ingress_at(skb, ETH_HLEN, 1);
}

SEC("tc")
int uplink_egress(struct __sk_buff *skb)
{
	return uplink_egress_at(skb, ETH_HLEN);
}

SEC("tc")
int uplink_ingress_l3(struct __sk_buff *skb)
{
	return uplink_ingress_at(skb, 0, 1);
}

SEC("tc")
int uplink_egress_l3(struct __sk_buff *skb)
{
	return uplink_egress_at(skb, 0);
}

/* Ingress of an ipip uplink. Before Linux 5.14 (commit 7ad136fd288c, "ipip:
 * allow redirecting ipip and mplsip packets to eth devices") tc sees the
 * outer Ethernet and IP headers in front of the inner packet there. The
 * translation works past them; forwarding in BPF cannot drop them (the
 * kernel's mac header spans both, so bpf_skb_adjust_room would cut the
 * inner header), so the stack forwards: a limitation `pontoon status`
 * names. */
SEC("tc")
int uplink_ingress_ipip(struct __sk_buff *skb)
{
	struct iphdr outer;

	if (kernel_ipip_inner_at_ingress)
		return uplink_ingress_at(skb, 0, 1);
	/* The tunnel's own header carries no options (ip_tunnel_xmit). */
	if (load_iphdr(skb, ETH_HLEN, &outer) < 0 || outer.version != 4 || outer.ihl != 5 ||
	    outer.protocol != IPPROTO_IPIP)
		return finish(skb, STAT_PASS_MALFORMED, TC_ACT_UNSPEC);
	return uplink_ingress_at(skb, ETH_HLEN + sizeof(struct iphdr), 0);
}
