//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* tc ingress on a Pontoon bridge: packets from containers on their way to
 * the host's IP layer. Networks are isolated from each other here.
 * Hairpin: a container dialling hostIP:P without the socket hooks (a VM, a
 * raw client, or a peer icc=false forbids it to reach directly) is DNATed
 * to the backend and SNATed to the backend network's gateway, so the reply
 * comes back through here too; both ways are forwarded in BPF, since the
 * stack would drop a routed packet with its own address as source. With
 * FIB redirect on, replies of published ports and masqueraded flows are
 * translated here as well and sent straight to the uplink, never taking
 * the stack's forward path (and so never meeting a FORWARD DROP policy). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "lib/types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/nat.h"
#include "lib/ct.h"
#include "lib/network.h"
#include "lib/dnat.h"
#include "lib/snat.h"
#include "lib/fib.h"
#include "lib/verdict.h"
#include "lib/ipv6.h"
#include "lib/ipv6_nat.h"
#include "lib/snat6.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* A container may talk to its own network (that stays in L2 and never
 * comes here), to the host, and to the outside; not to another network's
 * containers. The host's addresses in another network (its gateway) are
 * the host's, and stay reachable. */
static __noinline int crosses_networks4(const struct l4_tuple *t)
{
	struct network_value *src = network_lookup4(t->saddr);
	struct network_value *dst;

	if (!src)
		return 0;
	dst = network_lookup4(t->daddr);
	return dst && dst->id != src->id && !hostaddr_has4(t->daddr);
}

/* In frames of their own: the stack space of these translations is not
 * added to masquerade's, whose chain of calls is the deepest. */
static __noinline __u32 leave_rnat4(struct __sk_buff *skb, struct packet *pkt)
{
	return rnat4(skb, pkt);
}

static __noinline __u32 leave_icmp4(struct __sk_buff *skb, struct packet *pkt, __u32 egress_ifindex)
{
	__u32 stat = icmp_rnat4(skb, pkt);

	if (stat == STAT_PASS_NO_MATCH)
		stat = icmp_snat4(skb, pkt, egress_ifindex);
	return stat;
}

/* A container's packet leaving for the outside: a reply of a published
 * port's flow, or a flow of its own to masquerade. The route is looked up
 * first, with the packet as the container sent it (as the stack routes
 * before POSTROUTING's NAT): when BPF cannot forward it (too big for the
 * uplink, no route), it goes to the stack untranslated, which answers with
 * "fragmentation needed" or fragments it, and the uplink's egress program
 * translates what leaves. Translated first, it would carry the host's own
 * address into the stack and die there as a martian. */
static __noinline __u32 leave4(struct __sk_buff *skb, struct packet *pkt, int parsed,
				    int *action)
{
	struct bpf_fib_lookup fib = {};
	int route = fib_route4(skb, pkt->l3_off, pkt->t.saddr, pkt->t.daddr, &fib);
	__u32 stat;

	if (route == FIB_STACK)
		return STAT_PASS_NO_MATCH;
	if (route == FIB_TOO_BIG)
		return STAT_FIB_TOO_BIG;
	if (parsed == PARSE_ICMP_ERROR) {
		stat = leave_icmp4(skb, pkt, fib.ifindex);
	} else {
		stat = leave_rnat4(skb, pkt);
		if (stat == STAT_PASS_NO_MATCH)
			stat = masquerade4(skb, pkt, fib.ifindex);
	}
	if (stat_translated(stat))
		*action = fib_forward4(skb, pkt->l3_off, route, &fib);
	return stat;
}

/* A container dialled a published port of this host: DNAT, then SNAT to
 * the backend network's gateway. Each step works on the packet as the
 * previous one left it, so it is parsed again in between. */
static __noinline __u32 hairpin4(struct __sk_buff *skb, struct packet *pkt)
{
	struct network_value *backend_net;
	__u32 stat = dnat4(skb, pkt);

	if (stat != STAT_DNAT)
		return stat;
	if (parse_packet(skb, pkt, ETH_HLEN) != PARSE_OK)
		return STAT_DROP_REWRITE;
	backend_net = network_lookup4(pkt->t.daddr);
	if (!backend_net)
		return STAT_DROP_REWRITE; /* a backend outside Pontoon's networks */
	/* The flow's events are the DNAT's. */
	stat = snat4(skb, pkt, addr_get4(backend_net->gateway)) & ~SNAT_EVENT_BITS;
	return stat == STAT_SNAT ? STAT_HAIRPIN : stat;
}

