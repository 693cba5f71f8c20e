/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Field rewrites with incremental checksum updates. How to fold a TCP or
 * UDP checksum depends on the skb's ip_summed (CHECKSUM_PARTIAL holds only
 * the pseudo header's sum, CHECKSUM_COMPLETE's skb->csum must follow an
 * address change). Where the kernel lets tc programs read it
 * (skb_ip_summed) the checksum is folded here, in the packet, but for a
 * CHECKSUM_COMPLETE address change; elsewhere the kernel's helper, which
 * knows, folds it. The IP header's checksum and an ICMP one are folded
 * here when the headers lie in the skb's linear data. */
#ifndef PONTOON_CSUM_H
#define PONTOON_CSUM_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include "parse.h"

#define IP_CSUM_OFF offsetof(struct iphdr, check)
#define IP_SADDR_OFF offsetof(struct iphdr, saddr)
#define IP_DADDR_OFF offsetof(struct iphdr, daddr)

/* RFC 1624 incremental update of a checksum over a changed 16-bit word. */
static __always_inline __u16 csum_update16(__u16 check, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~check + (__u16)~from + to;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __always_inline __u16 csum_update32(__u16 check, __u32 from, __u32 to)
{
	check = csum_update16(check, from & 0xffff, to & 0xffff);
	return csum_update16(check, from >> 16, to >> 16);
}

/* The change of a CHECKSUM_PARTIAL skb's TCP/UDP checksum field when an
 * address changes: the field holds the pseudo header's sum, not yet
 * complemented, and the device or the stack completes it later. */
static __always_inline __u16 csum_partial_update32(__u16 sum16, __u32 from, __u32 to)
{
	__u32 sum = sum16 + (__u16)~(from & 0xffff) + (__u16)~(from >> 16) +
		    (to & 0xffff) + (to >> 16);

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/* A UDP checksum field is never left 0, which says there is none: 0xffff
 * is the same sum (the helper's BPF_F_MARK_MANGLED_0). */
static __always_inline __u16 l4_csum_mangle(__u8 proto, __u16 check)
{
	return proto == IPPROTO_UDP && !check ? 0xffff : check;
}

/* Rewrites the IPv4 address at addr_off of the header at l3_off. When
 * l4_csum_off is set, the TCP/UDP checksum there covers the address and is
 * fixed as well: with BPF_F_PSEUDO_HDR in l4_flags for a packet's own
 * header (the pseudo header lies outside the skb's data), without it for a
 * header quoted by an ICMP error (whose change the ICMP checksum absorbs). */
static __always_inline int rewrite_addr4(struct __sk_buff *skb, __u32 l3_off, __u32 addr_off,
					 __u32 l4_csum_off, __u64 l4_flags, __be32 from,
					 __be32 to)
{
	if (l4_csum_off && bpf_l4_csum_replace(skb, l4_csum_off, from, to, l4_flags | 4) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, l3_off + IP_CSUM_OFF, from, to, 4) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, l3_off + addr_off, &to, 4, 0);
}

/* store_flags is BPF_F_RECOMPUTE_CSUM when no checksum in the packet
 * absorbs the change, so skb->csum of a CHECKSUM_COMPLETE skb follows it. */
static __always_inline int rewrite_port(struct __sk_buff *skb, __u32 port_off, __u32 l4_csum_off,
					__u64 l4_flags, __be16 from, __be16 to, __u64 store_flags)
{
	if (from == to)
		return 0;
	if (l4_csum_off && bpf_l4_csum_replace(skb, l4_csum_off, from, to, l4_flags | 2) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, port_off, &to, 2, store_flags);
}

/* Tests set this to 0 to run the helper path of a packet whose headers
 * are not in the linear data (BPF_PROG_TEST_RUN's always are); the
 * verifier drops whichever path the value rules out. */
volatile const __u32 rewrite_in_place = 1;

/* An IPv4 address written in place, with the header checksum folded. */
static __always_inline void set_addr4(struct iphdr *ip, int dst, __be32 from, __be32 to)
{
	if (dst)
		ip->daddr = to;
	else
		ip->saddr = to;
	ip->check = csum_update32(ip->check, from, to);
}

/* rewrite_endpoint4 in the packet itself, for headers in the linear data
 * (nearly always); 1 when they are not, and nothing was written. The
 * address and the IP checksum change together, as do an echo's identifier
 * and the ICMP checksum, and a port and its share of the TCP/UDP checksum:
 * each pair leaves the packet's sum, and so a CHECKSUM_COMPLETE skb's
 * csum, as it was. The TCP/UDP checksum is folded here too where the
 * skb's ip_summed is known (a CHECKSUM_COMPLETE address change aside),
 * and by the helper otherwise, last, since it leaves packet pointers
 * stale. */
static __always_inline int rewrite_endpoint4_linear(struct __sk_buff *skb, const struct packet *pkt,
						    int dst, __be32 to_addr, __be16 to_port)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 l3_off = pkt->l3_off, l4_off = pkt->l4_off;
	__u8 proto = pkt->t.proto;
	__be32 from_addr = dst ? pkt->t.daddr : pkt->t.saddr;
	__u64 flags = l4_csum_flags(proto);
	struct iphdr *ip;
	__be16 from_port;
	__sum16 *check;
	__u32 csum_off;

	/* No checksum absorbs a port change of a UDP datagram without one:
	 * skb->csum must follow it, which only the helper can do. */
	if (!rewrite_in_place || pkt->udp_no_csum || l3_off > PARSE_MAX_OFF || l4_off > PARSE_MAX_OFF)
		return 1;
	ip = data + l3_off;
	if ((void *)(ip + 1) > data_end)
		return 1;
	/* Each pointer is used as checked: one clang derived again from
	 * data and the offset would carry no range the verifier knows. */
	barrier_var(ip);
	if (pkt->frag == FRAG_LATER)
		goto addr;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = data + l4_off;

		if ((void *)(th + 1) > data_end)
			return 1;
		barrier_var(th);
		check = &th->check;
		from_port = dst ? th->dest : th->source;
		if (dst)
			th->dest = to_port;
		else
			th->source = to_port;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = data + l4_off;

		if ((void *)(uh + 1) > data_end)
			return 1;
		barrier_var(uh);
		check = &uh->check;
		from_port = dst ? uh->dest : uh->source;
		if (dst)
			uh->dest = to_port;
		else
			uh->source = to_port;
	} else {
		struct icmphdr *ih = data + l4_off;

		if ((void *)(ih + 1) > data_end)
			return 1;
		barrier_var(ih);
		/* No pseudo header, and never CHECKSUM_PARTIAL: fold here. */
		ih->checksum = csum_update16(ih->checksum, ih->id, to_port);
		ih->id = to_port;
		goto addr;
	}
	set_addr4(ip, dst, from_addr, to_addr);

	switch (pkt->ip_summed) {
	case SKB_CHECKSUM_NONE:
	case SKB_CHECKSUM_UNNECESSARY:
		*check = l4_csum_mangle(proto, csum_update16(csum_update32(*check, from_addr, to_addr),
							     from_port, to_port));
		return 0;
	case SKB_CHECKSUM_PARTIAL:
		/* The port is in the data the device sums: the field has no
		 * share of it. */
		*check = l4_csum_mangle(proto, csum_partial_update32(*check, from_addr, to_addr));
		return 0;
	case SKB_CHECKSUM_COMPLETE:
		/* The port and its share of the field leave skb->csum as it
		 * was; the address's share must move it, which the helper
		 * does. */
		*check = l4_csum_mangle(proto, csum_update16(*check, from_port, to_port));
		from_port = to_port;
		break;
	}
	csum_off = l4_csum_off(proto, l4_off);
	if (bpf_l4_csum_replace(skb, csum_off, from_addr, to_addr, flags | BPF_F_PSEUDO_HDR | 4) < 0)
		return -1;
	if (from_port != to_port && bpf_l4_csum_replace(skb, csum_off, from_port, to_port, flags | 2) < 0)
		return -1;
	return 0;
