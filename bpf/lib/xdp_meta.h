/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The note the uplink's XDP program leaves in a packet's metadata, which
 * tc ingress reads: a packet XDP translated already must not be
 * translated (or judged as addressed to a container) a second time, and
 * one XDP found nothing for need not be looked at again. The metadata
 * cannot come from the wire: only XDP writes it, and xdp_uplink.c drops
 * whatever a frame brought before it writes its note, whole, as the last
 * thing it does to the packet. A note counts only when it is exactly
 * ours: our magic, filling the metadata to the byte. */
#ifndef PONTOON_XDP_META_H
#define PONTOON_XDP_META_H

#include <linux/bpf.h>
#include "types.h"

/* The flags of the note on skb, or 0 when it carries none of ours. */
static __always_inline __u32 xdp_note(struct __sk_buff *skb)
{
	struct xdp_meta *m = (void *)(long)skb->data_meta;
	void *data = (void *)(long)skb->data;

	if ((void *)(m + 1) > data)
		return 0;
	/* Kept apart from the check above: clang would fold the two into a
	 * "!=", which tells the verifier nothing about m's bounds. */
	asm volatile("" : "+r"(data));
	if ((void *)(m + 1) < data)
		return 0; /* more metadata than our note */
	return m->magic == XDP_META_MAGIC ? m->flags : 0;
}

static __always_inline int xdp_translated(struct __sk_buff *skb)
{
	return xdp_note(skb) & XDP_META_TRANSLATED;
}

static __always_inline int xdp_missed(struct __sk_buff *skb)
{
	return xdp_note(skb) & XDP_META_MISS;
}

#endif
