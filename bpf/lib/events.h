/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Live events for `pontoon monitor`: new flows, flows that end, drops with
 * their reason, written to the events ring buffer. The agent sets
 * CONFIG_F_EVENTS only while a monitor client listens; without it every
 * event site costs one inlined array lookup and a branch, and only on the
 * rare paths (a flow's first or last packet, a drop). A per-CPU budget
 * caps what a flood can write; what it holds back is counted. */
#ifndef PONTOON_EVENTS_H
#define PONTOON_EVENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "maps.h"
#include "nat.h"

#define CONFIG_F_EVENTS (1 << 7) /* a monitor listens: write events */

/* At most this many events per CPU and second; the ring holds ~2,300. */
#define EVENTS_PER_CPU_SEC 1000
#define EVENTS_RING_BYTES (256 * 1024)

enum event_type {
	EVENT_DROP = 1,
	EVENT_FLOW_NEW,
	EVENT_FLOW_END,
};

/* event.kind for flows */
#define EVENT_KIND_DNAT 1       /* to a published port: src client, dst dialled, xlat backend */
#define EVENT_KIND_MASQUERADE 2 /* a container's, out through an uplink: src the container,
				 * dst the server, xlat the source it left with */

/* One event. Drops carry the packet's addresses as they arrived (src,
 * dst), when it had any. Addresses are of family (PONTOON_AF_*; 0 for a
 * drop of a packet that is not IP), an IPv4 one in the first 4 bytes. */
struct event {
	__u64 time_ns;  /* CLOCK_MONOTONIC */
	__u8 type;      /* enum event_type */
	__u8 kind;      /* EVENT_KIND_* for flows */
	__u8 proto;
	__u8 tcp_flags; /* flow end: CT_TCP_* the flow ended with */
	__u32 reason;   /* drops: enum stat_index */
	__u32 ifindex;
	__u32 len;
	__u32 binding_id;
	__be16 sport;
	__be16 dport;
	__be16 xlat_port;
	__u8 family;
	__u8 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 xlat_addr[16];
};

/* What the budget held back and what the ring had no room for, per CPU. */
struct event_budget {
	__u64 second;
	__u32 used;
	__u32 pad;
	__u64 suppressed;
	__u64 ring_full;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RING_BYTES);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_budget);
} event_budget SEC(".maps");

static __always_inline int events_on(void)
{
	struct config *cfg = config_get();

	return cfg && (cfg->flags & CONFIG_F_EVENTS);
}

/* A slot in the ring, zeroed, or NULL when the budget or the ring is
 * spent. The caller fills it and calls bpf_ringbuf_submit. */
static __always_inline struct event *event_reserve(__u8 type)
{
	__u64 now = bpf_ktime_get_ns();
	struct event_budget *b;
	struct event *e;
	__u32 zero = 0;

	b = bpf_map_lookup_elem(&event_budget, &zero);
	if (!b)
		return NULL;
	if (b->second != now / 1000000000ULL) {
		b->second = now / 1000000000ULL;
		b->used = 0;
	}
	if (b->used >= EVENTS_PER_CPU_SEC) {
		b->suppressed++;
		return NULL;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		b->ring_full++;
		return NULL;
	}
	b->used++;
	__builtin_memset(e, 0, sizeof(*e));
	e->time_ns = now;
	e->type = type;
	return e;
}

/* A dropped packet: its addresses and ports are read from the network
 * header, wherever the device's link layer put it, straight into the
 * ring (the programs' stacks are nearly full). */
static __noinline __attribute__((unused)) void event_drop_emit(struct __sk_buff *skb, __u32 reason)
{
	struct event *e = event_reserve(EVENT_DROP);
	__u8 *head;

	if (!e)
		return;
	e->reason = reason;
	e->ifindex = skb->ifindex;
	e->len = skb->len;
	/* The first 8 bytes of the IP header land in xlat_addr for a look,
	 * then are cleared again. */
	head = e->xlat_addr;
	if (skb->protocol == bpf_htons(ETH_P_IP) &&
	    bpf_skb_load_bytes_relative(skb, 0, head, 8, BPF_HDR_START_NET) == 0 &&
	    bpf_skb_load_bytes_relative(skb, 9, &e->proto, 1, BPF_HDR_START_NET) == 0 &&
	    bpf_skb_load_bytes_relative(skb, 12, e->saddr, 4, BPF_HDR_START_NET) == 0 &&
	    bpf_skb_load_bytes_relative(skb, 16, e->daddr, 4, BPF_HDR_START_NET) == 0) {
		e->family = PONTOON_AF_INET;
		/* Ports only from a first fragment with a plain 20-byte header. */
		if (head[0] == 0x45 && !(head[6] & 0x1f) && !head[7] &&
		    (e->proto == IPPROTO_TCP || e->proto == IPPROTO_UDP))
			bpf_skb_load_bytes_relative(skb, 20, &e->sport, 4, BPF_HDR_START_NET);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6) &&
		   bpf_skb_load_bytes_relative(skb, 6, &e->proto, 1, BPF_HDR_START_NET) == 0 &&
		   bpf_skb_load_bytes_relative(skb, 8, e->saddr, 16, BPF_HDR_START_NET) == 0 &&
		   bpf_skb_load_bytes_relative(skb, 24, e->daddr, 16, BPF_HDR_START_NET) == 0) {
		e->family = PONTOON_AF_INET6;
		/* Ports only when TCP or UDP follows the fixed header; after
		 * extension headers proto names the first of them. */
		if (e->proto == IPPROTO_TCP || e->proto == IPPROTO_UDP)
			bpf_skb_load_bytes_relative(skb, 40, &e->sport, 4, BPF_HDR_START_NET);
	}
	__builtin_memset(head, 0, 8);
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void event_drop(struct __sk_buff *skb, __u32 reason)
{
	if (events_on())
		event_drop_emit(skb, reason);
}

/* The programs' stacks are nearly full: flow events are subprograms
 * that read what the caller already holds and write into the ring, and
 * check the flag themselves. Only a flow's first and last packets call
 * them. */

/* A flow to a published port, IPv4 or IPv6, from its ct entry: key is
 * the reply tuple (backend -> client), v holds the address the client
 * dialled. */
static __noinline __attribute__((unused)) void event_ct(__u8 type, const struct ct_key *key, const struct ct_value *v,
				__u8 tcp_flags)
{
	struct event *e;

	if (!events_on())
		return;
	e = event_reserve(type);
	if (!e)
		return;
	e->kind = EVENT_KIND_DNAT;
	e->family = key->family;
	e->proto = key->proto;
	e->tcp_flags = tcp_flags;
	e->binding_id = v->binding_id;
	e->sport = key->dport;
	e->dport = v->nat_port;
	e->xlat_port = key->sport;
	__builtin_memcpy(e->saddr, key->daddr, 16);
	__builtin_memcpy(e->daddr, v->nat_addr, 16);
	__builtin_memcpy(e->xlat_addr, key->saddr, 16);
	bpf_ringbuf_submit(e, 0);
}

#endif