addr:
	set_addr4(ip, dst, from_addr, to_addr);
	return 0;
}

/* Rewrites the source (or destination) address and port of a packet's own
 * headers: TCP, UDP, or an ICMP echo whose identifier is the port. */
static __always_inline int rewrite_endpoint4(struct __sk_buff *skb, const struct packet *pkt,
					     int dst, __be32 to_addr, __be16 to_port)
{
	const struct l4_tuple *t = &pkt->t;
	__u32 csum = l4_csum_off(t->proto, pkt->l4_off);
	__u64 flags = l4_csum_flags(t->proto);
	int done = rewrite_endpoint4_linear(skb, pkt, dst, to_addr, to_port);

	if (done <= 0)
		return done;

	/* A later fragment has no transport header: its first fragment's
	 * checksum, covering the whole datagram, took the port change. */
	if (pkt->frag == FRAG_LATER)
		return rewrite_addr4(skb, pkt->l3_off, dst ? IP_DADDR_OFF : IP_SADDR_OFF, 0, 0,
				     dst ? t->daddr : t->saddr, to_addr);
	if (rewrite_addr4(skb, pkt->l3_off, dst ? IP_DADDR_OFF : IP_SADDR_OFF,
			  addr_l4_csum_off(t->proto, pkt->l4_off), flags | BPF_F_PSEUDO_HDR,
			  dst ? t->daddr : t->saddr, to_addr) < 0)
		return -1;
	return rewrite_port(skb, dst ? dport_off(t->proto, pkt->l4_off) : sport_off(t->proto, pkt->l4_off),
			    csum, flags, dst ? t->dport : t->sport, to_port,
			    pkt->udp_no_csum ? BPF_F_RECOMPUTE_CSUM : 0);
}

