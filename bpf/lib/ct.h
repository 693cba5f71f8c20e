/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking for translated flows. Entries are keyed by the reply
 * tuple (backend -> client), which is what the reverse path sees. */
#ifndef PONTOON_CT_H
#define PONTOON_CT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"

/* Refreshing last_seen on every packet would dirty a shared cache line per
 * packet; GC works in seconds, so once a second is precise enough. */
#define CT_REFRESH_NS 1000000000ULL

/* Lifetimes are seconds long: the coarse clock (same base as
 * CLOCK_MONOTONIC, tick precision) is precise enough and costs a fraction
 * of bpf_ktime_get_ns() on CPUs with speculation mitigations. */
static __always_inline __u64 ct_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

static __always_inline __u8 ct_tcp_flags(__u8 proto, __u8 wire_flags)
{
	__u8 f = 0;

	if (proto != IPPROTO_TCP)
		return 0;
	if (wire_flags & TCP_FLAG_SYN)
		f |= CT_TCP_SYN;
	if (wire_flags & TCP_FLAG_ACK)
		f |= CT_TCP_ACK;
	if (wire_flags & TCP_FLAG_FIN)
		f |= CT_TCP_FIN;
	if (wire_flags & TCP_FLAG_RST)
		f |= CT_TCP_RST;
	return f;
}

/* Fills a ct_key with one direction of a flow, as it is on the wire. */
static __always_inline void tuple_key4(struct ct_key *key, __u8 proto, __be32 saddr, __be16 sport,
				       __be32 daddr, __be16 dport)
{
	key->family = PONTOON_AF_INET;
	key->proto = proto;
	key->sport = sport;
	key->dport = dport;
	addr_set4(key->saddr, saddr);
	addr_set4(key->daddr, daddr);
}

static __always_inline void ct_touch(struct ct_value *v, __u8 flags)
{
	__u64 now = ct_now();

	if ((v->tcp_flags | flags) != v->tcp_flags)
		v->tcp_flags |= flags;
	if (now - v->last_seen_ns > CT_REFRESH_NS)
		v->last_seen_ns = now;
}

/* Records that client -> orig_daddr:orig_dport was sent to backend, so the
 * replies can be given the address the client dialled. Only a flow's first
 * packet may create the entry (may_create); for others it returns
 * CT_NOT_TRACKED when there is none. */
#define CT_NOT_TRACKED 1

static __always_inline int ct_track_dnat4(const struct l4_tuple *t, __u8 flags, __be32 backend,
					  __be16 backend_port, __u32 binding_id, int may_create)
{
	struct ct_key key = {};
	struct ct_value *v;
	struct ct_value fresh = {
		.nat_port = t->dport,
		.flags = CT_F_DNAT_REPLY,
		.tcp_flags = flags,
		.binding_id = binding_id,
	};

	tuple_key4(&key, t->proto, backend, backend_port, t->saddr, t->sport);
	v = bpf_map_lookup_elem(&ct, &key);
	if (v && v->nat_port == t->dport && addr_get4(v->nat_addr) == t->daddr) {
		ct_touch(v, flags);
		return 0;
	}
	if (!may_create)
		return CT_NOT_TRACKED;
	addr_set4(fresh.nat_addr, t->daddr);
	fresh.last_seen_ns = ct_now();
	return bpf_map_update_elem(&ct, &key, &fresh, BPF_ANY);
}

static __always_inline struct ct_value *ct_lookup_reply4(__u8 proto, __be32 saddr, __be16 sport,
							  __be32 daddr, __be16 dport)
{
	struct ct_key key = {};
	struct ct_value *v;

	tuple_key4(&key, proto, saddr, sport, daddr, dport);
	v = bpf_map_lookup_elem(&ct, &key);
	if (v && !(v->flags & CT_F_DNAT_REPLY))
		return NULL;
	return v;
}

#endif
