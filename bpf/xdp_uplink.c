//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* XDP on uplinks: what can be done before the kernel builds an skb.
 * Packets for loopback-only bindings and from sources a binding does not
 * allow are dropped (unless they are a masqueraded flow's replies, which
 * tc translates); packets of published ports' flows (new and
 * established) are tracked in ct/ct_new and DNATed here, then passed to
 * the stack with a note in their metadata so tc_uplink.c does not
 * translate them again. A SYN flood thus fills ct_new (an LRU of
 * unanswered flows) from XDP, before any skb is allocated.
 *
 * Everything else goes to tc uncounted (tc counts it): fragments, ICMP
 * (echo and errors), IP options, masqueraded flows' replies, and any
 * packet on a driver that keeps no XDP metadata. A packet XDP parsed and
 * found nothing of ours for (the host's own traffic, most of what an
 * uplink carries) goes with a "miss" note, so tc need not look again.
 * Drops are sent to `pontoon monitor` as tc's are. Only Ethernet uplinks
 * get this program.
 *
 * Built twice: 6.1's verifier fails (EFAULT, a backtracking bug) on the
 * walk of a SYN's options below, so a second build with
 * XDP_SYN_OPTIONS_TO_TC leaves SYNs that carry options to tc; the loader
 * takes it where the first is refused. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
/* The shared headers also hold tc's out-of-line functions, unused here. */
#pragma clang diagnostic ignored "-Wunused-function"
#include "lib/types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/nat.h"
#include "lib/ct.h"
#include "lib/snat.h"
#include "lib/verdict.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Offsets are constants: a packet with IP options goes to tc, which keeps
 * the verifier's view of every pointer here simple (6.1's refused writes
 * through pointers clang derived again from variable offsets). */
#define XDP_L3_OFF ETH_HLEN
#define XDP_L4_OFF (ETH_HLEN + sizeof(struct iphdr))

/* Verdicts of xdp_handle besides the stats it returns: leave the packet
 * to tc without counting it. */
#define XDP_TO_TC STAT_MAX

/* A SYN's window scale option, read straight from the packet. The walk
 * has no iteration counter: off grows by at least one a step and stays
 * under len (at most 40), which bounds it, and without a counter the
 * verifier finds the states of later steps within those of earlier ones
 * (with one, every step was new to it and the walk blew its budget). */
static __always_inline void xdp_parse_wscale(void *opts, void *data_end, __u32 len,
					     struct tcp_fields *tcp)
{
	__u32 off = 0, step;

	while (off < len && len <= TCP_MAX_OPTIONS) {
		__u8 *p = opts + (off & 63);

		/* Two bytes even for a NOP: a NOP ending the packet hides no
		 * window scale behind it. */
		if ((void *)(p + 2) > data_end || p[0] == TCPOPT_EOL)
			return;
		step = p[0] == TCPOPT_NOP ? 1 : p[1];
		if (step == 0 || (p[0] != TCPOPT_NOP && step < 2))
			return;
		if (p[0] == TCPOPT_WINDOW && p[1] == 3) {
			if (off + 3 > len || (void *)(p + 3) > data_end)
				return;
			tcp->wscale = p[2] > 14 ? 14 : p[2]; /* RFC 7323's limit */
			tcp->has_wscale = 1;
			return;
		}
		off += step;
	}
}

/* Parses Ethernet + IPv4 without options + TCP/UDP into pkt; anything
 * else is tc's. */
static __always_inline int xdp_parse(struct xdp_md *ctx, struct packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + XDP_L3_OFF;
	__u16 tot_len;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	if (ip->version != 4 || ip->ihl != 5)
		return -1;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return -1;
	tot_len = bpf_ntohs(ip->tot_len);
	pkt->l3_off = XDP_L3_OFF;
	pkt->l4_off = XDP_L4_OFF;
	pkt->l3_end = XDP_L3_OFF + tot_len;
	pkt->df = !!(ip->frag_off & bpf_htons(IP_DF));
	pkt->t.saddr = ip->saddr;
	pkt->t.daddr = ip->daddr;
	pkt->t.proto = ip->protocol;
	pkt->has_addrs = 1;

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = data + XDP_L4_OFF;
		__u8 flags;

		if ((void *)(th + 1) > data_end || tot_len < sizeof(*ip) + sizeof(*th) || th->doff < 5)
			return -1;
		flags = ((__u8 *)th)[13];
		pkt->t.sport = th->source;
		pkt->t.dport = th->dest;
		pkt->tcp_flags = flags;
		pkt->tcp.seq = bpf_ntohl(th->seq);
		pkt->tcp.ack = bpf_ntohl(th->ack_seq);
		pkt->tcp.window = bpf_ntohs(th->window);
		if ((flags & TCP_FLAG_SYN) && th->doff > 5) {
#ifdef XDP_SYN_OPTIONS_TO_TC
			return -1;
#else
			xdp_parse_wscale(th + 1, data_end, (th->doff - 5) * 4, &pkt->tcp);
#endif
		}
		return 0;
	}
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = data + XDP_L4_OFF;

		if ((void *)(uh + 1) > data_end || tot_len < sizeof(*ip) + sizeof(*uh))
			return -1;
		pkt->t.sport = uh->source;
		pkt->t.dport = uh->dest;
		pkt->udp_no_csum = uh->check == 0;
		return 0;
	}
	return -1;
}