/* The backend's reply to a hairpinned flow: undo the SNAT, then the DNAT. */
static __noinline __u32 hairpin_reply4(struct __sk_buff *skb, struct packet *pkt)
{
	__u32 stat = snat_reverse4(skb, pkt) & ~SNAT_CLOSED; /* the DNAT's event */

	if (stat != STAT_SNAT_REVERSE)
		return stat;
	if (parse_packet(skb, pkt, ETH_HLEN) != PARSE_OK)
		return STAT_DROP_REWRITE;
	stat = rnat4(skb, pkt);
	return stat == STAT_RNAT ? STAT_HAIRPIN_REPLY : STAT_DROP_REWRITE;
}

/* forward_translated for IPv6, in a frame of its own: the route lookup's
 * buffers stay off the chain down to snat6's port claim. */
static __noinline int forward_translated6(struct __sk_buff *skb, int *too_big)
{
	int route, action = fib_redirect6(skb, ETH_HLEN, &route);

	*too_big = route == FIB_TOO_BIG;
	return action;
}

/* The bridge's IPv6 path parses its packet once, into the ingress scratch
 * slot (ipv6_nat.h: not on this program's stack, whose IPv4 frames leave
 * little), and the steps after take it from there. The parse and the
 * hairpin's steps are global functions: the verifier checks each once, on
 * its own, where a static one is checked again at every call and for
 * every state the steps before it leave (on 6.1, whose precision tracking
 * stops at calls, a second parse_packet6 alone took the bridge past its
 * 1M-instruction limit). On 5.10 a global function takes only the context
 * and scalars: hence the slot. A rewrite keeps the slot's tuple up to date. */
static __always_inline struct packet6 *packet6_ingress(void)
{
	__u32 slot = PACKET6_INGRESS;

	return bpf_map_lookup_elem(&packet6_scratch, &slot);
}

/* parse_packet6 into the ingress slot. */
__noinline int parse6_ingress(struct __sk_buff *skb)
{
	struct packet6 *pkt = packet6_get(PACKET6_INGRESS);

	return pkt ? parse_packet6(skb, pkt, ETH_HLEN) : PARSE_MALFORMED;
}

/* leave4 for IPv6: a reply of a published port's flow (or an ICMPv6 error
 * about one) leaving for the outside, routed as it came, then translated
 * and forwarded straight to the uplink. What BPF cannot forward goes to
 * the stack untranslated; the uplink's egress translates it there. Its
 * packet is the one parse6_ingress left in the scratch slot. */
static __noinline __u32 leave6(struct __sk_buff *skb, int parsed, int *action)
{
	struct packet6 *pkt = packet6_ingress();
	struct bpf_fib_lookup fib = {};
	int route;
	__u32 stat;

	if (!pkt || (parsed != PARSE_OK && parsed != PARSE_ICMP_ERROR))
		return STAT_PASS_NO_MATCH;
	route = fib_route6(skb, ETH_HLEN, &fib);
	if (route == FIB_STACK)
		return STAT_PASS_NO_MATCH;
	if (route == FIB_TOO_BIG)
		return STAT_FIB_TOO_BIG;
	stat = parsed == PARSE_OK ? rnat6(skb, pkt) : icmp_rnat6(skb, pkt);
	if (stat_translated(stat))
		*action = fib_forward6(skb, ETH_HLEN, route, &fib);
	return stat;
}

/* A backend answers a hairpinned flow: undo the SNAT, then the DNAT. */
__noinline int hairpin6_reply(struct __sk_buff *skb)
{
	struct packet6 *pkt = packet6_ingress();
	__u32 stat;

	if (!pkt)
		return STAT_PASS_NO_MATCH;
	stat = snat_reverse6(skb, pkt);
	if (stat != STAT_SNAT_REVERSE)
		return stat;
	return rnat6(skb, pkt) == STAT_RNAT ? STAT_HAIRPIN_REPLY : STAT_DROP_REWRITE;
}

/* A container dialled [host address]:P: DNAT to the backend... */
__noinline int hairpin6_dnat(struct __sk_buff *skb)
{
	struct packet6 *pkt = packet6_ingress();

	return pkt ? dnat6(skb, pkt) : STAT_PASS_NO_MATCH;
}

