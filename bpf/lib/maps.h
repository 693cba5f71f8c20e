/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map of the datapath. Each object that includes this file declares
 * the same maps; the loader hands all objects one pinned instance of each. */
#ifndef PONTOON_MAPS_H
#define PONTOON_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"

/* Bindings change rarely and can number 120k (60k ports, TCP and UDP):
 * allocate on demand instead of preallocating every slot. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct binding_key);
	__type(value, struct binding_value);
} bindings SEC(".maps");

/* Conntrack is two tables. A flow starts in ct_new and moves to ct once
 * it is answered (TCP: the handshake completed; UDP and ICMP: a reply
 * came). ct_new is an LRU: a flood of spoofed SYNs or datagrams only
 * evicts other unanswered flows. ct is a plain hash that GC empties: when
 * it is full, a flow stays in ct_new (counted), and no answered flow is
 * ever evicted to make room. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
} ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
} ct_new SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct hostaddr_key);
	__type(value, struct hostaddr_value);
} hostaddrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sockrev_key);
	__type(value, struct sockrev_value);
} sockrev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* LPM tries require it */
	__type(key, struct network_key);
	__type(value, struct network_value);
} networks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct uplink_value);
} uplinks SEC(".maps");

/* The IPv6 address NAT66 gives containers leaving each uplink. A map of
 * its own rather than a wider uplinks value: pinned maps keep their layout
 * across upgrades, and an agent that predates NAT66 simply never fills it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct uplink_value);
} uplinks6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_value);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct netns_key);
	__type(value, struct netns_value);
} netns SEC(".maps");

/* Both directions of every masqueraded flow, keyed by ct_key tuples. A
 * plain hash: LRU eviction could take one half of a flow and leave the
 * other to be matched by someone else's packets. GC removes both halves
 * together; a full table refuses new flows (counted). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct ct_key);
	__type(value, struct snat_value);
} snat SEC(".maps");

/* A datagram's fragments arrive within milliseconds of each other: a small
 * LRU holds every datagram in flight. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
} frags SEC(".maps");

/* Per-binding source allowlists: (binding id, prefix). Only bindings with
 * BINDING_F_ALLOWLIST pay for the lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* LPM tries require it */
	__type(key, struct allow_key);
	__type(value, struct allow_value);
} allow_from SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PREFILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} prefilter_skip SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BFILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} bfilter_skip SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, struct counter);
} stats SEC(".maps");

/* Per-binding traffic, in slot id % BINDING_STATS_SLOTS. The agent gives
 * a mapping its slot when it publishes it (live mappings never share one)
 * and clears it when the mapping goes; the datapath only adds to a slot
 * that names the binding. An array: its lookup is a few inlined
 * instructions, where a hash lookup was a sixth of a DNAT. One shared
 * value with atomic adds rather than a per-CPU one: per-CPU values for
 * every possible binding cost memory times the CPU count. */
#define BINDING_STATS_SLOTS 65536

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BINDING_STATS_SLOTS);
	__type(key, __u32);
	__type(value, struct binding_counter);
} binding_stats SEC(".maps");

static __always_inline void binding_count_len(__u32 id, int in, __u32 segs, __u64 len)
{
	__u32 slot = id % BINDING_STATS_SLOTS;
	struct binding_counter *c = bpf_map_lookup_elem(&binding_stats, &slot);

	if (!c || c->id != id)
		return;
	if (in) {
		__sync_fetch_and_add(&c->packets_in, segs);
		__sync_fetch_and_add(&c->bytes_in, len);
	} else {
		__sync_fetch_and_add(&c->packets_out, segs);
		__sync_fetch_and_add(&c->bytes_out, len);
	}
}

static __always_inline void binding_count(struct __sk_buff *skb, __u32 id, int in)
{
	binding_count_len(id, in, skb->gso_segs ? skb->gso_segs : 1, skb->len);
}

static __always_inline void stat_bump(__u32 index, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(&stats, &index);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline struct config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

/* Whether bit index of the prefilter bitmap at word base leaves a lookup
 * to do: a set bit says there is nothing to find, so the map as created,
 * all zeros, sends every packet to the lookups until the agent fills it,
 * and no flag need say that it has (a config lookup of its own). Array
 * lookups are inlined by the verifier: this costs a few instructions. */
static __always_inline int prefilter_maybe(__u32 base, __u32 index)
{
	__u32 word = base + (index >> 6);
	__u64 *skip = bpf_map_lookup_elem(&prefilter_skip, &word);

	return !skip || !((*skip >> (index & 63)) & 1);
}

/* prefilter_maybe for the binding filter: bit index of the bitmap at word
 * base. */
static __always_inline int binding_filter_maybe(__u32 base, __u32 index)
{
	__u32 word = base + (index >> 6);
	__u64 *skip = bpf_map_lookup_elem(&bfilter_skip, &word);

	return !skip || !((*skip >> (index & 63)) & 1);
}

/* The bloom bit of an IPv4 binding on one address; maps/prefilter.go
 * computes the same. */
static __always_inline __u32 bfilter_bit4(__u8 proto, __be32 addr, __be16 port)
{
	__u64 key = (__u64)bpf_ntohl(addr) << 32 | (__u32)bpf_ntohs(port) << 8 | proto;

	return (key * BFILTER_MULTIPLIER) >> BFILTER_EXACT4_SHIFT;
}

#endif
