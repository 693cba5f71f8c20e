/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding in BPF: after a translation, look the route up and hand the
 * packet straight to the next device. The packet never takes the stack's
 * forward path, so a FORWARD policy of DROP (Docker leaves it so) cannot
 * drop it, and the translated source is never seen as a martian. */
#ifndef PONTOON_FIB_H
#define PONTOON_FIB_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "csum.h"
#include "maps.h"

#define AF_INET 2

static __always_inline int fib_redirect_enabled(void)
{
	struct config *cfg = config_get();

	return cfg && (cfg->flags & CONFIG_F_FIB_REDIRECT);
}

/* Returns TC_ACT_REDIRECT, or TC_ACT_UNSPEC when the stack should deal
 * with the packet (no route, TTL running out, MTU exceeded). */
static __always_inline int fib_redirect4(struct __sk_buff *skb, __u32 l3_off)
{
	struct bpf_fib_lookup fib = {};
	__be16 ttl_word_old, ttl_word_new;
	struct iphdr ip;
	int ret;

	if (bpf_skb_load_bytes(skb, l3_off, &ip, sizeof(ip)) < 0)
		return TC_ACT_UNSPEC;
	if (ip.ttl <= 1)
		return TC_ACT_UNSPEC;

	fib.family = AF_INET;
	fib.tos = ip.tos;
	fib.l4_protocol = ip.protocol;
	fib.tot_len = bpf_ntohs(ip.tot_len);
	fib.ipv4_src = ip.saddr;
	fib.ipv4_dst = ip.daddr;
	fib.ifindex = skb->ifindex;
	ret = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_UNSPEC;

	/* Forwarding decrements the TTL; so must we. TTL shares a checksum
	 * word with the protocol. */
	__builtin_memcpy(&ttl_word_old, &ip.ttl, 2);
	ip.ttl--;
	__builtin_memcpy(&ttl_word_new, &ip.ttl, 2);
	if (bpf_l3_csum_replace(skb, l3_off + IP_CSUM_OFF, ttl_word_old, ttl_word_new, 2) < 0 ||
	    bpf_skb_store_bytes(skb, l3_off + offsetof(struct iphdr, ttl), &ip.ttl, 1, 0) < 0)
		return TC_ACT_SHOT;

	if (ret == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(fib.ifindex, 0);
}

#endif