/* ...then SNAT to the backend network's gateway. */
__noinline int hairpin6_snat(struct __sk_buff *skb)
{
	struct packet6 *pkt = packet6_ingress();
	struct network_value *backend_net;
	__u32 stat;

	if (!pkt)
		return STAT_DROP_REWRITE;
	backend_net = network_lookup6(&pkt->t.daddr);
	if (!backend_net)
		return STAT_DROP_REWRITE; /* a backend outside Pontoon's networks */
	stat = snat6(skb, pkt, (const struct in6_addr *)backend_net->gateway);
	return stat == STAT_SNAT ? STAT_HAIRPIN : stat;
}

/* hairpin4 and hairpin_reply4 for IPv6, with the forward, for a packet
 * parse6_ingress found TCP or UDP. */
static __noinline __u32 hairpin6(struct __sk_buff *skb, int *action)
{
	int too_big, stat = hairpin6_reply(skb);

	if (stat == STAT_PASS_NO_MATCH) {
		stat = hairpin6_dnat(skb);
		if (stat != STAT_DNAT)
			return stat;
		stat = hairpin6_snat(skb);
	}
	if (stat != STAT_HAIRPIN && stat != STAT_HAIRPIN_REPLY)
		return stat;
	/* Its source is now the host's: BPF forwards it, or nobody does. */
	*action = forward_translated6(skb, &too_big);
	if (*action != TC_ACT_REDIRECT)
		stat = too_big ? STAT_DROP_FRAG_NEEDED : STAT_DROP_REWRITE;
	return stat;
}

/* The ICMP "fragmentation needed" a hairpinned DF datagram too big for
 * the backend's network earns. The stack cannot send it: the datagram,
 * translated, has the host's own gateway as its source, and untranslated
 * it is addressed to the host itself (local delivery never asks for
 * fragmentation). So it is written here, as the stack's forward path
 * would: the datagram is cut to its IP header and 8 bytes, given back the
 * addresses and ports the container sent it with (from its snat and ct
 * entries), and wrapped in an ICMP error from the address the container
 * dialled, with the MTU the route to the backend has; it goes back out of
 * the bridge to the container. TCP and UDP without IP options, not GSO,
 * on kernels whose FIB lookup reports the MTU (5.12 on); the rest stays
 * dropped. Returns the tc action. */
static __always_inline __sum16 csum_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__sum16)~s;
}

#define ICMP_FRAG_NEEDED 4

struct frag_needed4 {
	struct iphdr ip;
	struct {
		__u8 type;
		__u8 code;
		__sum16 checksum;
		__be16 unused;
		__be16 mtu;
	} icmp;
	struct iphdr quoted;
	__be16 ports[4]; /* the quoted datagram's first 8 bytes */
};

