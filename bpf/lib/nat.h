/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Published-port lookups shared by the tc programs and the socket hooks. */
#ifndef PONTOON_NAT_H
#define PONTOON_NAT_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "maps.h"

static __always_inline int is_loopback4(__be32 addr)
{
	return (bpf_ntohl(addr) >> 24) == 127;
}

static __always_inline __be32 addr_get4(const __u8 *addr)
{
	__be32 v;

	__builtin_memcpy(&v, addr, 4);
	return v;
}

static __always_inline void addr_set4(__u8 *addr, __be32 v)
{
	__builtin_memcpy(addr, &v, 4);
}

static __always_inline int hostaddr_has4(__be32 addr)
{
	struct hostaddr_key key = { .family = PONTOON_AF_INET };

	addr_set4(key.addr, addr);
	return bpf_map_lookup_elem(&hostaddrs, &key) != NULL;
}

/* Finds the binding for a destination: the exact host IP first, then the
 * wildcard binding, which only counts for the host's own addresses (a
 * packet routed through the host to somewhere else is not ours): *wild
 * says it was the wildcard's, whose address the caller must still check.
 * filtered (a constant) lets the binding filter skip either lookup: every
 * packet's path. A new flow's port search goes without it, as its stack
 * has no room for the filter's word keys. */
static __always_inline struct binding_value *binding_find4_unchecked(__u8 proto, __be32 daddr,
								      __be16 dport, int filtered,
								      int *wild)
{
	struct binding_key key = {
		.family = PONTOON_AF_INET,
		.proto = proto,
		.port = dport,
	};
	struct binding_value *b;

	*wild = 0;
	if (proto == IPPROTO_TCP && !prefilter_maybe(PREFILTER_TCP_PORTS, bpf_ntohs(dport)))
		return NULL;
	if (proto == IPPROTO_UDP && !prefilter_maybe(PREFILTER_UDP_PORTS, bpf_ntohs(dport)))
		return NULL;
	/* 0.0.0.0 itself (a host socket's connect to it reaches loopback)
	 * finds the wildcard binding as its exact one: no bloom bit says so. */
	if (!filtered || !daddr || binding_filter_maybe(BFILTER_EXACT4, bfilter_bit4(proto, daddr, dport))) {
		addr_set4(key.addr, daddr);
		b = bpf_map_lookup_elem(&bindings, &key);
		if (b)
			return b;
	}
	if (filtered && proto == IPPROTO_TCP && !binding_filter_maybe(BFILTER_WILD_TCP, bpf_ntohs(dport)))
		return NULL;
	if (filtered && proto == IPPROTO_UDP && !binding_filter_maybe(BFILTER_WILD_UDP, bpf_ntohs(dport)))
		return NULL;
	addr_set4(key.addr, 0);
	b = bpf_map_lookup_elem(&bindings, &key);
	*wild = b != NULL;
	return b;
}

/* binding_find4_unchecked with the wildcard's address checked. is_local
 * says the caller already knows the destination is the host itself. */
static __always_inline struct binding_value *binding_find4(__u8 proto, __be32 daddr, __be16 dport,
							    int is_local, int filtered)
{
	int wild;
	struct binding_value *b = binding_find4_unchecked(proto, daddr, dport, filtered, &wild);

	if (b && wild && !is_local && !hostaddr_has4(daddr))
		return NULL;
	return b;
}

static __always_inline struct binding_value *binding_lookup4(__u8 proto, __be32 daddr, __be16 dport,
							      int is_local)
{
	return binding_find4(proto, daddr, dport, is_local, 1);
}

/* Whether binding id (with BINDING_F_ALLOWLIST) accepts a client at
 * saddr. Out of line: its key would push tc_bridge's deepest call chain
 * past the 512-byte stack. */
static __noinline int allow_lookup4(__u32 id, __be32 saddr)
{
	struct allow_key key = {
		.prefixlen = 32 + 32 + 32,
		.binding_id = id,
		.family = PONTOON_AF_INET,
	};

	addr_set4(key.addr, saddr);
	return bpf_map_lookup_elem(&allow_from, &key) != NULL;
}

static __always_inline int allow_from4(const struct binding_value *b, __be32 saddr)
{
	return !(b->flags & BINDING_F_ALLOWLIST) || allow_lookup4(b->id, saddr);
}

/* allow_lookup4 for an IPv6 client. Out of line for the same reason. */
static __noinline __attribute__((unused)) int allow_lookup6(__u32 id, const struct in6_addr *saddr)
{
	struct allow_key key = {
		.prefixlen = 32 + 32 + 128,
		.binding_id = id,
		.family = PONTOON_AF_INET6,
	};

	__builtin_memcpy(key.addr, saddr, 16);
	return bpf_map_lookup_elem(&allow_from, &key) != NULL;
}

static __always_inline __attribute__((unused)) int allow_from6(const struct binding_value *b,
								  const struct in6_addr *saddr)
{
	return !(b->flags & BINDING_F_ALLOWLIST) || allow_lookup6(b->id, saddr);
}

#endif