/* Whether pkt may be the reply of a masqueraded flow: tc judges those
 * before their port's binding (unless a DNAT flow takes the packet), so
 * XDP leaves them alone. */
static __always_inline int xdp_maybe_snat_reply(const struct packet *pkt)
{
	const struct l4_tuple *t = &pkt->t;
	struct ct_key rev = {};
	struct snat_value *v;

	if (!snat_port_maybe(t->proto, t->dport))
		return 0;
	tuple_key4(&rev, t->proto, t->saddr, t->sport, t->daddr, t->dport);
	v = bpf_map_lookup_elem(&snat, &rev);
	return v && (v->flags & SNAT_F_REVERSE) && !(v->flags & SNAT_F_HOST);
}

/* Drops whatever metadata a frame brought (a veth peer's XDP_TX or
 * redirect hands its own over): only a note this run writes may reach tc. */
static __always_inline void xdp_meta_drop_foreign(struct xdp_md *ctx)
{
	if (ctx->data_meta < ctx->data)
		bpf_xdp_adjust_meta(ctx, (int)(ctx->data - ctx->data_meta));
}

/* Makes room for the note to tc in front of the packet, not valid yet,
 * and says whether the driver keeps metadata. Packet pointers are stale
 * afterwards. */
static __always_inline int xdp_meta_reserve(struct xdp_md *ctx)
{
	struct xdp_meta *m;

	int have = ctx->data - ctx->data_meta;

	/* Exactly our note in front of the data, whatever was there. */
	if (bpf_xdp_adjust_meta(ctx, have - (int)sizeof(*m)) < 0)
		return -1;
	m = (void *)(long)ctx->data_meta;
	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return -1;
	m->magic = 0; /* no note yet: set once the packet is judged */
	m->flags = 0;
	return 0;
}

/* Makes the reserved note valid: the packet's last change in XDP. */
static __always_inline void xdp_meta_set(struct xdp_md *ctx, __u32 flags)
{
	struct xdp_meta *m = (void *)(long)ctx->data_meta;

	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return;
	m->magic = XDP_META_MAGIC;
	m->flags = flags;
}

/* The DNAT rewrite, straight in the packet: destination address and port,
 * IP and TCP/UDP checksums folded incrementally. */
static __always_inline int xdp_rewrite_dnat4(struct xdp_md *ctx, __u8 proto, __be32 to_addr,
					     __be16 to_port)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + XDP_L3_OFF;
	__be32 from_addr;
	__be16 from_port;

	if ((void *)(ip + 1) > data_end)
		return -1;
	from_addr = ip->daddr;
	ip->daddr = to_addr;
	ip->check = csum_update32(ip->check, from_addr, to_addr);
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = data + XDP_L4_OFF;

		if ((void *)(th + 1) > data_end)
			return -1;
		from_port = th->dest;
		th->dest = to_port;
		th->check = csum_update32(th->check, from_addr, to_addr);
		th->check = csum_update16(th->check, from_port, to_port);
		return 0;
	}
	{
		struct udphdr *uh = data + XDP_L4_OFF;
		__u16 check;

		if ((void *)(uh + 1) > data_end)
			return -1;
		from_port = uh->dest;
		uh->dest = to_port;
		if (uh->check == 0)
			return 0; /* no checksum: nothing to fix, and it must stay 0 */
		check = csum_update32(uh->check, from_addr, to_addr);
		check = csum_update16(check, from_port, to_port);
		uh->check = check ? check : 0xffff; /* 0 would mean "none" */
		return 0;
	}
}

/* A packet no binding takes. When tc would find nothing either (it is
 * no masqueraded flow's reply, nor for a container's address, which tc
 * drops), a note tells tc so, and tc lets it pass at once; a driver
 * without metadata leaves tc to look again. tc counts it either way. */
static __always_inline __u32 xdp_miss(struct xdp_md *ctx, const struct packet *pkt)
{
	if (xdp_maybe_snat_reply(pkt))
		return XDP_TO_TC;
	if (guard_inbound4(PARSE_OK, pkt, STAT_PASS_NO_MATCH) != STAT_PASS_NO_MATCH)
		return XDP_TO_TC;
	if (xdp_meta_reserve(ctx) == 0)
		xdp_meta_set(ctx, XDP_META_MISS);
	return XDP_TO_TC;
}

