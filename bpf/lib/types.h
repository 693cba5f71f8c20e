/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Structs shared between the BPF programs and the Go control plane.
 * maps/ mirrors every struct here; maps/layout_test.go holds the Go view
 * against the compiled object's BTF, so change both together. */
#ifndef PONTOON_TYPES_H
#define PONTOON_TYPES_H

#include <linux/types.h>

/* Address families as the kernel numbers them; keys carry the family so
 * IPv6 entries share the maps instead of needing a second set. */
#define PONTOON_AF_INET 2
#define PONTOON_AF_INET6 10

/* binding_value.flags */
#define BINDING_F_LOCAL_ONLY (1 << 0) /* host IP is loopback: socket path only */
#define BINDING_F_ALLOWLIST (1 << 1)  /* only sources in allow_from may use it */

/* A source a binding accepts (pontoon port publish --allow-from), found by
 * longest prefix match. prefixlen counts the bits after itself: 32 for the
 * binding id, 32 for the family and pad, then the prefix's own length. The
 * family keeps an IPv4 prefix from matching the first bits of an IPv6
 * source on a dual-stack binding. */
struct allow_key {
	__u32 prefixlen;
	__u32 binding_id;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct allow_value {
	__u32 flags; /* none yet; maps need a value */
};

/* What the uplink's XDP program leaves in the packet's metadata for tc:
 * XDP_META_TRANSLATED says the packet was DNATed already and must not be
 * translated again; XDP_META_MISS that nothing of ours matched it (no
 * binding, no masqueraded flow, no container address), so tc lets it
 * pass at once. */
#define XDP_META_MAGIC 0x706e746eU /* "pntn" */
#define XDP_META_TRANSLATED (1 << 0)
#define XDP_META_MISS (1 << 1)

struct xdp_meta {
	__u32 magic;
	__u32 flags;
};

/* ct_value.flags */
#define CT_F_DNAT_REPLY (1 << 0) /* entry is keyed by the reply of a DNAT flow */
#define CT_F_REPLIED (1 << 1)    /* the backend answered */
#define CT_F_AGE_FROM_UPGRADE (1 << 2) /* carried over from a build without created_ns:
					 * created_ns is its last packet before then */

/* ct_value.tcp_flags and snat_value.tcp_flags: where a TCP flow is in its
 * life, for lifetimes and GC. ESTABLISHED needs the whole handshake: the
 * client's SYN, the server's SYN-ACK, then the client's ACK. */
#define CT_TCP_SYN (1 << 0)         /* the opener's SYN */
#define CT_TCP_ESTABLISHED (1 << 1) /* the opener acknowledged the SYN-ACK */
#define CT_TCP_FIN (1 << 2)
#define CT_TCP_RST (1 << 3)         /* an RST inside the receiver's window */
#define CT_TCP_SYNACK (1 << 4)      /* the answerer's SYN-ACK */

/* A published port: what a client dials. addr all zero is the wildcard
 * binding (0.0.0.0 or ::), matched only for the host's own addresses. */
struct binding_key {
	__u8 family;
	__u8 proto;
	__be16 port;
	__u8 addr[16];
};

/* Where a published port leads. */
struct binding_value {
	__u8 backend_addr[16];
	__be16 backend_port;
	__u16 flags;
	__u32 id;
};

/* A connection as one direction of it is seen on the wire. */
struct ct_key {
	__u8 family;
	__u8 proto;
	__be16 sport;
	__be16 dport;
	__u16 pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* What one side of a TCP connection last told the other: enough to tell
 * an RST inside the window (the connection really ends) from a stray or
 * spoofed one (ignored). */
struct tcp_side {
	__u32 ack;     /* host byte order */
	__u16 window;  /* as sent, unscaled */
	__u8 wscale;   /* from this side's SYN */
	__u8 seen;     /* TCP_SIDE_* */
};

#define TCP_SIDE_ACKED (1 << 0)      /* ack and window are set */
#define TCP_SIDE_SYN_WINDOW (1 << 1) /* window came with a SYN: never scaled (RFC 7323) */
#define TCP_SIDE_WSCALE (1 << 2)     /* this side offered window scaling */

/* For a DNAT reply entry: the address and port the client dialled, which
 * replies must carry as their source. */
struct ct_value {
	__u8 nat_addr[16];
	__be16 nat_port;
	__u8 flags;
	__u8 tcp_flags;
	__u32 binding_id;
	__u64 last_seen_ns; /* CLOCK_MONOTONIC at tick precision */
	struct tcp_side tcp[2]; /* CT_DIR_ORIGINAL: the client; CT_DIR_REPLY: the backend */
	__u64 created_ns; /* CLOCK_MONOTONIC, the flow's first packet: its age */
};

#define CT_DIR_ORIGINAL 0
#define CT_DIR_REPLY 1

/* The ports of a fragmented datagram, learnt from its first fragment: the
 * others carry no transport header. */
struct frag_key {
	__u8 family;
	__u8 proto;
	__u16 pad;
	__u32 id; /* IPv4's 16-bit identification */
	__u8 saddr[16];
	__u8 daddr[16];
};

struct frag_value {
	__be16 sport;
	__be16 dport;
};

struct hostaddr_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct hostaddr_value {
	__u32 ifindex;
};

/* Remembers what a socket dialled before connect4/sendmsg4 rewrote it, so
 * getpeername4/recvmsg4 can show the application its own address again. */
struct sockrev_key {
	__u64 cookie;
	__u8 addr[16]; /* backend */
	__be16 port;
	__u8 family;
	__u8 pad;
	__u32 pad2;
};

struct sockrev_value {
	__u8 addr[16]; /* what the application dialled */
	__be16 port;
	__u16 pad;
};

/* config.flags */
#define CONFIG_F_FIB_REDIRECT (1 << 0) /* forward translated packets with bpf_redirect_neigh */
/* Bits 1 and 2 said that the prefilter and the binding filter were filled,
 * before their bits were turned round. No agent sets them any more, so a
 * program of an older build left attached (an XDP program the new one
 * failed to replace) runs with its filters, which nobody updates now, off. */
/* Every masqueraded flow's port lies in [snat_port_min, snat_port_max]:
 * the agent dropped the flows of an earlier range. */
#define CONFIG_F_SNAT_IN_RANGE (1 << 3)

/* The prefilter_skip map: bitmaps in 64-bit words that say which
 * destination ports no binding uses and which IPv4 /16s no network
 * overlaps, so a packet that can match nothing (most of what an uplink
 * carries) skips the hash and trie lookups. A set bit means "nothing
 * there": a clear one only "look it up", so an empty map hides nothing. */
#define PREFILTER_TCP_PORTS 0   /* 1024 words, a bit per port */
#define PREFILTER_UDP_PORTS 1024
#define PREFILTER_NETS4 2048    /* 1024 words, a bit per /16 */
#define PREFILTER_WORDS 3072

/* The bfilter_skip map: what a port bit cannot tell, for IPv4. A
 * published port's bit is clear when any address has it, so a packet for
 * the host's own port 22 still paid two hash lookups (the exact address,
 * then the wildcard) once some other address published port 22. Here the
 * wildcard (0.0.0.0:port) bindings have their own port bitmaps, and the
 * bindings on one address a bloom bit each (one hash function; 65,536 of
 * them clear about 6% of the bits). Same rule: a set bit means "nothing
 * there". */
#define BFILTER_WILD_TCP 0 /* 1024 words, a bit per port */
#define BFILTER_WILD_UDP 1024
#define BFILTER_EXACT4 2048 /* 16384 words: bit bfilter_bit4(proto, addr, port) */
#define BFILTER_EXACT4_SHIFT 44 /* 64 - 20: 2^20 bits */
#define BFILTER_WORDS (2048 + 16384)
/* Fibonacci hashing: the key times 2^64 / golden ratio, top 20 bits. */
#define BFILTER_MULTIPLIER 0x9E3779B97F4A7C15ULL

struct config {
	__u64 host_netns_cookie; /* loopback is translated only in this netns */
	__u32 flags;
	__u16 snat_port_min; /* masquerade source ports, host byte order; 0: defaults */
	__u16 snat_port_max;
};

/* A Pontoon network, found by longest prefix match on an address.
 * prefixlen counts the bits after itself: 32 for family and pad, then the
 * subnet's own prefix length. */
struct network_key {
	__u32 prefixlen;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

#define NETWORK_F_MASQUERADE (1 << 0)
#define NETWORK_F_NO_ICC (1 << 1) /* containers may not talk to each other directly */
#define NETWORK_F_ROUTED (1 << 2) /* the outside may reach containers by their own addresses */
/* On an IPv6 subnet with NETWORK_F_MASQUERADE: translate to the uplink's
 * IPv6 address instead of refusing to forward. A separate bit so entries
 * written before NAT66 existed keep failing closed.
 */
#define NETWORK_F_NAT66 (1 << 3)

struct network_value {
	__u8 gateway[16];
	__u32 id;
	__u32 flags;
};

/* A container's address, and the host side of its veth. */
struct endpoint_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct endpoint_value {
	__u32 ifindex;     /* host-side veth */
	__u32 network_id;
	__u8 mac[6];       /* the container's eth0; all zero: not checked */
	__u16 flags;       /* ENDPOINT_F_* */
};

/* endpoint_value.flags: its network's icc=false, for the IPv6 rules, which
 * cannot find the network of a link-local address by subnet. */
#define ENDPOINT_F_NO_ICC (1 << 0)

/* A network a network namespace's containers are on, one entry per
 * (netns cookie, network): a container may be on several. The socket hooks
 * only connect a container straight to a backend it may reach directly (on
 * one of its networks, icc on); otherwise tc's hairpin path does the job
 * through the host, as Docker's would. */
struct netns_key {
	__u64 cookie;
	__u32 network_id;
	__u32 pad;
};

struct netns_value {
	__u32 flags; /* none yet; hash maps need a value */
};

/* An uplink by ifindex: the address masqueraded flows leave with. */
struct uplink_value {
	__u8 addr[16];
	__u32 flags;
};

/* snat_value.flags: which direction of a masqueraded flow the key is. */
#define SNAT_F_FORWARD (1 << 0) /* container -> outside; value: translated source */
#define SNAT_F_REVERSE (1 << 1) /* outside -> uplink; value: original container source */
#define SNAT_F_HOST (1 << 2)    /* with REVERSE: the host's own echo identifier, not ours to take */

struct snat_value {
	__u8 addr[16];
	__be16 port;
	__u8 flags;
	__u8 tcp_flags;
	__u32 pad;
	__u64 last_seen_ns;
	struct tcp_side tcp; /* the side that sends in this entry's direction */
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* What one published port mapping carried: "in" towards its container
 * (DNAT), "out" its replies (reverse NAT). Packets count wire segments, so
 * a GRO aggregate counts as what arrived. id is the binding whose counts
 * the slot holds (0: none): a conntrack entry that outlived its binding
 * finds another binding's slot, and must count nothing. */
struct binding_counter {
	__u32 id;
	__u32 pad;
	__u64 packets_in;
	__u64 bytes_in;
	__u64 packets_out;
	__u64 bytes_out;
};

/* Indexes of the stats map: one counter per verdict of every program. */
enum stat_index {
	STAT_PASS_NOT_IP = 0,
	STAT_PASS_MALFORMED,
	STAT_PASS_FRAGMENT,
	STAT_PASS_NO_MATCH,
	STAT_PASS_LOCAL_ONLY,
	STAT_PASS_NOT_NEW,
	STAT_DNAT,
	STAT_RNAT,
	STAT_ICMP_DNAT,
	STAT_ICMP_RNAT,
	STAT_DROP_REWRITE,
	STAT_DROP_CT_FULL,
	STAT_DROP_ISOLATION,
	STAT_DROP_SNAT_EXHAUSTED,
	STAT_SNAT,
	STAT_SNAT_REVERSE,
	STAT_ICMP_SNAT_REVERSE,
	STAT_REDIRECT,
	STAT_DROP_ICC,
	STAT_ENDPOINT_REDIRECT,
	STAT_HAIRPIN,
	STAT_HAIRPIN_REPLY,
	STAT_SOCK_CONNECT,
	STAT_SOCK_SENDMSG,
	STAT_SOCK_RECVMSG,
	STAT_SOCK_GETPEERNAME,
	STAT_FIB_TOO_BIG,         /* handed to the stack untranslated: it answers "fragmentation needed" or fragments */
	STAT_DROP_UNMASQUERADED,  /* a masqueraded network's source about to leave an uplink as it is */
	STAT_DROP_CT_CLASH,       /* a new flow's reply tuple is a live flow's of another binding */
	STAT_DROP_FRAG_NEEDED,    /* a hairpinned packet too big for the backend's network */
	STAT_ICMP_SNAT,           /* an ICMP error from a container about a masqueraded flow */
	STAT_TCP_RST_IGNORED,     /* an RST outside the window: the flow keeps its state */
	STAT_DROP_NOT_PUBLISHED,  /* from outside to a container, neither a published port nor a reply */
	STAT_DROP_SPOOFED,        /* an endpoint sending from an address or MAC not its own */
	STAT_DROP_PROTOCOL,       /* an endpoint sending neither IP nor ARP, or IPv6 whose headers cannot be followed */
	STAT_SOCK_BIND_REFUSED,   /* a host process binding a published port */
	STAT_CT_NOT_PROMOTED,     /* ct full: an answered flow stays in ct_new */
	STAT_DROP_SNAT_ORPHAN,    /* half a masqueraded flow without its other half */
	STAT_DROP_NOT_ALLOWED,    /* a source outside a binding's --allow-from list */
	STAT_DROP_LOCAL_ONLY,     /* XDP: from outside to a loopback-only binding */
	STAT_XDP_NO_META,         /* XDP: the driver keeps no metadata; tc translates instead */
	STAT_MAX,
};

#endif
