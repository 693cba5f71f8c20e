/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* What an endpoint may send over IPv6 (tc_endpoint.c). The agent gives
 * each endpoint its address statically and writes two endpoints entries
 * for it: its address and its link-local fe80::/64 address derived from
 * its MAC (EUI-64). It may send from those two only, or from :: for the
 * duplicate address detection of an address of its own and for the MLD
 * reports of its own MAC before it has a link-local address. Router
 * advertisements and redirects from containers are dropped: no container
 * is the network's router, and the host configures none of them by RA.
 * A neighbour advertisement must be for an address of the sender's own,
 * so no container can answer for a peer's or the gateway's address. */
#ifndef PONTOON_IPV6_ENDPOINT_H
#define PONTOON_IPV6_ENDPOINT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"
#include "mac.h"
#include "ipv6.h"

/* The neighbour discovery target, behind the ICMPv6 header's first 8
 * bytes (type, code, checksum, flags or reserved). */
#define ND_TARGET_OFF 8

static __always_inline int nd_target_owned(struct __sk_buff *skb, __u32 l4_off, const __u8 *mac)
{
	struct in6_addr target;

	if (bpf_skb_load_bytes(skb, l4_off + ND_TARGET_OFF, &target, sizeof(target)) < 0)
		return 0;
	return endpoint_owned(skb, endpoint_lookup6(&target), mac);
}

/* Whether mac is the MAC of an endpoint behind this veth: the endpoint
 * entry of the link-local address it gives (modified EUI-64) says so. */
static __always_inline int mac_owned6(struct __sk_buff *skb, const __u8 *mac)
{
	struct in6_addr ll = {};

	ll.in6_u.u6_addr8[0] = 0xfe;
	ll.in6_u.u6_addr8[1] = 0x80;
	ll.in6_u.u6_addr8[8] = mac[0] ^ 0x02;
	ll.in6_u.u6_addr8[9] = mac[1];
	ll.in6_u.u6_addr8[10] = mac[2];
	ll.in6_u.u6_addr8[11] = 0xff;
	ll.in6_u.u6_addr8[12] = 0xfe;
	ll.in6_u.u6_addr8[13] = mac[3];
	ll.in6_u.u6_addr8[14] = mac[4];
	ll.in6_u.u6_addr8[15] = mac[5];
	return endpoint_owned(skb, endpoint_lookup6(&ll), mac);
}

/* ff02::16, all MLDv2-capable routers: where MLDv2 reports go. */
static __always_inline int addr6_is_mld2_routers(const struct in6_addr *a)
{
	return a->in6_u.u6_addr32[0] == bpf_htonl(0xff020000) && !a->in6_u.u6_addr32[1] &&
	       !a->in6_u.u6_addr32[2] && a->in6_u.u6_addr32[3] == bpf_htonl(0x16);
}

/* Returns the verdict for an IPv6 frame from the endpoint behind this veth;
 * STAT_ENDPOINT_REDIRECT with *to_ifindex for a peer of its network. */
static __noinline __u32 endpoint_ipv6(struct __sk_buff *skb, const struct ethhdr *eth,
				      __u32 *to_ifindex)
{
	struct endpoint_value *src, *dst;
	struct ipv6hdr ip6;
	__u32 l4_off = 0;
	__u8 type = 0;
	int proto;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0 || ip6.version != 6)
		return STAT_DROP_PROTOCOL;
	proto = ipv6_upper(skb, ETH_HLEN, ip6.nexthdr, &l4_off);
	if (proto == IPV6_UPPER_UNKNOWN)
		return STAT_DROP_PROTOCOL;
	if (proto == NEXTHDR_ICMP && bpf_skb_load_bytes(skb, l4_off, &type, 1) < 0)
		return STAT_DROP_PROTOCOL;

	if (addr6_is_unspecified(&ip6.saddr)) {
		/* Duplicate address detection: a solicitation for an address
		 * of the sender's own, to its solicited-node group. */
		if (proto == NEXTHDR_ICMP && type == ICMPV6_NEIGH_SOLICIT &&
		    addr6_is_multicast(&ip6.daddr) && nd_target_owned(skb, l4_off, eth->h_source))
			return STAT_PASS_NO_MATCH;
		/* An MLD report before the sender has a link-local address
		 * (RFC 3590), as every interface sends when it comes up: no
		 * more than it may send from its link-local address later,
		 * and only with its own MAC, which the bridge learns. */
		if (proto == NEXTHDR_ICMP && type == ICMPV6_MLD2_REPORT &&
		    addr6_is_mld2_routers(&ip6.daddr) && mac_owned6(skb, eth->h_source))
			return STAT_PASS_NO_MATCH;
		return STAT_DROP_SPOOFED;
	}
	src = endpoint_lookup6(&ip6.saddr);
	if (!src || !endpoint_owned(skb, src, eth->h_source))
		return STAT_DROP_SPOOFED;
	if (proto == NEXTHDR_ICMP) {
		if (type == ICMPV6_ROUTER_ADVERT || type == ICMPV6_REDIRECT)
			return STAT_DROP_SPOOFED;
		if (type == ICMPV6_NEIGH_ADVERT && !nd_target_owned(skb, l4_off, eth->h_source))
			return STAT_DROP_SPOOFED;
	}
	/* Multicast (neighbour discovery, MLD, mDNS) goes to the bridge, as
	 * IPv4 broadcast does. */
	if (addr6_is_multicast(&ip6.daddr))
		return STAT_PASS_NO_MATCH;
	dst = endpoint_lookup6(&ip6.daddr);
	/* Anything else goes through the bridge to the host's IP layer. */
	if (!dst || dst->network_id != src->network_id)
		return STAT_PASS_NO_MATCH;
	if (src->flags & ENDPOINT_F_NO_ICC)
		return STAT_DROP_ICC;
	*to_ifindex = dst->ifindex;
	return STAT_ENDPOINT_REDIRECT;
}

#endif
