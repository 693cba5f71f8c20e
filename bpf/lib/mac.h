/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ethernet addresses, and whether a frame is its endpoint's own. */
#ifndef PONTOON_MAC_H
#define PONTOON_MAC_H

#include <linux/bpf.h>
#include "types.h"

static __always_inline int mac_is_zero(const __u8 *mac)
{
	return !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]);
}

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

/* Whether e, an endpoints entry found by address, is the endpoint behind
 * this veth sending from its own MAC. A MAC the agent did not record (all
 * zero) is not checked. */
static __always_inline int endpoint_owned(struct __sk_buff *skb, const struct endpoint_value *e,
					  const __u8 *mac)
{
	if (!e || e->ifindex != skb->ifindex)
		return 0;
	return mac_is_zero(e->mac) || mac_equal(e->mac, mac);
}

#endif
