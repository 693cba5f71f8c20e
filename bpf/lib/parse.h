/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing for the tc programs. Headers are copied out with
 * bpf_skb_load_bytes so non-linear skbs and IP options need no special
 * cases, and a truncated packet is simply one that fails to load. */
#ifndef PONTOON_PARSE_H
#define PONTOON_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* linux/icmp.h pulls in glibc's socket headers, which do not build for the
 * BPF target; the little of it we need is spelled out here. */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_SOURCE_QUENCH 4
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMP_ECHO 8

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id; /* echo only; other types use these bytes otherwise */
	__be16 sequence;
};

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

enum parse_result {
	PARSE_OK = 0,     /* TCP or UDP with ports, or ICMP echo with its id */
	PARSE_ICMP_ERROR, /* ICMP error carrying a TCP or UDP header */
	PARSE_NOT_IP,
	PARSE_MALFORMED,
	PARSE_FRAGMENT,
	PARSE_OTHER,      /* well formed, but nothing we translate */
};

/* One IPv4 transport header as the programs need it. */
struct l4_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
};

struct packet {
	__u32 l3_off;
	__u32 l4_off;
	struct l4_tuple t;
	__u8 tcp_flags;
	__u8 udp_no_csum; /* UDP checksum 0: nothing absorbs a port change */
	/* For ICMP errors: the embedded header that caused the error. */
	__u32 inner_l3_off;
	__u32 inner_l4_off;
	struct l4_tuple inner;
};

static __always_inline __u32 l4_csum_off(__u8 proto, __u32 l4_off)
{
	if (proto == IPPROTO_TCP)
		return l4_off + offsetof(struct tcphdr, check);
	if (proto == IPPROTO_UDP)
		return l4_off + offsetof(struct udphdr, check);
	return l4_off + offsetof(struct icmphdr, checksum);
}

/* The checksum an address change must fix besides the IP header's: ICMP
 * has no pseudo header, so there is none. */
static __always_inline __u32 addr_l4_csum_off(__u8 proto, __u32 l4_off)
{
	return proto == IPPROTO_ICMP ? 0 : l4_csum_off(proto, l4_off);
}

/* Where a "port" lives: an ICMP echo's identifier plays both roles. */
static __always_inline __u32 sport_off(__u8 proto, __u32 l4_off)
{
	return l4_off + (proto == IPPROTO_ICMP ? 4 : 0);
}

static __always_inline __u32 dport_off(__u8 proto, __u32 l4_off)
{
	return l4_off + (proto == IPPROTO_ICMP ? 4 : 2);
}

/* UDP checksum 0 means "none": the helpers must leave it at 0, and must
 * write 0xffff instead of a computed 0. */
static __always_inline __u64 l4_csum_flags(__u8 proto)
{
	return proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* Loads an IPv4 header at off and the ports of the TCP/UDP header behind
 * it. Returns the L4 offset through l4_off. */
static __always_inline int parse_ipv4(struct __sk_buff *skb, __u32 off, struct l4_tuple *t,
				      __u32 *l4_off, __u16 *l4_csum)
{
	struct iphdr ip;
	__be16 ports[2];

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return PARSE_MALFORMED;
	if (ip.version != 4 || ip.ihl < 5)
		return PARSE_MALFORMED;
	if (ip.frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_FRAGMENT;

	t->saddr = ip.saddr;
	t->daddr = ip.daddr;
	t->proto = ip.protocol;
	*l4_off = off + ip.ihl * 4;

	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return ip.protocol == IPPROTO_ICMP ? PARSE_OK : PARSE_OTHER;
	if (bpf_skb_load_bytes(skb, *l4_off, ports, sizeof(ports)) < 0)
		return PARSE_MALFORMED;
	/* The checksum we will fix must be in the packet. */
	if (l4_csum && bpf_skb_load_bytes(skb, l4_csum_off(ip.protocol, *l4_off), l4_csum,
					  sizeof(*l4_csum)) < 0)
		return PARSE_MALFORMED;
	t->sport = ports[0];
	t->dport = ports[1];
	return PARSE_OK;
}

static __always_inline int icmp_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
	       type == ICMP_PARAMETERPROB || type == ICMP_SOURCE_QUENCH;
}

/* Parses Ethernet + IPv4 + TCP/UDP, or an ICMP error and the header it
 * quotes. Anything else is reported and left alone by the callers. */
static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *pkt)
{
	struct icmphdr icmp;
	__u16 l4_csum = 0;
	__u8 tcp_flags;
	int ret;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IP;

	pkt->l3_off = ETH_HLEN;
	ret = parse_ipv4(skb, pkt->l3_off, &pkt->t, &pkt->l4_off, &l4_csum);
	if (ret != PARSE_OK)
		return ret;
	pkt->udp_no_csum = pkt->t.proto == IPPROTO_UDP && l4_csum == 0;

	if (pkt->t.proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, pkt->l4_off + 13, &tcp_flags, 1) < 0)
			return PARSE_MALFORMED;
		pkt->tcp_flags = tcp_flags;
		return PARSE_OK;
	}
	if (pkt->t.proto == IPPROTO_UDP)
		return PARSE_OK;

	if (bpf_skb_load_bytes(skb, pkt->l4_off, &icmp, sizeof(icmp)) < 0)
		return PARSE_MALFORMED;
	/* An echo's identifier is its "port": a request carries it as the
	 * source side of the flow, the reply as the destination side. */
	if (icmp.type == ICMP_ECHO || icmp.type == ICMP_ECHOREPLY) {
		pkt->t.sport = icmp.type == ICMP_ECHO ? icmp.id : 0;
		pkt->t.dport = icmp.type == ICMP_ECHO ? 0 : icmp.id;
		return PARSE_OK;
	}
	if (!icmp_is_error(icmp.type))
		return PARSE_OTHER;

	/* The quoted header need not carry its L4 checksum (RFC 792 only
	 * promises 8 bytes); nat.h fixes it only when it is there. */
	pkt->inner_l3_off = pkt->l4_off + sizeof(icmp);
	ret = parse_ipv4(skb, pkt->inner_l3_off, &pkt->inner, &pkt->inner_l4_off, NULL);
	if (ret != PARSE_OK)
		return ret == PARSE_FRAGMENT ? PARSE_OTHER : ret;
	if (pkt->inner.proto != IPPROTO_TCP && pkt->inner.proto != IPPROTO_UDP)
		return PARSE_OTHER;
	return PARSE_ICMP_ERROR;
}

#endif