static __noinline int hairpin_frag_needed4(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	struct frag_needed4 m = {};
	struct ct_key key = {};
	struct snat_value *sv;
	struct ct_value *cv;
	__u8 macs[2 * ETH_ALEN];
	int is_new;
	__u16 mtu;
	__s64 sum;

	/* bpf_csum_update fails unless the skb is CHECKSUM_COMPLETE (never
	 * so from a bridge port): cutting it would leave skb->csum wrong. */
	if (skb->gso_size || bpf_csum_update(skb, 0) >= 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, &m.quoted, sizeof(m.quoted) + 8) < 0 ||
	    m.quoted.ihl != 5 || (m.quoted.protocol != IPPROTO_TCP && m.quoted.protocol != IPPROTO_UDP))
		return TC_ACT_SHOT;
	fib.family = AF_INET;
	fib.l4_protocol = m.quoted.protocol;
	fib.tot_len = bpf_ntohs(m.quoted.tot_len);
	fib.ipv4_src = m.quoted.saddr;
	fib.ipv4_dst = m.quoted.daddr;
	fib.ifindex = skb->ifindex;
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return TC_ACT_SHOT;
	mtu = fib.mtu_result; /* before 5.12 still tot_len: no MTU to tell */
	if (mtu < 68 || mtu >= bpf_ntohs(m.quoted.tot_len))
		return TC_ACT_SHOT;

	/* gateway:nat_port -> backend:port back to container:port -> host:port */
	tuple_key4(&key, m.quoted.protocol, m.quoted.daddr, m.ports[1], m.quoted.saddr, m.ports[0]);
	sv = bpf_map_lookup_elem(&snat, &key);
	if (!sv || !(sv->flags & SNAT_F_REVERSE))
		return TC_ACT_SHOT;
	m.quoted.saddr = addr_get4(sv->addr);
	m.ports[0] = sv->port;
	tuple_key4(&key, m.quoted.protocol, m.quoted.daddr, m.ports[1], m.quoted.saddr, m.ports[0]);
	cv = ct_find(&key, &is_new);
	if (!cv)
		return TC_ACT_SHOT;
	m.quoted.daddr = addr_get4(cv->nat_addr);
	m.ports[1] = cv->nat_port;
	m.quoted.check = 0;
	m.quoted.check = csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&m.quoted, sizeof(m.quoted), 0));

	m.icmp.type = ICMP_DEST_UNREACH;
	m.icmp.code = ICMP_FRAG_NEEDED;
	m.icmp.mtu = bpf_htons(mtu);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&m.icmp, sizeof(m) - sizeof(m.ip), 0);
	if (sum < 0)
		return TC_ACT_SHOT;
	m.icmp.checksum = csum_fold(sum);
	m.ip.version = 4;
	m.ip.ihl = 5;
	m.ip.tos = 0xc0; /* as the stack's ICMP errors */
	m.ip.tot_len = bpf_htons(sizeof(m));
	m.ip.ttl = 64;
	m.ip.protocol = IPPROTO_ICMP;
	m.ip.saddr = m.quoted.daddr;
	m.ip.daddr = m.quoted.saddr;
	m.ip.check = csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&m.ip, sizeof(m.ip), 0));

	/* Back where it came from: the MACs swap. */
	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) < 0 ||
	    bpf_skb_change_tail(skb, ETH_HLEN + sizeof(m.quoted) + 8, 0) < 0 ||
	    bpf_skb_adjust_room(skb, sizeof(m.ip) + sizeof(m.icmp), BPF_ADJ_ROOM_MAC, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, macs + ETH_ALEN, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, macs, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &m, sizeof(m), BPF_F_RECOMPUTE_CSUM) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

SEC("tc")
int bridge_ingress(struct __sk_buff *skb)
{
	struct packet pkt = {};
	int parsed = parse_packet(skb, &pkt, ETH_HLEN);
	int action = TC_ACT_UNSPEC, too_big;
	__u32 stat = parse_verdict(parsed);

	if (parsed == PARSE_NOT_IP && skb->protocol == bpf_htons(ETH_P_IPV6)) {
		stat = bridge_ipv6(skb);
		if (stat != STAT_PASS_NO_MATCH)
			return finish(skb, stat, action);
		parsed = parse6_ingress(skb);
		if (parsed == PARSE_OK)
			stat = hairpin6(skb, &action);
		if (stat == STAT_PASS_NO_MATCH && fib_redirect_enabled())
			stat = leave6(skb, parsed, &action);
		return finish(skb, stat, action);
	}
	/* Isolation holds for every packet with addresses: any protocol,
	 * fragments, and ICMP errors whatever they quote. */
	if (!pkt.has_addrs)
		return finish(skb, stat, action);
	if (crosses_networks4(&pkt.t))
		return finish(skb, STAT_DROP_ISOLATION, action);

	if (parsed == PARSE_OK) {
		stat = hairpin_reply4(skb, &pkt);
		if (stat == STAT_PASS_NO_MATCH)
			stat = hairpin4(skb, &pkt);
		if (stat == STAT_HAIRPIN || stat == STAT_HAIRPIN_REPLY) {
			/* Its source is now the host's: the stack would drop it. */
			action = forward_translated(skb, &pkt, &too_big);
			if (action != TC_ACT_REDIRECT && too_big) {
				/* Counted and shown as dropped, as it is; the
				 * sender hears why. */
				finish(skb, STAT_DROP_FRAG_NEEDED, action);
				return hairpin_frag_needed4(skb);
			}
			if (action != TC_ACT_REDIRECT)
				stat = STAT_DROP_REWRITE;
			return finish(skb, stat, action);
		}
	}
	if ((parsed == PARSE_OK || parsed == PARSE_ICMP_ERROR) && stat == STAT_PASS_NO_MATCH &&
	    fib_redirect_enabled())
		stat = leave4(skb, &pkt, parsed, &action);
	return finish(skb, stat, action);
}
