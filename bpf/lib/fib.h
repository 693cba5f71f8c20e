/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding in BPF: look the route up and hand the packet straight to the
 * next device. The packet never takes the stack's forward path, so a
 * FORWARD policy of DROP (Docker leaves it so) cannot drop it, and a
 * translated source is never seen as a martian.
 *
 * What BPF cannot do, the stack does: a packet too big for the egress
 * device (answered with ICMP "fragmentation needed", or fragmented) and one
 * with no usable route go to the stack. Callers look the route up before
 * any rewrite the stack would refuse (a source that is the host's own), so
 * such a packet can still go there as it came. */
#ifndef PONTOON_FIB_H
#define PONTOON_FIB_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "maps.h"
#include "kernel.h"

#define AF_INET 2
#define AF_INET6 10

static __always_inline int fib_redirect_enabled(void)
{
	struct config *cfg = config_get();

	return cfg && (cfg->flags & CONFIG_F_FIB_REDIRECT);
}

enum fib_route {
	FIB_STACK = 0, /* no route BPF may take, or TTL expiring: the stack decides */
	FIB_TOO_BIG,   /* exceeds the egress MTU: the stack fragments or says so */
	FIB_FORWARD,   /* route and neighbour known */
	FIB_FORWARD_NEIGH, /* route known, neighbour to be resolved */
};

/* Where a packet of saddr -> daddr leaves when forwarded, as the stack
 * would route it. A GSO packet is judged by its segments: handing the FIB
 * its whole length would call every GRO aggregate too big. Before 5.12
 * (no bpf_check_mtu) its segments go unchecked, as the FIB passes GSO
 * packets of any size there: a limitation `pontoon status` names. */
static __always_inline int fib_route4(struct __sk_buff *skb, __u32 l3_off, __be32 saddr,
				      __be32 daddr, struct bpf_fib_lookup *fib)
{
	__u32 mtu_len = 0;
	struct iphdr ip;
	int ret;

	if (bpf_skb_load_bytes(skb, l3_off, &ip, sizeof(ip)) < 0)
		return FIB_STACK;
	if (ip.ttl <= 1)
		return FIB_STACK;

	fib->family = AF_INET;
	fib->tos = ip.tos;
	fib->l4_protocol = ip.protocol;
	fib->tot_len = skb->gso_size ? 0 : bpf_ntohs(ip.tot_len);
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = skb->ifindex;
	ret = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (ret == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return FIB_TOO_BIG;
	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return FIB_STACK;
	if (kernel_has_check_mtu && skb->gso_size &&
	    bpf_check_mtu(skb, fib->ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS) != BPF_MTU_CHK_RET_SUCCESS)
		return FIB_TOO_BIG;
	return ret == BPF_FIB_LKUP_RET_SUCCESS ? FIB_FORWARD : FIB_FORWARD_NEIGH;
}

/* Forwards a packet along a route fib_route4 found: TTL down by one, an
 * Ethernet header where the packet came without one (an L3 uplink), then
 * the redirect. Returns the tc action. */
static __always_inline int fib_forward4(struct __sk_buff *skb, __u32 l3_off, int route,
					const struct bpf_fib_lookup *fib)
{
	__be16 ttl_word_old, ttl_word_new, proto = bpf_htons(ETH_P_IP);
	struct iphdr ip;

	if (bpf_skb_load_bytes(skb, l3_off, &ip, sizeof(ip)) < 0)
		return TC_ACT_SHOT;
	/* TTL shares a checksum word with the protocol. */
	__builtin_memcpy(&ttl_word_old, &ip.ttl, 2);
	ip.ttl--;
	__builtin_memcpy(&ttl_word_new, &ip.ttl, 2);
	if (bpf_l3_csum_replace(skb, l3_off + IP_CSUM_OFF, ttl_word_old, ttl_word_new, 2) < 0 ||
	    bpf_skb_store_bytes(skb, l3_off + offsetof(struct iphdr, ttl), &ip.ttl, 1, 0) < 0)
		return TC_ACT_SHOT;

	if (l3_off == 0) {
		if (bpf_skb_change_head(skb, ETH_HLEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, 2, 0) < 0)
			return TC_ACT_SHOT;
	}
	if (route == FIB_FORWARD_NEIGH)
		return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(fib->ifindex, 0);
}

/* Routes and forwards a packet already translated (DNAT and hairpin look
 * the route up after the rewrite, as the stack does after PREROUTING). */
static __always_inline int fib_redirect4(struct __sk_buff *skb, __u32 l3_off, int *route)
{
	struct bpf_fib_lookup fib = {};
	struct iphdr ip;

	if (bpf_skb_load_bytes(skb, l3_off, &ip, sizeof(ip)) < 0) {
		*route = FIB_STACK;
		return TC_ACT_UNSPEC;
	}
	*route = fib_route4(skb, l3_off, ip.saddr, ip.daddr, &fib);
	if (*route < FIB_FORWARD)
		return TC_ACT_UNSPEC;
	return fib_forward4(skb, l3_off, *route, &fib);
}

/* IPv6 as fib_route4: judged by the segments of a GSO packet, and with the
 * whole header chain's length otherwise (payload_len counts the extension
 * headers). A hop limit about to run out is the stack's to answer. */
static __always_inline int fib_route6(struct __sk_buff *skb, __u32 l3_off,
				      struct bpf_fib_lookup *fib)
{
	__u32 mtu_len = 0;
	struct ipv6hdr ip6;
	int ret;

	if (bpf_skb_load_bytes(skb, l3_off, &ip6, sizeof(ip6)) < 0)
		return FIB_STACK;
	if (ip6.hop_limit <= 1)
		return FIB_STACK;

	fib->family = AF_INET6;
	fib->flowinfo = *(__be32 *)&ip6 & bpf_htonl(0x0fffffff);
	fib->l4_protocol = ip6.nexthdr;
	fib->tot_len = skb->gso_size ? 0 : sizeof(ip6) + bpf_ntohs(ip6.payload_len);
	__builtin_memcpy(fib->ipv6_src, &ip6.saddr, 16);
	__builtin_memcpy(fib->ipv6_dst, &ip6.daddr, 16);
	fib->ifindex = skb->ifindex;
	ret = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (ret == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return FIB_TOO_BIG;
	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return FIB_STACK;
	if (kernel_has_check_mtu && skb->gso_size &&
	    bpf_check_mtu(skb, fib->ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS) != BPF_MTU_CHK_RET_SUCCESS)
		return FIB_TOO_BIG;
	return ret == BPF_FIB_LKUP_RET_SUCCESS ? FIB_FORWARD : FIB_FORWARD_NEIGH;
}

/* fib_forward4 for IPv6: the hop limit has no header checksum to absorb
 * it, so skb->csum of a CHECKSUM_COMPLETE skb follows the store. */
static __always_inline int fib_forward6(struct __sk_buff *skb, __u32 l3_off, int route,
					const struct bpf_fib_lookup *fib)
{
	__u32 hop_off = l3_off + offsetof(struct ipv6hdr, hop_limit);
	__be16 proto = bpf_htons(ETH_P_IPV6);
	__u8 hop_limit;

	if (bpf_skb_load_bytes(skb, hop_off, &hop_limit, 1) < 0)
		return TC_ACT_SHOT;
	hop_limit--;
	if (bpf_skb_store_bytes(skb, hop_off, &hop_limit, 1, BPF_F_RECOMPUTE_CSUM) < 0)
		return TC_ACT_SHOT;

	if (l3_off == 0) {
		if (bpf_skb_change_head(skb, ETH_HLEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, 2, 0) < 0)
			return TC_ACT_SHOT;
	}
	if (route == FIB_FORWARD_NEIGH)
		return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(fib->ifindex, 0);
}

/* fib_redirect4 for IPv6: routes and forwards a packet already translated. */
static __always_inline int fib_redirect6(struct __sk_buff *skb, __u32 l3_off, int *route)
{
	struct bpf_fib_lookup fib = {};

	*route = fib_route6(skb, l3_off, &fib);
	if (*route < FIB_FORWARD)
		return TC_ACT_UNSPEC;
	return fib_forward6(skb, l3_off, *route, &fib);
}

#endif
