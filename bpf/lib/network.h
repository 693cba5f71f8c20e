/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Which Pontoon network an address belongs to. */
#ifndef PONTOON_NETWORK_H
#define PONTOON_NETWORK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"
#include "nat.h"

/* family and pad come before the address in the LPM key */
#define NETWORK_KEY_HEADER_BITS 32

static __always_inline struct network_value *network_lookup4(__be32 addr)
{
	struct network_key key = {
		.prefixlen = NETWORK_KEY_HEADER_BITS + 32,
		.family = PONTOON_AF_INET,
	};

	if (!prefilter_maybe(PREFILTER_NETS4, bpf_ntohl(addr) >> 16))
		return NULL;
	addr_set4(key.addr, addr);
	return bpf_map_lookup_elem(&networks, &key);
}

#endif
