//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tc ingress on the host side of a container's veth: what the container
 * sends. An endpoint sends only from its own addresses and MAC, and only
 * what Pontoon carries (IPv4, ARP and IPv6; lib/ipv6_endpoint.h has the
 * IPv6 rules): anything else is dropped here,
 * before it can reach a neighbour or the host. Traffic to a container of
 * the same network is handed straight to that container's veth instead of
 * crossing the bridge. That keeps it clear of bridge netfilter
 * (br_netfilter sends bridged frames through iptables' FORWARD chain,
 * whose DROP policy would otherwise cut containers of one network apart),
 * and it is where icc=false is enforced. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/types.h"
#include "lib/maps.h"
#include "lib/nat.h"
#include "lib/network.h"
#include "lib/events.h"
#include "lib/mac.h"
#include "lib/ipv6_endpoint.h"

char __license[] SEC("license") = "Dual BSD/GPL";

static __always_inline struct endpoint_value *endpoint_lookup4(__be32 addr)
{
	struct endpoint_key key = { .family = PONTOON_AF_INET };

	addr_set4(key.addr, addr);
	return bpf_map_lookup_elem(&endpoints, &key);
}

/* Whether addr and mac are this veth's endpoint's own. */
static __always_inline int owns(struct __sk_buff *skb, __be32 addr, const __u8 *mac)
{
	return endpoint_owned(skb, endpoint_lookup4(addr), mac);
}

/* ARP for IPv4 over Ethernet, as the packet carries it. linux/if_arp.h
 * pulls in glibc headers that do not build for BPF. */
#define ARPHRD_ETHER 1

struct arphdr {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
};

struct arp_eth4 {
	struct arphdr hdr;
	__u8 sha[ETH_ALEN];
	__be32 spa;
} __attribute__((packed));

static __always_inline __u32 check_arp(struct __sk_buff *skb, const struct ethhdr *eth)
{
	struct arp_eth4 arp;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &arp, sizeof(arp)) < 0 ||
	    arp.hdr.ar_hrd != bpf_htons(ARPHRD_ETHER) || arp.hdr.ar_pro != bpf_htons(ETH_P_IP) ||
	    arp.hdr.ar_hln != ETH_ALEN || arp.hdr.ar_pln != 4)
		return STAT_DROP_PROTOCOL;
	if (!owns(skb, arp.spa, arp.sha) || !mac_equal(arp.sha, eth->h_source))
		return STAT_DROP_SPOOFED;
	return STAT_PASS_NOT_IP;
}

SEC("tc")
int endpoint_ingress(struct __sk_buff *skb)
{
	struct endpoint_value *dst;
	struct network_value *net;
	int action = TC_ACT_UNSPEC;
	__u32 stat = STAT_PASS_NO_MATCH;
	struct ethhdr eth;
	struct iphdr ip;
	__u32 dst_ifindex = 0, src_network;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0) {
		stat = STAT_DROP_PROTOCOL;
		goto out;
	}
	if (skb->protocol == bpf_htons(ETH_P_ARP)) {
		stat = check_arp(skb, &eth);
		goto out;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		stat = endpoint_ipv6(skb, &eth, &dst_ifindex);
		if (stat == STAT_ENDPOINT_REDIRECT)
			action = bpf_redirect(dst_ifindex, 0);
		goto out;
	}
	if (skb->protocol != bpf_htons(ETH_P_IP)) {
		stat = STAT_DROP_PROTOCOL;
		goto out;
	}
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0) {
		stat = STAT_PASS_MALFORMED;
		goto out;
	}
	if (!owns(skb, ip.saddr, eth.h_source)) {
		stat = STAT_DROP_SPOOFED;
		goto out;
	}
	dst = endpoint_lookup4(ip.daddr);
	net = network_lookup4(ip.saddr);
	src_network = net ? net->id : 0;
	/* Anything else goes through the bridge to the host's IP layer. */
	if (!dst || !net || dst->network_id != src_network)
		goto out;
	dst_ifindex = dst->ifindex;

	if (net->flags & NETWORK_F_NO_ICC) {
		stat = STAT_DROP_ICC;
		goto out;
	}
	/* The frame is already addressed to the peer's MAC. */
	stat = STAT_ENDPOINT_REDIRECT;
	action = bpf_redirect(dst_ifindex, 0);
out:
	if (stat == STAT_DROP_SPOOFED || stat == STAT_DROP_PROTOCOL || stat == STAT_DROP_ICC) {
		action = TC_ACT_SHOT;
		event_drop(skb, stat);
	}
	stat_bump(stat, skb->len);
	return action;
}
