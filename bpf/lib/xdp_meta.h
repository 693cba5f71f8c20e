/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The note the uplink's XDP program leaves in a packet's metadata, which
 * tc ingress reads: a packet XDP translated already must not be
 * translated (or judged as addressed to a container) a second time. The
 * metadata cannot come from the wire: only XDP writes it. */
#ifndef PONTOON_XDP_META_H
#define PONTOON_XDP_META_H

#include <linux/bpf.h>
#include "types.h"

static __always_inline int xdp_translated(struct __sk_buff *skb)
{
	struct xdp_meta *m = (void *)(long)skb->data_meta;

	if ((void *)(m + 1) > (void *)(long)skb->data)
		return 0;
	return m->magic == XDP_META_MAGIC && (m->flags & XDP_META_TRANSLATED);
}

#endif
