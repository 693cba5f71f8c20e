/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking for translated flows. DNAT entries are keyed by the
 * reply tuple (backend -> client), which is what the reverse path sees.
 * TCP state follows the handshake and the close, so GC can give each flow
 * the lifetime its state deserves: an unanswered or unfinished handshake
 * goes in seconds, an established connection lives for hours. */
#ifndef PONTOON_CT_H
#define PONTOON_CT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"
#include "events.h"
#include "kernel.h"

/* Refreshing last_seen on every packet would dirty a shared cache line per
 * packet; GC works in seconds, so once a second is precise enough. */
#define CT_REFRESH_NS 1000000000ULL

/* A new flow may take over the reply tuple of another binding's flow only
 * when that one is over: closed, or idle for longer than a handshake or a
 * datagram exchange lasts. Otherwise the new flow is refused (counted),
 * never the old one broken. */
#define CT_TAKEOVER_IDLE_NS (10 * 1000000000ULL)

/* Lifetimes are seconds long: the coarse clock (same base as
 * CLOCK_MONOTONIC, tick precision) is precise enough and costs a fraction
 * of bpf_ktime_get_ns() on CPUs with speculation mitigations. Before 5.11
 * the precise clock stands in: same base, so entries stay comparable. */
static __always_inline __u64 ct_clock_read(void)
{
	if (kernel_has_coarse_clock)
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

/* The clock as last read, with the jiffy it was read in packed into its
 * low bits: coarse time moves only when jiffies does, and bpf_jiffies64()
 * is a load once the verifier inlines it, so the clock itself is read
 * once a tick, by whichever CPU sees the tick first, where a call a
 * packet was a tenth of a DNAT's time. One 64-bit word, written and read
 * whole: a reading is used only in the jiffy it was taken in, whatever
 * order CPUs see writes in. Times are thus multiples of 2^24 ns (17 ms),
 * and a reading can be a tick behind (taken between a tick's jiffy and
 * its time); each object keeps its own, so a stamp from another may be
 * ahead: time differences are compared signed. */
#define CT_CLOCK_JIFFY_MASK ((1ULL << 24) - 1)

static __u64 ct_clock;

static __always_inline __u64 ct_now(void)
{
	__u64 jiffy = bpf_jiffies64() & CT_CLOCK_JIFFY_MASK;
	__u64 cached = *(volatile __u64 *)&ct_clock;
	__u64 now;

	if (cached && (cached & CT_CLOCK_JIFFY_MASK) == jiffy)
		return cached & ~CT_CLOCK_JIFFY_MASK;
	now = ct_clock_read() & ~CT_CLOCK_JIFFY_MASK;
	*(volatile __u64 *)&ct_clock = now | jiffy;
	return now;
}

static __always_inline int tcp_is_syn(const struct packet *pkt)
{
	return pkt->t.proto == IPPROTO_TCP &&
	       (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_SYN;
}

static __always_inline int tcp_closed(__u8 state)
{
	return state & (CT_TCP_FIN | CT_TCP_RST);
}

/* An RST counts only inside the window its receiver last advertised
 * (RFC 793): a blind or stray one must not end a live connection's
 * tracking. Without anything learnt from the receiver yet, it counts.
 * Windows are scaled only when both sides offered scaling in their SYNs,
 * and never the window of a SYN itself (RFC 7323). */
static __always_inline int tcp_rst_in_window(__u32 seq, const struct tcp_side *receiver,
					     const struct tcp_side *sender)
{
	__u32 window, shift = 0;

	if (!receiver || !(receiver->seen & TCP_SIDE_ACKED))
		return 1;
	if (!(receiver->seen & TCP_SIDE_SYN_WINDOW) && (receiver->seen & TCP_SIDE_WSCALE) &&
	    sender && (sender->seen & TCP_SIDE_WSCALE))
		shift = receiver->wscale;
	window = (__u32)receiver->window << shift;
	if (window == 0)
		window = 1;
	return seq - receiver->ack < window;
}

/* Moves a flow's TCP state for one packet. opener: the packet comes from
 * the side that sent the first SYN. sender: that side's tcp_side, updated
 * here; receiver: the other side's, or NULL when the caller does not have
 * it (an RST is then believed). */
static __always_inline __u8 tcp_advance_seg(__u8 state, __u8 f, __u8 frag,
					     const struct tcp_fields *tcp, int opener,
					     struct tcp_side *sender, const struct tcp_side *receiver)
{
	__u8 seen;

	if (frag == FRAG_LATER)
		return state; /* no TCP header */
	if (f & TCP_FLAG_RST) {
		if ((state & CT_TCP_ESTABLISHED) &&
		    !tcp_rst_in_window(tcp->seq, receiver, sender)) {
			stat_bump(STAT_TCP_RST_IGNORED, 0);
			return state;
		}
		return state | CT_TCP_RST;
	}
	seen = sender->seen;
	if (f & TCP_FLAG_SYN) {
		seen |= TCP_SIDE_SYN_WINDOW;
		if (tcp->has_wscale) {
			sender->wscale = tcp->wscale;
			seen |= TCP_SIDE_WSCALE;
		}
	} else {
		seen &= ~TCP_SIDE_SYN_WINDOW;
	}
	if (f & TCP_FLAG_ACK) {
		seen |= TCP_SIDE_ACKED;
		if (sender->ack != tcp->ack)
			sender->ack = tcp->ack;
		if (sender->window != tcp->window)
			sender->window = tcp->window;
	}
	if (sender->seen != seen)
		sender->seen = seen;

	if (f & TCP_FLAG_SYN) {
		if (!opener && (f & TCP_FLAG_ACK))
			state |= CT_TCP_SYNACK;
		else if (opener && !(f & TCP_FLAG_ACK))
			state |= CT_TCP_SYN;
	} else if (opener && (f & TCP_FLAG_ACK) && (state & CT_TCP_SYNACK)) {
		state |= CT_TCP_ESTABLISHED;
	}
	if (f & TCP_FLAG_FIN)
		state |= CT_TCP_FIN;
	return state;
}

static __always_inline __u8 tcp_advance(__u8 state, const struct packet *pkt, int opener,
					 struct tcp_side *sender, const struct tcp_side *receiver)
{
	return tcp_advance_seg(state, pkt->tcp_flags, pkt->frag, &pkt->tcp, opener, sender,
			       receiver);
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

static __always_inline void ct_stamp(__u64 *last_seen_ns)
{
	__u64 now = ct_now();

	if ((__s64)(now - *last_seen_ns) > (__s64)CT_REFRESH_NS)
		*last_seen_ns = now;
}

/* One packet of a DNAT flow: its TCP state and its age. key is the
 * flow's entry key, its reply tuple (backend -> client). */
static __always_inline void ct_update(struct ct_value *v, const struct ct_key *key,
				      const struct packet *pkt, int dir)
{
	if (pkt->t.proto == IPPROTO_TCP) {
		__u8 state = tcp_advance(v->tcp_flags, pkt, dir == CT_DIR_ORIGINAL, &v->tcp[dir & 1],
					 &v->tcp[(dir ^ 1) & 1]);

		if (state != v->tcp_flags) {
			if (tcp_closed(state) && !tcp_closed(v->tcp_flags))
				event_ct(EVENT_FLOW_END, key, v, state);
			v->tcp_flags = state;
		}
	}
	ct_stamp(&v->last_seen_ns);
}

/* Whether a new flow may take over the reply tuple v holds for another
 * binding. */
static __always_inline int ct_replaceable(const struct ct_value *v, __u8 proto)
{
	if (proto == IPPROTO_TCP && tcp_closed(v->tcp_flags))
		return 1;
	if (proto == IPPROTO_TCP && (v->tcp_flags & CT_TCP_ESTABLISHED))
		return 0;
	return (__s64)(ct_now() - v->last_seen_ns) > (__s64)CT_TAKEOVER_IDLE_NS;
}

/* Finds a DNAT flow by its reply tuple in either table; *is_new says it
 * is still in ct_new. */
static __always_inline struct ct_value *ct_find(const struct ct_key *key, int *is_new)
{
	struct ct_value *v = bpf_map_lookup_elem(&ct, key);

	*is_new = 0;
	if (v)
		return v;
	v = bpf_map_lookup_elem(&ct_new, key);
	*is_new = v != NULL;
	return v;
}

/* Whether a flow has earned its place in ct: a TCP handshake completed, or
 * any answer for the rest. */
static __always_inline int ct_answered(const struct ct_value *v, __u8 proto)
{
	if (proto == IPPROTO_TCP)
		return (v->tcp_flags & CT_TCP_ESTABLISHED) && !tcp_closed(v->tcp_flags);
	return v->flags & CT_F_REPLIED;
}

/* Moves an answered flow from ct_new to ct. v must not be used after. */
static __always_inline void ct_promote(const struct ct_key *key, struct ct_value *v)
{
	if (bpf_map_update_elem(&ct, key, v, BPF_NOEXIST) == 0)
		bpf_map_delete_elem(&ct_new, key);
	else
		stat_bump(STAT_CT_NOT_PROMOTED, 0);
}

/* A new DNAT flow's entry, in ct_new, keyed by its reply tuple. A
 * subprogram: the entry is built on its own stack, which the programs that
 * inline ct_open_dnat4 (bridge_ingress's hairpin path) have no room for. */
static __noinline __attribute__((unused)) int ct_create_dnat(const struct ct_key *key,
							     const struct packet *pkt,
							     __u32 binding_id)
{
	const struct l4_tuple *t = &pkt->t;
	struct ct_value fresh = {
		.nat_port = t->dport,
		.flags = CT_F_DNAT_REPLY,
		.binding_id = binding_id,
	};

	addr_set4(fresh.nat_addr, t->daddr);
	if (t->proto == IPPROTO_TCP)
		fresh.tcp_flags = tcp_advance(0, pkt, 1, &fresh.tcp[CT_DIR_ORIGINAL], NULL);
	fresh.last_seen_ns = ct_now();
	fresh.created_ns = fresh.last_seen_ns;
	if (bpf_map_update_elem(&ct_new, key, &fresh, BPF_ANY) < 0)
		return -1;
	event_ct(EVENT_FLOW_NEW, key, &fresh, fresh.tcp_flags);
	return 0;
}

#define CT_NOT_TRACKED 1
#define CT_CLASH 2
/* may_create's third answer: only the socket table can tell (a UDP
 * datagram a local socket owns opens no flow). That costs a lookup, so it
 * is asked only of a packet whose flow has no entry. */
#define CT_ASK 3

/* Whether a packet to a published port may start a translated flow, as
 * far as its headers tell. A host's own connection can use a published
 * port as its source port (the dynamic range keeps clear of the kernel's
 * ephemeral ports, explicit bindings need not): its replies are not new
 * flows and must reach the host. TCP: only a SYN opens a flow. UDP: a
 * local socket that the datagram belongs to wins, which CT_ASK leaves to
 * the socket table. */
static __always_inline int may_open_flow4(const struct packet *pkt)
{
	if (pkt->frag == FRAG_LATER)
		return 0;
	if (pkt->t.proto == IPPROTO_TCP)
		return (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
	return CT_ASK;
}

/* Whether no local socket owns a UDP datagram; ctx is an skb or an XDP
 * frame. Out of line: its tuple, live beside ct_open_dnat4's key, would
 * push bridge_ingress's deepest chain past 512 bytes of stack. */
static __noinline __attribute__((unused)) int udp_unowned4(void *ctx, const struct l4_tuple *t)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;

	tuple.ipv4.saddr = t->saddr;
	tuple.ipv4.daddr = t->daddr;
	tuple.ipv4.sport = t->sport;
	tuple.ipv4.dport = t->dport;
	sk = bpf_sk_lookup_udp(ctx, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 1;
	bpf_sk_release(sk);
	return 0;
}

/* A SYN on a tuple whose connection has closed starts the flow over
 * rather than inheriting the old state. */
static __always_inline void ct_restart(struct ct_value *v)
{
	struct tcp_side none = {};

	v->tcp_flags = 0;
	v->flags &= ~(CT_F_REPLIED | CT_F_AGE_FROM_UPGRADE);
	v->created_ns = ct_now();
	v->tcp[0] = none;
	v->tcp[1] = none;
}

/* Follows a packet of client -> orig_daddr:orig_dport, sent to backend,
 * through the flow's entry: key gets the flow's reply tuple. Returns 1
 * when the entry is this flow's (it names the address and port the
 * client dialled) and the packet has moved it on. Else *found and
 * *is_new say what holds the tuple, for ct_open_dnat4. */
static __always_inline int ct_follow_dnat4(const struct packet *pkt, struct ct_key *key,
					   __be32 backend, __be16 backend_port,
					   struct ct_value **found, int *is_new)
{
	const struct l4_tuple *t = &pkt->t;
	struct ct_value *v;

	__builtin_memset(key, 0, sizeof(*key));
	tuple_key4(key, t->proto, backend, backend_port, t->saddr, t->sport);
	v = ct_find(key, is_new);
	*found = v;
	if (!v || v->nat_port != t->dport || addr_get4(v->nat_addr) != t->daddr)
		return 0;
	if (tcp_is_syn(pkt) && tcp_closed(v->tcp_flags))
		ct_restart(v);
	ct_update(v, key, pkt, CT_DIR_ORIGINAL);
	if (*is_new && ct_answered(v, t->proto))
		ct_promote(key, v);
	return 1;
}

/* Opens the flow ct_follow_dnat4 did not find, in ct_new, when its first
 * packet may (may_create, or CT_ASK); else CT_NOT_TRACKED. v and is_new
 * are what ct_follow_dnat4 found on the tuple: another binding's flow,
 * which is taken over only when it is over. */
static __always_inline int ct_open_dnat4(void *ctx, const struct packet *pkt,
					 const struct ct_key *key, struct ct_value *v, int is_new,
					 __u32 binding_id, int may_create)
{
	const struct l4_tuple *t = &pkt->t;

	if (may_create == CT_ASK)
		may_create = udp_unowned4(ctx, t);
	if (!may_create)
		return CT_NOT_TRACKED;
	if (v && !ct_replaceable(v, t->proto))
		return CT_CLASH;
	if (v && !is_new)
		bpf_map_delete_elem(&ct, key); /* the new flow starts unanswered */

	return ct_create_dnat(key, pkt, binding_id);
}

static __always_inline struct ct_value *ct_lookup_reply4(__u8 proto, __be32 saddr, __be16 sport,
							  __be32 daddr, __be16 dport)
{
	struct ct_key key = {};
	struct ct_value *v;
	int is_new;

	tuple_key4(&key, proto, saddr, sport, daddr, dport);
	v = ct_find(&key, &is_new);
	if (v && !(v->flags & CT_F_DNAT_REPLY))
		return NULL;
	return v;
}

#endif