/* One packet's verdict: a stat to count, or XDP_TO_TC. pkt is left
 * holding the packet's tuple as it arrived. */
static __always_inline __u32 xdp_handle(struct xdp_md *ctx, struct packet *pkt)
{
	struct binding_value *b;
	struct ct_key key;
	struct ct_value *v;
	__be16 backend_port;
	__be32 backend;
	__u32 binding_id, refused = 0;
	int tracked, is_new, wild;

	xdp_meta_drop_foreign(ctx);
	if (xdp_parse(ctx, pkt) < 0)
		return XDP_TO_TC;
	/* Loopback bindings live only in the socket path: never from outside. */
	if (is_loopback4(pkt->t.daddr))
		return STAT_DROP_LOCAL_ONLY;
	if (!pkt->t.daddr)
		goto miss; /* as tc's dnat4_from */
	/* A wildcard binding's packet is checked for being the host's as
	 * tc's dnat4_from checks it: before the binding judges it, before a
	 * SYN, and when no flow takes it. */
	b = binding_find4_unchecked(pkt->t.proto, pkt->t.daddr, pkt->t.dport, 1, &wild);
	if (!b)
		goto miss;
	if (b->flags & BINDING_F_LOCAL_ONLY)
		refused = STAT_DROP_LOCAL_ONLY;
	else if (!allow_from4(b, pkt->t.saddr))
		refused = STAT_DROP_NOT_ALLOWED;
	backend = addr_get4(b->backend_addr);
	backend_port = b->backend_port;
	binding_id = b->id;
	if (wild && (refused || tcp_is_syn(pkt))) {
		if (!hostaddr_has4(pkt->t.daddr))
			goto miss;
		wild = 0;
	}
	if (refused)
		return xdp_maybe_snat_reply(pkt) ? XDP_TO_TC : refused;

	/* Before any state changes: a driver without metadata leaves the
	 * whole job to tc. */
	if (xdp_meta_reserve(ctx) < 0) {
		if (wild && !hostaddr_has4(pkt->t.daddr))
			goto miss;
		return STAT_XDP_NO_META;
	}
	if (ct_follow_dnat4(pkt, &key, backend, backend_port, &v, &is_new))
		goto rewrite;
	if (wild && !hostaddr_has4(pkt->t.daddr))
		goto miss;
	/* No established flow: it may be a masqueraded flow's reply, which
	 * tc judges before the binding (see dnat4_from). */
	if (xdp_maybe_snat_reply(pkt))
		return XDP_TO_TC;
	tracked = ct_open_dnat4(ctx, pkt, &key, v, is_new, binding_id, may_open_flow4(pkt));
	if (tracked == CT_NOT_TRACKED)
		return XDP_TO_TC; /* tc says pass_not_new, or finds what changed since */
	if (tracked == CT_CLASH)
		return STAT_DROP_CT_CLASH;
	if (tracked < 0)
		return STAT_DROP_CT_FULL;
rewrite:
	if (xdp_rewrite_dnat4(ctx, pkt->t.proto, backend, backend_port) < 0)
		return STAT_DROP_REWRITE;
	xdp_meta_set(ctx, XDP_META_TRANSLATED);
	binding_count_len(binding_id, 1, 1, ctx->data_end - ctx->data);
	return STAT_DNAT;
miss:
	return xdp_miss(ctx, pkt);
}

/* A drop for `pontoon monitor`, as events.h's event_drop_emit writes
 * tc's: the packet's tuple as it arrived, which pkt holds (XDP drops
 * only packets it parsed). */
static __noinline void xdp_event_drop(struct xdp_md *ctx, const struct packet *pkt, __u32 reason)
{
	struct event *e = event_reserve(EVENT_DROP);

	if (!e)
		return;
	e->reason = reason;
	e->ifindex = ctx->ingress_ifindex;
	e->len = ctx->data_end - ctx->data;
	e->family = PONTOON_AF_INET;
	e->proto = pkt->t.proto;
	e->sport = pkt->t.sport;
	e->dport = pkt->t.dport;
	__builtin_memcpy(e->saddr, &pkt->t.saddr, 4);
	__builtin_memcpy(e->daddr, &pkt->t.daddr, 4);
	bpf_ringbuf_submit(e, 0);
}

SEC("xdp")
int uplink_xdp(struct xdp_md *ctx)
{
	struct packet pkt = {};
	__u32 stat = xdp_handle(ctx, &pkt);

	if (stat == XDP_TO_TC)
		return XDP_PASS;
	stat_bump(stat, ctx->data_end - ctx->data);
	if (!stat_dropped(stat))
		return XDP_PASS;
	if (events_on())
		xdp_event_drop(ctx, &pkt, stat);
	return XDP_DROP;
}
