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
#include "kernel.h"
#include "types.h"
#include "maps.h"

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

#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

enum parse_result {
	PARSE_OK = 0,     /* TCP or UDP with ports, or ICMP echo with its id */
	PARSE_ICMP_ERROR, /* ICMP error carrying a TCP or UDP header, or an echo */
	PARSE_NOT_IP,
	PARSE_MALFORMED,
	PARSE_FRAGMENT,   /* a later fragment whose first one we have not seen */
	PARSE_OTHER,      /* well formed, but nothing we translate */
};

/* Where a packet sits in its datagram. A later fragment has its ports from
 * the frags map and no transport header: only its addresses change. */
enum frag_kind {
	FRAG_NONE = 0,
	FRAG_FIRST,
	FRAG_LATER,
};

/* One IPv4 transport header as the programs need it. */
struct l4_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
};

/* The TCP fields connection tracking follows, host byte order. */
struct tcp_fields {
	__u32 seq;
	__u32 ack;
	__u16 window;
	__u8 wscale;     /* from a SYN's options */
	__u8 has_wscale;
};

struct packet {
	__u32 l3_off;
	__u32 l4_off;
	struct l4_tuple t;
	__u8 tcp_flags;
	__u8 udp_no_csum; /* UDP checksum 0: nothing absorbs a port change */
	__u8 frag;        /* enum frag_kind */
	__u8 df;          /* Don't Fragment set */
	__u8 has_addrs;   /* t.saddr and t.daddr are set, even if the rest is malformed */
	__u8 ip_summed;   /* SKB_CHECKSUM_*: how the TCP/UDP checksum is folded */
	__u32 l3_end;     /* where the IP datagram ends: bytes after it are padding */
	struct tcp_fields tcp;
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

static __always_inline void frag_key4(struct frag_key *key, const struct l4_tuple *t, __be16 id)
{
	key->family = PONTOON_AF_INET;
	key->proto = t->proto;
	key->id = id;
	__builtin_memcpy(key->saddr, &t->saddr, 4);
	__builtin_memcpy(key->daddr, &t->daddr, 4);
}

/* Header loads: straight from the packet when the header lies in the
 * skb's linear data (nearly always: drivers and GRO pull headers there),
 * through bpf_skb_load_bytes otherwise. A helper call costs more than the
 * rest of the miss path. Offsets are bounded for the verifier: headers
 * start within the first 128 bytes. */
#define PARSE_MAX_OFF 128

#define DEFINE_LOAD_HDR(name, type)							\
static __always_inline int name(struct __sk_buff *skb, __u32 off, type *to)		\
{											\
	void *data = (void *)(long)skb->data;						\
	void *data_end = (void *)(long)skb->data_end;					\
	type *from;									\
											\
	if (off > PARSE_MAX_OFF)							\
		return -1;								\
	from = data + off;								\
	if ((void *)(from + 1) <= data_end) {						\
		*to = *from;								\
		return 0;								\
	}										\
	return bpf_skb_load_bytes(skb, off, to, sizeof(*to));				\
}

/* The first 8 bytes of a transport header: UDP's whole, ICMP's. */
struct l4_head {
	__u8 bytes[8];
};

DEFINE_LOAD_HDR(load_iphdr, struct iphdr)
DEFINE_LOAD_HDR(load_tcphdr, struct tcphdr)
DEFINE_LOAD_HDR(load_l4_head, struct l4_head)

/* What parse_packet needs from an IPv4 header besides the tuple. */
struct ipv4_info {
	__u32 l4_off;
	__u16 tot_len;
	__be16 id;
	__u8 frag; /* enum frag_kind */
	__u8 df;
};

/* Checks an IPv4 header loaded at off and takes the tuple's addresses and
 * protocol from it. A fragment's addresses are filled in even when its
 * ports are unknown, so callers can still judge where it comes from. */
static __always_inline int ipv4_header(const struct iphdr *ip, __u32 off, struct l4_tuple *t,
				       struct ipv4_info *info)
{
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_MALFORMED;
	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->proto = ip->protocol;
	info->l4_off = off + ip->ihl * 4;
	info->id = ip->id;
	info->tot_len = bpf_ntohs(ip->tot_len);
	info->df = !!(ip->frag_off & bpf_htons(IP_DF));
	info->frag = FRAG_NONE;
	if (ip->frag_off & bpf_htons(IP_OFFSET)) {
		info->frag = FRAG_LATER;
		return PARSE_FRAGMENT; /* parse_packet looks its ports up */
	}
	if (ip->frag_off & bpf_htons(IP_MF))
		info->frag = FRAG_FIRST;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return ip->protocol == IPPROTO_ICMP ? PARSE_OK : PARSE_OTHER;
	return PARSE_OK;
}

/* Loads the IPv4 header quoted by an ICMP error and the ports of the
 * TCP/UDP header behind it: all RFC 792 promises is 8 bytes of it. An
 * echo's identifier is its port, as parse_packet reads it, so an error
 * about a ping (an unreachable host, traceroute -I's time exceeded) finds
 * the ping's flow. An error about an error is never sent (RFC 1122), nor
 * translated. */
static __always_inline int parse_quoted_ipv4(struct __sk_buff *skb, __u32 off, struct l4_tuple *t,
					     __u32 *l4_off)
{
	struct ipv4_info info;
	struct iphdr ip;
	__be16 head[4]; /* ports; or an echo's type and code, checksum, id, sequence */
	int ret;

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return PARSE_MALFORMED;
	ret = ipv4_header(&ip, off, t, &info);
	*l4_off = info.l4_off;
	if (ret != PARSE_OK)
		return ret;
	if (ip.protocol != IPPROTO_ICMP) {
		if (bpf_skb_load_bytes(skb, *l4_off, head, 4) < 0)
			return PARSE_MALFORMED;
		t->sport = head[0];
		t->dport = head[1];
		return PARSE_OK;
	}
	if (bpf_skb_load_bytes(skb, *l4_off, head, sizeof(head)) < 0)
		return PARSE_MALFORMED;
	if (*(__u8 *)head == ICMP_ECHO) {
		t->sport = head[2];
		t->dport = 0;
	} else if (*(__u8 *)head == ICMP_ECHOREPLY) {
		t->sport = 0;
		t->dport = head[2];
	} else {
		return PARSE_OTHER;
	}
	return PARSE_OK;
}

/* How much of the quoted transport header an ICMP error must hold: the
 * ports, or an echo's header up to its identifier and sequence. */
static __always_inline __u32 quoted_l4_need(__u8 proto)
{
	return proto == IPPROTO_ICMP ? 8 : 4;
}

static __always_inline int icmp_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
	       type == ICMP_PARAMETERPROB || type == ICMP_SOURCE_QUENCH;
}

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_WINDOW 3
#define TCP_MAX_OPTIONS 40