/* ICMP checksums cover the quoted packet, so every 16-bit word changed
 * inside it must be folded into the outer ICMP checksum too. */
static __always_inline int icmp_fold_word(struct __sk_buff *skb, __u32 icmp_csum_off,
					  __u32 word_off, __be16 before)
{
	__be16 after;

	if (bpf_skb_load_bytes(skb, word_off, &after, sizeof(after)) < 0)
		return -1;
	if (before == after)
		return 0;
	return bpf_l4_csum_replace(skb, icmp_csum_off, before, after, 2);
}

/* Rewrites one address and one port of the packet quoted by an ICMP error,
 * keeping the quoted IP and L4 checksums and the ICMP checksum right. */
static __always_inline int rewrite_quoted4(struct __sk_buff *skb, const struct packet *pkt,
					   __u32 addr_off, __u32 port_off /* in the quoted L4 header */, __be32 from_addr,
					   __be32 to_addr, __be16 from_port, __be16 to_port)
{
	__u32 icmp_csum = pkt->l4_off + offsetof(struct icmphdr, checksum);
	__u32 ip_csum = pkt->inner_l3_off + IP_CSUM_OFF;
	__u32 l4_csum = l4_csum_off(pkt->inner.proto, pkt->inner_l4_off);
	__u64 l4_flags = l4_csum_flags(pkt->inner.proto);
	/* A quoted echo: its identifier is the port, and its checksum
	 * covers no pseudo header, so the address leaves it alone. */
	int echo = pkt->inner.proto == IPPROTO_ICMP;
	__be16 old_ip_csum, old_l4_csum;
	int has_l4_csum;

	if (echo)
		port_off = offsetof(struct icmphdr, id);

	if (bpf_skb_load_bytes(skb, ip_csum, &old_ip_csum, sizeof(old_ip_csum)) < 0)
		return -1;
	/* Quoted bytes past the datagram's end are padding, not the quote. */
	has_l4_csum = l4_csum + sizeof(old_l4_csum) <= pkt->l3_end &&
		      bpf_skb_load_bytes(skb, l4_csum, &old_l4_csum, sizeof(old_l4_csum)) == 0;
	if (!has_l4_csum)
		l4_csum = 0;

	if (rewrite_addr4(skb, pkt->inner_l3_off, addr_off, echo ? 0 : l4_csum, l4_flags, from_addr,
			  to_addr) < 0)
		return -1;
	if (rewrite_port(skb, pkt->inner_l4_off + port_off, l4_csum, l4_flags, from_port, to_port, 0) < 0)
		return -1;

	if (bpf_l4_csum_replace(skb, icmp_csum, from_addr, to_addr, 4) < 0)
		return -1;
	if (from_port != to_port && bpf_l4_csum_replace(skb, icmp_csum, from_port, to_port, 2) < 0)
		return -1;
	if (icmp_fold_word(skb, icmp_csum, ip_csum, old_ip_csum) < 0)
		return -1;
	if (has_l4_csum && icmp_fold_word(skb, icmp_csum, l4_csum, old_l4_csum) < 0)
		return -1;
	return 0;
}

#endif
