//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tc ingress on the host side of a container's veth: what the container
 * sends. Traffic to a container of the same network is handed straight to
 * that container's veth instead of crossing the bridge. That keeps it clear
 * of bridge netfilter (br_netfilter sends bridged frames through iptables'
 * FORWARD chain, whose DROP policy would otherwise cut containers of one
 * network apart), and it is where icc=false is enforced. */
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

char __license[] SEC("license") = "Dual BSD/GPL";

static __always_inline struct endpoint_value *endpoint_lookup4(__be32 addr)
{
	struct endpoint_key key = { .family = PONTOON_AF_INET };

	addr_set4(key.addr, addr);
	return bpf_map_lookup_elem(&endpoints, &key);
}

SEC("tc")
int endpoint_ingress(struct __sk_buff *skb)
{
	struct endpoint_value *src, *dst;
	struct network_value *net;
	int action = TC_ACT_UNSPEC;
	__u32 stat = STAT_PASS_NO_MATCH;
	struct iphdr ip;
	__u32 dst_ifindex;

	if (skb->protocol != bpf_htons(ETH_P_IP)) {
		stat = STAT_PASS_NOT_IP;
		goto out;
	}
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0) {
		stat = STAT_PASS_MALFORMED;
		goto out;
	}
	dst = endpoint_lookup4(ip.daddr);
	src = endpoint_lookup4(ip.saddr);
	/* Anything else goes through the bridge to the host's IP layer. */
	if (!dst || !src || dst->network_id != src->network_id)
		goto out;
	dst_ifindex = dst->ifindex;

	net = network_lookup4(ip.saddr);
	if (net && (net->flags & NETWORK_F_NO_ICC)) {
		stat = STAT_DROP_ICC;
		action = TC_ACT_SHOT;
		goto out;
	}
	/* The frame is already addressed to the peer's MAC. */
	stat = STAT_ENDPOINT_REDIRECT;
	action = bpf_redirect(dst_ifindex, 0);
out:
	stat_bump(stat, skb->len);
	return action;
}