/* A SYN's window scale option: the shift its sender applies to every
 * window it advertises later. Only SYNs pay for this walk. */
static __always_inline void parse_wscale(struct __sk_buff *skb, __u32 l4_off, __u8 doff,
					 struct tcp_fields *tcp)
{
	__u32 off = l4_off + sizeof(struct tcphdr);
	__u32 end = l4_off + doff * 4;
	__u8 opt[3];
	int i;

	for (i = 0; i < TCP_MAX_OPTIONS && off < end; i++) {
		if (bpf_skb_load_bytes(skb, off, opt, 1) < 0)
			return;
		if (opt[0] == TCPOPT_EOL)
			return;
		if (opt[0] == TCPOPT_NOP) {
			off++;
			continue;
		}
		if (off + 2 > end || bpf_skb_load_bytes(skb, off, opt, 2) < 0 || opt[1] < 2)
			return;
		if (opt[0] == TCPOPT_WINDOW && opt[1] == 3 && off + 3 <= end &&
		    bpf_skb_load_bytes(skb, off, opt, 3) == 0) {
			tcp->wscale = opt[2] > 14 ? 14 : opt[2]; /* RFC 7323's limit */
			tcp->has_wscale = 1;
			return;
		}
		off += opt[1];
	}
}

/* The TCP fields connection tracking follows, from the header loaded from
 * l4_off; shared by both families' packets. */
static __always_inline int parse_tcp_fields(struct __sk_buff *skb, __u32 l4_off,
					    const struct tcphdr *th, __u8 *tcp_flags,
					    struct tcp_fields *tcp)
{
	__u8 flags = ((const __u8 *)th)[13];

	if (th->doff < 5)
		return PARSE_MALFORMED;
	*tcp_flags = flags;
	tcp->seq = bpf_ntohl(th->seq);
	tcp->ack = bpf_ntohl(th->ack_seq);
	tcp->window = bpf_ntohs(th->window);
	if ((flags & TCP_FLAG_SYN) && th->doff > 5)
		parse_wscale(skb, l4_off, th->doff, tcp);
	return PARSE_OK;
}

static __always_inline int parse_tcp(struct __sk_buff *skb, struct packet *pkt,
				     const struct tcphdr *th)
{
	return parse_tcp_fields(skb, pkt->l4_off, th, &pkt->tcp_flags, &pkt->tcp);
}

/* A first fragment leaves its ports for the later ones; a later fragment
 * takes them. One that arrives before its first fragment is unknown and
 * stays untranslated (the uplink's egress drops it if it would leak a
 * private source). */
static __always_inline int frag_ports4(struct packet *pkt, __be16 id)
{
	struct frag_key key = {};
	struct frag_value *v;

	frag_key4(&key, &pkt->t, id);
	if (pkt->frag == FRAG_FIRST) {
		struct frag_value ports = { .sport = pkt->t.sport, .dport = pkt->t.dport };

		bpf_map_update_elem(&frags, &key, &ports, BPF_ANY);
		return PARSE_OK;
	}
	v = bpf_map_lookup_elem(&frags, &key);
	if (!v)
		return PARSE_FRAGMENT;
	pkt->t.sport = v->sport;
	pkt->t.dport = v->dport;
	return PARSE_OK;
}

