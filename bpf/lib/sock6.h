/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv6 published ports as the socket hooks see them: addresses as four
 * 32-bit words, the way struct bpf_sock_addr carries them. The tc
 * datapath has its own lookups (ipv6.h, nat.h); these stay apart so that
 * the socket hooks do not depend on packet-parsing headers. */
#ifndef PONTOON_SOCK6_H
#define PONTOON_SOCK6_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "maps.h"
#include "network.h"

static __always_inline int sock_is_loopback6(const __u32 *a)
{
	return !a[0] && !a[1] && !a[2] && a[3] == bpf_htonl(1);
}

/* ::ffff:a.b.c.d, word 2 in host order */
#define SOCK_MAPPED_PREFIX 0xffff

static __always_inline int sock_is_mapped6(const __u32 *a)
{
	return !a[0] && !a[1] && a[2] == bpf_htonl(SOCK_MAPPED_PREFIX);
}

static __always_inline int sock_hostaddr_has6(const __u32 *a)
{
	struct hostaddr_key key = { .family = PONTOON_AF_INET6 };

	__builtin_memcpy(key.addr, a, 16);
	return bpf_map_lookup_elem(&hostaddrs, &key) != NULL;
}

/* The IPv6 binding a host client of dst:dport reaches: dst's own, then
 * the [::] one. The caller knows dst is ::1 or one of the host's
 * addresses. The agent writes IPv6 keys with IPv6 backends only. */
static __always_inline struct binding_value *sock_binding_lookup6(__u8 proto, const __u32 *dst,
								   __be16 dport)
{
	struct binding_key key = {
		.family = PONTOON_AF_INET6,
		.proto = proto,
		.port = dport,
	};
	struct binding_value *b;

	if (proto == IPPROTO_TCP && !prefilter_maybe(PREFILTER_TCP_PORTS, bpf_ntohs(dport)))
		return NULL;
	if (proto == IPPROTO_UDP && !prefilter_maybe(PREFILTER_UDP_PORTS, bpf_ntohs(dport)))
		return NULL;
	__builtin_memcpy(key.addr, dst, 16);
	b = bpf_map_lookup_elem(&bindings, &key);
	if (b)
		return b;
	__builtin_memset(key.addr, 0, 16);
	return bpf_map_lookup_elem(&bindings, &key);
}

/* may_reach_directly for an IPv6 backend: the host, or a namespace on the
 * backend's network where icc allows it. */
static __always_inline int sock_may_reach_directly6(const struct config *cfg, __u64 netns_cookie,
						    const __u8 *backend)
{
	struct network_key key = {
		.prefixlen = NETWORK_KEY_HEADER_BITS + 128,
		.family = PONTOON_AF_INET6,
	};
	struct netns_key member = { .cookie = netns_cookie };
	struct network_value *target;

	if (cfg && cfg->host_netns_cookie == netns_cookie)
		return 1;
	__builtin_memcpy(key.addr, backend, 16);
	target = bpf_map_lookup_elem(&networks, &key);
	if (!target || (target->flags & NETWORK_F_NO_ICC))
		return 0;
	member.network_id = target->id;
	return bpf_map_lookup_elem(&netns, &member) != NULL;
}

#endif
