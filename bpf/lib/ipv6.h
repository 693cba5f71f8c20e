/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv6 within and around a network: header walking, the family's map
 * lookups, and the isolation and anti-spoofing rules IPv4 has elsewhere.
 * Nothing here translates: ipv6_nat.h does published ports; masquerade
 * is IPv4's only for now. */
#ifndef PONTOON_IPV6_H
#define PONTOON_IPV6_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in6.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "maps.h"
#include "network.h"

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_ICMP 58
#define NEXTHDR_DEST 60
/* Extension headers walked before giving up on finding the upper layer. */
#define IPV6_EXT_MAX 6

/* ipv6_upper's results besides a protocol number. */
#define IPV6_UPPER_UNKNOWN -1   /* the chain is cut short or too long to follow */
#define IPV6_UPPER_LATER_FRAG -2 /* a fragment after the first: no upper header */

/* linux/icmpv6.h pulls in more than the BPF target builds. */
#define ICMPV6_NEIGH_SOLICIT 135
#define ICMPV6_NEIGH_ADVERT 136
#define ICMPV6_ROUTER_ADVERT 134
#define ICMPV6_REDIRECT 137
#define ICMPV6_MLD2_REPORT 143

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units, then 2 reserved bits and M */
	__be32 id;
};

#define IPV6_FRAG_OFFSET 0xfff8

static __always_inline int addr6_is_unspecified(const struct in6_addr *a)
{
	return !(a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2] |
		 a->in6_u.u6_addr32[3]);
}

static __always_inline int addr6_is_multicast(const struct in6_addr *a)
{
	return a->in6_u.u6_addr8[0] == 0xff;
}

static __always_inline struct endpoint_value *endpoint_lookup6(const struct in6_addr *addr)
{
	struct endpoint_key key = { .family = PONTOON_AF_INET6 };

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&endpoints, &key);
}

static __always_inline struct network_value *network_lookup6(const struct in6_addr *addr)
{
	struct network_key key = {
		.prefixlen = NETWORK_KEY_HEADER_BITS + 128,
		.family = PONTOON_AF_INET6,
	};

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&networks, &key);
}

static __always_inline int hostaddr_has6(const struct in6_addr *addr)
{
	struct hostaddr_key key = { .family = PONTOON_AF_INET6 };

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&hostaddrs, &key) != NULL;
}

/* Follows the extension headers from the IPv6 header at l3_off to the
 * upper-layer header: its protocol, with *l4_off where it starts, or an
 * IPV6_UPPER_* result. A later fragment carries no upper header; the
 * kernel drops fragmented neighbour discovery (RFC 6980), so the rules
 * below that look into ICMPv6 need not see one. */
static __always_inline int ipv6_upper(struct __sk_buff *skb, __u32 l3_off, __u8 nexthdr,
				      __u32 *l4_off)
{
	__u32 off = l3_off + sizeof(struct ipv6hdr);
	struct ipv6_frag_hdr frag;
	__u8 ext[2];
	int i;

	for (i = 0; i < IPV6_EXT_MAX; i++) {
		switch (nexthdr) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_DEST:
			if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0)
				return IPV6_UPPER_UNKNOWN;
			nexthdr = ext[0];
			off += (ext[1] + 1) * 8;
			break;
		case NEXTHDR_FRAGMENT:
			if (bpf_skb_load_bytes(skb, off, &frag, sizeof(frag)) < 0)
				return IPV6_UPPER_UNKNOWN;
			if (frag.frag_off & bpf_htons(IPV6_FRAG_OFFSET))
				return IPV6_UPPER_LATER_FRAG;
			nexthdr = frag.nexthdr;
			off += sizeof(frag);
			break;
		default:
			*l4_off = off;
			return nexthdr;
		}
	}
	return IPV6_UPPER_UNKNOWN;
}

/* Bridge ingress: a container's packet on its way to the host's IP layer.
 * As for IPv4, one network's containers never reach another's; the host's
 * own addresses there (its gateways) stay reachable. Link-local and
 * multicast destinations belong to no network and are never forwarded. */
static __always_inline __u32 bridge_ipv6(struct __sk_buff *skb)
{
	struct network_value *src, *dst;
	struct ipv6hdr ip6;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0 || ip6.version != 6)
		return STAT_PASS_MALFORMED;
	src = network_lookup6(&ip6.saddr);
	if (!src)
		return STAT_PASS_NO_MATCH;
	dst = network_lookup6(&ip6.daddr);
	if (dst && dst->id != src->id && !hostaddr_has6(&ip6.daddr))
		return STAT_DROP_ISOLATION;
	return STAT_PASS_NO_MATCH;
}

/* Uplink ingress: from outside, a container's IPv6 address is reachable
 * only in a routed network, or through a published port; the host's own
 * addresses stay the host's. Out of line: the uplink's IPv6 path has its
 * stack to spare. */
static __noinline __attribute__((unused)) int inbound_allowed6(const struct in6_addr *daddr)
{
	struct network_value *net = network_lookup6(daddr);

	return !net || (net->flags & NETWORK_F_ROUTED) || hostaddr_has6(daddr);
}

/* Uplink egress: a masquerading network's IPv6 source that NAT66 did not
 * translate (not enabled for the network, or no IPv6 address on the
 * uplink) would leave as it is: dropped, as IPv4 that escaped masquerade. */
static __noinline __attribute__((unused)) int outbound_allowed6(const struct in6_addr *saddr)
{
	struct network_value *net = network_lookup6(saddr);

	return !net || !(net->flags & NETWORK_F_MASQUERADE) || hostaddr_has6(saddr);
}

#endif