/* The transport header of a packet's own datagram, loaded in one go. */
union l4_header {
	struct tcphdr tcp;
	struct udphdr udp;
	struct icmphdr icmp;
};

/* Parses IPv4 at l3_off (ETH_HLEN, or 0 on a device without an Ethernet
 * header) + TCP/UDP, or an ICMP error and the header it quotes. Anything
 * else is reported and left alone by the callers. Two loads for the common
 * case (IP header, transport header): each helper call costs.
 * Inline: on CPUs whose return instructions go through a mitigation thunk
 * (retbleed, SRSO) a BPF-to-BPF call costs 8 ns, a fifth of the uplink's
 * whole miss path. Callers short of stack use parse_packet_apart. */
static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *pkt, __u32 l3_off)
{
	struct ipv4_info info = {};
	union l4_header l4;
	struct iphdr ip;
	__u32 need;
	int ret;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IP;

	/* Read here, where little is live across the call it costs. */
	pkt->ip_summed = skb_ip_summed(skb);
	pkt->l3_off = l3_off;
	if (load_iphdr(skb, l3_off, &ip) < 0)
		return PARSE_MALFORMED;
	ret = ipv4_header(&ip, l3_off, &pkt->t, &info);
	pkt->has_addrs = pkt->t.saddr || pkt->t.daddr;
	if (ret == PARSE_MALFORMED)
		return ret;
	pkt->l4_off = info.l4_off;
	pkt->frag = info.frag;
	pkt->df = info.df;
	pkt->l3_end = l3_off + info.tot_len;
	if (info.frag == FRAG_LATER) {
		if (pkt->t.proto != IPPROTO_TCP && pkt->t.proto != IPPROTO_UDP &&
		    pkt->t.proto != IPPROTO_ICMP)
			return PARSE_OTHER;
		return frag_ports4(pkt, info.id);
	}
	if (ret != PARSE_OK)
		return ret;

	/* A packet's own transport header must lie inside its IP datagram:
	 * bytes past tot_len are padding, and a first fragment cut before
	 * the checksum would have it "fixed" in the padding (RFC 1858 calls
	 * such fragments suspect). */
	need = pkt->t.proto == IPPROTO_TCP ? sizeof(struct tcphdr) : 8;
	if (info.tot_len < ip.ihl * 4 || info.tot_len - ip.ihl * 4 < need)
		return PARSE_MALFORMED;
	if (pkt->t.proto == IPPROTO_TCP) {
		if (load_tcphdr(skb, pkt->l4_off, &l4.tcp) < 0)
			return PARSE_MALFORMED;
		pkt->t.sport = l4.tcp.source;
		pkt->t.dport = l4.tcp.dest;
		ret = parse_tcp(skb, pkt, &l4.tcp);
	} else {
		if (load_l4_head(skb, pkt->l4_off, (struct l4_head *)&l4) < 0)
			return PARSE_MALFORMED;
		if (pkt->t.proto == IPPROTO_UDP) {
			pkt->t.sport = l4.udp.source;
			pkt->t.dport = l4.udp.dest;
			pkt->udp_no_csum = l4.udp.check == 0;
		} else {
			if (l4.icmp.type != ICMP_ECHO && l4.icmp.type != ICMP_ECHOREPLY)
				goto icmp_error;
			/* An echo's identifier is its "port": a request
			 * carries it as the source side of the flow, the
			 * reply as the destination. */
			pkt->t.sport = l4.icmp.type == ICMP_ECHO ? l4.icmp.id : 0;
			pkt->t.dport = l4.icmp.type == ICMP_ECHO ? 0 : l4.icmp.id;
		}
	}
	if (ret == PARSE_OK && pkt->frag == FRAG_FIRST)
		frag_ports4(pkt, info.id);
	return ret;

icmp_error:
	if (!icmp_is_error(l4.icmp.type) || pkt->frag != FRAG_NONE)
		return PARSE_OTHER;
	pkt->inner_l3_off = pkt->l4_off + sizeof(struct icmphdr);
	ret = parse_quoted_ipv4(skb, pkt->inner_l3_off, &pkt->inner, &pkt->inner_l4_off);
	if (ret != PARSE_OK)
		return ret == PARSE_FRAGMENT ? PARSE_OTHER : ret;
	/* The quoted ports must lie inside the ICMP message, not in padding. */
	if (pkt->inner_l4_off + quoted_l4_need(pkt->inner.proto) > pkt->l3_end)
		return PARSE_OTHER;
	return PARSE_ICMP_ERROR;
}

/* parse_packet in a frame of its own, for callers whose deepest call
 * chain has no room for its locals. */
static __noinline __attribute__((unused)) int parse_packet_apart(struct __sk_buff *skb,
								  struct packet *pkt, __u32 l3_off)
{
	return parse_packet(skb, pkt, l3_off);
}

#endif
