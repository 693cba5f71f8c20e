/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The ICMP error a hairpinned datagram too big for the backend's network
 * earns: "fragmentation needed" for an IPv4 one with DF set, "Packet Too
 * Big" for every IPv6 one (IPv6 routers never fragment). The stack cannot
 * send it: the datagram, translated, has the host's own gateway as its
 * source, and untranslated it is addressed to the host itself (local
 * delivery never asks for fragmentation). So it is written here, as the
 * stack's forward path would: the datagram is cut to its IP header and 8
 * bytes (all a sender's stack reads to find its socket), given back the
 * addresses and ports the container sent it with (from its snat and ct
 * entries), and wrapped in an ICMP error from the address the container
 * dialled, with the MTU the route to the backend has; it goes back out of
 * the bridge to the container. TCP and UDP right behind the IP header (no
 * IPv4 options, no IPv6 extension headers), not GSO, on kernels whose FIB
 * lookup reports the MTU (5.12 on); the rest stays dropped. */
#ifndef PONTOON_HAIRPIN_ICMP_H
#define PONTOON_HAIRPIN_ICMP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "maps.h"
#include "ct.h"
#include "fib.h"
#include "ipv6.h"
#include "ipv6_nat.h"

#define ICMP_FRAG_NEEDED 4
#define IPV6_MIN_MTU 1280
#define ICMP_ERROR_TTL 64 /* the stack's default for its own errors */

static __always_inline __sum16 csum_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__sum16)~s;
}

/* Whether the skb may be cut: not GSO, and not CHECKSUM_COMPLETE (never
 * so from a bridge port), whose skb->csum a cut would leave wrong
 * (bpf_csum_update fails unless it is). */
static __always_inline int hairpin_icmp_may_cut(struct __sk_buff *skb)
{
	return !skb->gso_size && bpf_csum_update(skb, 0) < 0;
}

/* Cuts the frame to its IP header and 8 bytes (quoted_len), puts the
 * error's own headers (msg, whose tail is that quote) in their place, and
 * sends it back out of the port it came in by, its MACs swapped. */
static __always_inline int hairpin_icmp_send(struct __sk_buff *skb, const void *msg, __u32 msg_len,
					     __u32 quoted_len)
{
	__u8 macs[2 * ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) < 0 ||
	    bpf_skb_change_tail(skb, ETH_HLEN + quoted_len, 0) < 0 ||
	    bpf_skb_adjust_room(skb, msg_len - quoted_len, BPF_ADJ_ROOM_MAC, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, macs + ETH_ALEN, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, macs, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, msg, msg_len, BPF_F_RECOMPUTE_CSUM) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

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

/* The frag-needed for an IPv4 DF datagram. Returns the tc action. */
static __noinline int hairpin_frag_needed4(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	struct frag_needed4 m = {};
	struct ct_key key = {};
	struct snat_value *sv;
	struct ct_value *cv;
	int is_new;
	__u16 mtu;
	__s64 sum;

	if (!hairpin_icmp_may_cut(skb) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, &m.quoted, sizeof(m.quoted) + sizeof(m.ports)) < 0 ||
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
	m.ip.ttl = ICMP_ERROR_TTL;
	m.ip.protocol = IPPROTO_ICMP;
	m.ip.saddr = m.quoted.daddr;
	m.ip.daddr = m.quoted.saddr;
	m.ip.check = csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&m.ip, sizeof(m.ip), 0));
	return hairpin_icmp_send(skb, &m, sizeof(m), sizeof(m.quoted) + sizeof(m.ports));
}

struct packet_too_big6 {
	struct ipv6hdr ip;
	struct {
		__u8 type;
		__u8 code;
		__sum16 checksum;
		__be32 mtu;
	} icmp;
	struct ipv6hdr quoted;
	__be16 ports[4];
};

/* The Packet Too Big for an IPv6 datagram. Returns the tc action. */
static __noinline int hairpin_too_big6(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	struct packet_too_big6 m = {};
	struct ct_key key = {};
	struct snat_value *sv;
	struct ct_value *cv;
	__be32 pseudo_tail[2];
	__u32 len, mtu;
	int is_new;
	__s64 sum;

	if (!hairpin_icmp_may_cut(skb) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, &m.quoted, sizeof(m.quoted) + sizeof(m.ports)) < 0 ||
	    (m.quoted.nexthdr != IPPROTO_TCP && m.quoted.nexthdr != IPPROTO_UDP))
		return TC_ACT_SHOT;
	len = sizeof(m.quoted) + bpf_ntohs(m.quoted.payload_len);
	fib.family = AF_INET6;
	fib.l4_protocol = m.quoted.nexthdr;
	fib.tot_len = len;
	__builtin_memcpy(fib.ipv6_src, &m.quoted.saddr, 16);
	__builtin_memcpy(fib.ipv6_dst, &m.quoted.daddr, 16);
	fib.ifindex = skb->ifindex;
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return TC_ACT_SHOT;
	mtu = fib.mtu_result; /* before 5.12 still tot_len: no MTU to tell */
	if (mtu < IPV6_MIN_MTU || mtu >= len)
		return TC_ACT_SHOT;

	/* gateway:nat_port -> backend:port back to container:port -> host:port */
	tuple_key6(&key, m.quoted.nexthdr, &m.quoted.daddr, m.ports[1], &m.quoted.saddr, m.ports[0]);
	sv = bpf_map_lookup_elem(&snat, &key);
	if (!sv || !(sv->flags & SNAT_F_REVERSE))
		return TC_ACT_SHOT;
	__builtin_memcpy(&m.quoted.saddr, sv->addr, 16);
	m.ports[0] = sv->port;
	tuple_key6(&key, m.quoted.nexthdr, &m.quoted.daddr, m.ports[1], &m.quoted.saddr, m.ports[0]);
	cv = ct_find(&key, &is_new);
	if (!cv)
		return TC_ACT_SHOT;
	__builtin_memcpy(&m.quoted.daddr, cv->nat_addr, 16);
	m.ports[1] = cv->nat_port;

	m.ip.version = 6;
	m.ip.payload_len = bpf_htons(sizeof(m) - sizeof(m.ip));
	m.ip.nexthdr = NEXTHDR_ICMP;
	m.ip.hop_limit = ICMP_ERROR_TTL;
	m.ip.saddr = m.quoted.daddr;
	m.ip.daddr = m.quoted.saddr;
	m.icmp.type = ICMPV6_PKT_TOOBIG;
	m.icmp.mtu = bpf_htonl(mtu);
	/* The checksum covers a pseudo-header: both addresses (contiguous
	 * in the header), the length and the next header. */
	pseudo_tail[0] = bpf_htonl(sizeof(m) - sizeof(m.ip));
	pseudo_tail[1] = bpf_htonl(NEXTHDR_ICMP);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&m.ip.saddr, 2 * sizeof(m.ip.saddr), 0);
	if (sum >= 0)
		sum = bpf_csum_diff(NULL, 0, pseudo_tail, sizeof(pseudo_tail), sum);
	if (sum >= 0)
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&m.icmp, sizeof(m) - sizeof(m.ip), sum);
	if (sum < 0)
		return TC_ACT_SHOT;
	m.icmp.checksum = csum_fold(sum);
	return hairpin_icmp_send(skb, &m, sizeof(m), sizeof(m.quoted) + sizeof(m.ports));
}

#endif
