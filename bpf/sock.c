//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup socket hooks: local clients dialling a published port are sent
 * straight to the container at connect()/sendmsg() time, so no packet is
 * ever translated and no proxy sits in between. The application still sees
 * the address it dialled through getpeername() and recvmsg(). */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "lib/types.h"
#include "lib/maps.h"
#include "lib/nat.h"
#include "lib/network.h"
#include "lib/sock6.h"
#include "lib/events.h" /* every object declares every map */

char __license[] SEC("license") = "Dual BSD/GPL";

#define SOCK_ALLOW 1
#define SOCK_REFUSE 0
#define EADDRINUSE 98

static __always_inline void sockrev_key4(struct sockrev_key *key, __u64 cookie, __be32 addr,
					 __be16 port)
{
	key->cookie = cookie;
	key->family = PONTOON_AF_INET;
	key->port = port;
	addr_set4(key->addr, addr);
}

/* A container may be connected straight to a backend of its own network
 * when icc allows it; anything else goes through the host, where tc's
 * hairpin path handles it (and isolation does not get in the way). */
static __always_inline int may_reach_directly(const struct config *cfg, __u64 netns_cookie,
					      __be32 backend)
{
	struct netns_key member = { .cookie = netns_cookie };
	struct network_value *target;

	if (cfg && cfg->host_netns_cookie == netns_cookie)
		return 1;
	/* A namespace Pontoon does not manage, or one not on the backend's
	 * network, may have no route to the container, or a different machine
	 * at that address: it takes the packet path through tc. */
	target = network_lookup4(backend);
	if (!target || (target->flags & NETWORK_F_NO_ICC))
		return 0;
	member.network_id = target->id;
	return bpf_map_lookup_elem(&netns, &member) != NULL;
}

/* Returns 1 when the destination was a published port and now points at
 * its backend. */
static __always_inline int translate4(struct bpf_sock_addr *ctx)
{
	__be32 daddr = ctx->user_ip4;
	__be16 dport = (__be16)ctx->user_port;
	struct sockrev_value orig = {};
	struct sockrev_key rev = {};
	struct binding_value *b;
	__be16 backend_port;
	struct config *cfg;
	__u64 netns_cookie;
	__be32 backend;
	int is_local = 0;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 0;
	cfg = config_get();
	netns_cookie = bpf_get_netns_cookie(ctx);
	if (is_loopback4(daddr)) {
		/* A container's own 127.0.0.1 is its own business. */
		if (!cfg || cfg->host_netns_cookie != netns_cookie)
			return 0;
		is_local = 1;
	}
	b = binding_lookup4(ctx->protocol, daddr, dport, is_local);
	if (!b)
		return 0;
	backend = addr_get4(b->backend_addr);
	backend_port = b->backend_port;
	if (!may_reach_directly(cfg, netns_cookie, backend))
		return 0;

	sockrev_key4(&rev, bpf_get_socket_cookie(ctx), backend, backend_port);
	addr_set4(orig.addr, daddr);
	orig.port = dport;
	/* Without the reverse entry the application would see the backend's
	 * address; LRU eviction of an old socket's entry is the only failure. */
	bpf_map_update_elem(&sockrev, &rev, &orig, BPF_ANY);

	ctx->user_ip4 = backend;
	ctx->user_port = backend_port;
	return 1;
}

static __always_inline int reverse4(struct bpf_sock_addr *ctx)
{
	struct sockrev_key rev = {};
	struct sockrev_value *orig;

	sockrev_key4(&rev, bpf_get_socket_cookie(ctx), ctx->user_ip4, (__be16)ctx->user_port);
	orig = bpf_map_lookup_elem(&sockrev, &rev);
	if (!orig)
		return 0;
	ctx->user_ip4 = addr_get4(orig->addr);
	ctx->user_port = orig->port;
	return 1;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	if (translate4(ctx))
		stat_bump(STAT_SOCK_CONNECT, 0);
	return SOCK_ALLOW;
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (translate4(ctx))
		stat_bump(STAT_SOCK_SENDMSG, 0);
	return SOCK_ALLOW;
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	if (reverse4(ctx))
		stat_bump(STAT_SOCK_RECVMSG, 0);
	return SOCK_ALLOW;
}

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	if (reverse4(ctx))
		stat_bump(STAT_SOCK_GETPEERNAME, 0);
	return SOCK_ALLOW;
}

struct published_probe {
	__u8 proto;
	__u8 family; /* which of the host's addresses count */
	__be16 port;
	int found;
};

/* Whether the IPv6 binding of exactly addr:port exists. */
static __always_inline int binding_exists6(__u8 proto, const __u8 *addr, __be16 port)
{
	struct binding_key key = { .family = PONTOON_AF_INET6, .proto = proto, .port = port };

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&bindings, &key) != NULL;
}

static long probe_hostaddr(void *map, struct hostaddr_key *key, struct hostaddr_value *value,
			   struct published_probe *probe)
{
	if (key->family != probe->family)
		return 0;
	if (key->family == PONTOON_AF_INET ?
		    binding_lookup4(probe->proto, addr_get4(key->addr), probe->port, 1) != NULL :
		    binding_exists6(probe->proto, key->addr, probe->port)) {
		probe->found = 1;
		return 1; /* stop */
	}
	return 0;
}

/* Whether a bind() of addr:port would take a published port. Binding the
 * wildcard address takes the port on every address, so any binding on one
 * of the host's addresses counts. */
static __always_inline int published4(__u8 proto, __be32 addr, __be16 port)
{
	struct published_probe probe = { .proto = proto, .family = PONTOON_AF_INET, .port = port };

	if (binding_lookup4(proto, addr, port, 1))
		return 1;
	if (addr != 0)
		return 0;
	if (binding_lookup4(proto, bpf_htonl(0x7f000001), port, 1))
		return 1;
	bpf_for_each_map_elem(&hostaddrs, probe_hostaddr, &probe, 0);
	return probe.found;
}

/* A published port is the container's, as docker-proxy's listening socket
 * made it: a host process binding it fails with EADDRINUSE instead of
 * silently losing its local clients to the container. Other namespaces
 * (containers binding their own ports) are none of our business. */
SEC("cgroup/bind4")
int sock_bind4(struct bpf_sock_addr *ctx)
{
	__be16 port = (__be16)ctx->user_port;
	struct config *cfg;

	if (port == 0 || (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP))
		return SOCK_ALLOW;
	cfg = config_get();
	if (!cfg || cfg->host_netns_cookie != bpf_get_netns_cookie(ctx))
		return SOCK_ALLOW;
	if (!published4(ctx->protocol, ctx->user_ip4, port))
		return SOCK_ALLOW;
	stat_bump(STAT_SOCK_BIND_REFUSED, 0);
	bpf_set_retval(-EADDRINUSE);
	return SOCK_REFUSE;
}

/* Whether a bind() of an IPv6 address:port would take a published IPv6
 * port: its own binding, or for [::] any on ::1 or a host address. */
static __always_inline int published6(__u8 proto, const __u32 *addr, __be16 port)
{
	struct published_probe probe = { .proto = proto, .family = PONTOON_AF_INET6, .port = port };
	__u8 loopback[16] = { [15] = 1 };

	if (binding_exists6(proto, (const __u8 *)addr, port))
		return 1;
	if (addr[0] || addr[1] || addr[2] || addr[3])
		return 0;
	if (binding_exists6(proto, loopback, port))
		return 1;
	bpf_for_each_map_elem(&hostaddrs, probe_hostaddr, &probe, 0);
	return probe.found;
}

/* The same for IPv6 sockets. [::] takes the IPv4 wildcard too on a
 * dual-stack socket (docker-proxy's [::] listener made it fail as well),
 * and an IPv4-mapped address is the IPv4 address. ::1 and a host IPv6
 * address are refused when connect6 would send their clients elsewhere:
 * for a published IPv6 port ([::]:P, or the address's own), and for a
 * wildcard IPv4 binding (the IPv4 fallback below). */
SEC("cgroup/bind6")
int sock_bind6(struct bpf_sock_addr *ctx)
{
	__u32 a[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	__be16 port = (__be16)ctx->user_port;
	struct config *cfg;
	int taken;

	if (port == 0 || (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP))
		return SOCK_ALLOW;
	cfg = config_get();
	if (!cfg || cfg->host_netns_cookie != bpf_get_netns_cookie(ctx))
		return SOCK_ALLOW;
	if (!a[0] && !a[1] && !a[2] && !a[3])
		taken = published4(ctx->protocol, 0, port) || published6(ctx->protocol, a, port);
	else if (sock_is_mapped6(a))
		taken = published4(ctx->protocol, a[3], port);
	else if (sock_is_loopback6(a) || sock_hostaddr_has6(a))
		taken = sock_binding_lookup6(ctx->protocol, a, port) ||
			binding_lookup4(ctx->protocol, 0, port, 1);
	else
		return SOCK_ALLOW;
	if (!taken)
		return SOCK_ALLOW;
	stat_bump(STAT_SOCK_BIND_REFUSED, 0);
	bpf_set_retval(-EADDRINUSE);
	return SOCK_REFUSE;
}

/* IPv6 sockets. A destination that is ::1 or one of the host's IPv6
 * addresses reaches the container's IPv6 address when the port has an IPv6
 * binding (the address's own, or [::]): the connection stays IPv6, and
 * the container sees the client's own source (::1, or the host address),
 * as an IPv4 client of 127.0.0.1:P is seen.
 *
 * Without one, the IPv4 backend of a published port is the fallback ("v6
 * host -> v4 container"): [::1]:P or a host IPv6 address:P for a wildcard
 * binding, or ::ffff:a.b.c.d:P from a dual-stack socket (as Java and Node
 * dial) for the IPv4 binding, is pointed at the IPv4-mapped ::ffff:backend.
 * The kernel then makes the socket's connection IPv4 (tcp_v6_connect,
 * ip6_datagram_connect do so for any mapped destination), and the backend
 * sees an IPv4 client: 127.0.0.1 for loopback, else the host's IPv4 source
 * for the route; the client's IPv6 address is not carried (Cilium's socket
 * level family translation works so too). Limits: an IPV6_V6ONLY socket
 * cannot reach an IPv4 backend (connect fails, ENETUNREACH); unconnected
 * UDP to [::1]:P is left alone in that case, as the kernel refuses a mapped
 * rewrite in sendmsg6 (ENOTSUPP), while one to ::ffff:a.b.c.d:P takes the
 * IPv4 path and sock_sendmsg4. A 127.0.0.1:P binding stays IPv4 loopback's
 * alone, as Docker's does: [::1]:P reaches wildcard bindings only.
 *
 * getpeername6 and recvmsg6 show the application what it dialled. */

static __always_inline void sockrev_key6(struct sockrev_key *key, __u64 cookie, const __u32 *addr,
					 __be16 port)
{
	key->cookie = cookie;
	key->family = PONTOON_AF_INET6;
	key->port = port;
	__builtin_memcpy(key->addr, addr, 16);
}

/* Points ctx at backend:port and remembers what it named. */
static __always_inline void redirect6(struct bpf_sock_addr *ctx, const __u32 *dst, __be16 dport,
				      const __u32 *backend, __be16 backend_port)
{
	struct sockrev_value orig = {};
	struct sockrev_key rev = {};

	sockrev_key6(&rev, bpf_get_socket_cookie(ctx), backend, backend_port);
	__builtin_memcpy(orig.addr, dst, 16);
	orig.port = dport;
	/* Without the reverse entry the application would see the backend's
	 * address; LRU eviction of an old socket's entry is the only failure. */
	bpf_map_update_elem(&sockrev, &rev, &orig, BPF_ANY);

	ctx->user_ip6[0] = backend[0];
	ctx->user_ip6[1] = backend[1];
	ctx->user_ip6[2] = backend[2];
	ctx->user_ip6[3] = backend[3];
	ctx->user_port = backend_port;
}

/* The native IPv6 path. Returns 1 when dst was a published IPv6 port and
 * now points at its backend, -1 when it was one the caller must leave to
 * the packet path, 0 when it is none. */
static __always_inline int translate6_native(struct bpf_sock_addr *ctx, const __u32 *dst,
					     const struct config *cfg, __u64 netns_cookie)
{
	__be16 dport = (__be16)ctx->user_port;
	struct binding_value *b;
	__u32 backend[4];

	b = sock_binding_lookup6(ctx->protocol, dst, dport);
	if (!b)
		return 0;
	if (!sock_may_reach_directly6(cfg, netns_cookie, b->backend_addr))
		return -1;
	__builtin_memcpy(backend, b->backend_addr, 16);
	redirect6(ctx, dst, dport, backend, b->backend_port);
	return 1;
}

/* ::1, or one of the host's IPv6 addresses; for ::1, only from the host's
 * own namespace: a container's ::1 is its own business. */
static __always_inline int host_dest6(const __u32 *dst, const struct config *cfg, __u64 netns_cookie)
{
	if (sock_is_loopback6(dst))
		return cfg && cfg->host_netns_cookie == netns_cookie;
	return sock_hostaddr_has6(dst);
}

static __always_inline int translate6(struct bpf_sock_addr *ctx)
{
	__u32 dst[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	__be16 dport = (__be16)ctx->user_port;
	struct sockrev_value orig = {};
	struct sockrev_key rev = {};
	struct binding_value *b;
	__u32 backend_ip6[4];
	int mapped = 0, native;
	__be16 backend_port;
	struct config *cfg;
	__u64 netns_cookie;
	__be32 lookup = 0;
	__be32 backend;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 0;
	cfg = config_get();
	netns_cookie = bpf_get_netns_cookie(ctx);
	if (sock_is_mapped6(dst)) {
		mapped = 1;
		lookup = dst[3];
		/* A container's own 127.0.0.1 is its own business. */
		if (is_loopback4(lookup) && (!cfg || cfg->host_netns_cookie != netns_cookie))
			return 0;
	} else {
		if (!host_dest6(dst, cfg, netns_cookie))
			return 0;
		native = translate6_native(ctx, dst, cfg, netns_cookie);
		if (native)
			return native > 0;
	}
	/* A mapped address names the IPv4 binding it maps (loopback ones
	 * included); ::1 and the host's IPv6 addresses only the wildcard one. */
	b = binding_lookup4(ctx->protocol, lookup, dport, !mapped || is_loopback4(lookup));
	if (!b)
		return 0;
	backend = addr_get4(b->backend_addr);
	backend_port = b->backend_port;
	if (!may_reach_directly(cfg, netns_cookie, backend))
		return 0;

	backend_ip6[0] = 0;
	backend_ip6[1] = 0;
	backend_ip6[2] = bpf_htonl(SOCK_MAPPED_PREFIX);
	backend_ip6[3] = backend;
	if (!mapped) {
		redirect6(ctx, dst, dport, backend_ip6, backend_port);
		return 1;
	}
	/* The reverse hooks see the backend mapped. A mapped destination is
	 * remembered as IPv4, as sock_sendmsg4 remembers one sent from the
	 * same dual-stack socket. */
	sockrev_key4(&rev, bpf_get_socket_cookie(ctx), backend, backend_port);
	addr_set4(orig.addr, dst[3]);
	orig.port = dport;
	bpf_map_update_elem(&sockrev, &rev, &orig, BPF_ANY);

	ctx->user_ip6[0] = backend_ip6[0];
	ctx->user_ip6[1] = backend_ip6[1];
	ctx->user_ip6[2] = backend_ip6[2];
	ctx->user_ip6[3] = backend_ip6[3];
	ctx->user_port = backend_port;
	return 1;
}

/* A source the connect6/sendmsg6 rewrite put there: a native IPv6
 * backend, or a mapped IPv4 one remembered either way. */
static __always_inline int reverse6(struct bpf_sock_addr *ctx)
{
	__u32 src[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	__be16 port = (__be16)ctx->user_port;
	struct sockrev_key rev = {};
	struct sockrev_value *orig;
	__u64 cookie;
	__u32 a[4];

	cookie = bpf_get_socket_cookie(ctx);
	sockrev_key6(&rev, cookie, src, port);
	orig = bpf_map_lookup_elem(&sockrev, &rev);
	if (orig) {
		__builtin_memcpy(a, orig->addr, 16);
	} else {
		if (!sock_is_mapped6(src))
			return 0;
		__builtin_memset(&rev, 0, sizeof(rev));
		sockrev_key4(&rev, cookie, src[3], port);
		orig = bpf_map_lookup_elem(&sockrev, &rev);
		if (!orig)
			return 0;
		a[0] = 0;
		a[1] = 0;
		a[2] = bpf_htonl(SOCK_MAPPED_PREFIX);
		a[3] = addr_get4(orig->addr);
	}
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
	ctx->user_port = orig->port;
	return 1;
}

SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx)
{
	if (translate6(ctx))
		stat_bump(STAT_SOCK_CONNECT, 0);
	return SOCK_ALLOW;
}

/* Unconnected UDP: only the native IPv6 path, as the kernel refuses a
 * mapped destination here (a mapped one the application gives takes the
 * IPv4 path and sock_sendmsg4 before this hook). */
SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	__u32 dst[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	struct config *cfg;
	__u64 netns_cookie;

	if (ctx->protocol != IPPROTO_UDP || sock_is_mapped6(dst))
		return SOCK_ALLOW;
	cfg = config_get();
	netns_cookie = bpf_get_netns_cookie(ctx);
	if (host_dest6(dst, cfg, netns_cookie) && translate6_native(ctx, dst, cfg, netns_cookie) > 0)
		stat_bump(STAT_SOCK_SENDMSG, 0);
	return SOCK_ALLOW;
}

SEC("cgroup/recvmsg6")
int sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	if (reverse6(ctx))
		stat_bump(STAT_SOCK_RECVMSG, 0);
	return SOCK_ALLOW;
}

SEC("cgroup/getpeername6")
int sock_getpeername6(struct bpf_sock_addr *ctx)
{
	if (reverse6(ctx))
		stat_bump(STAT_SOCK_GETPEERNAME, 0);
	return SOCK_ALLOW;
}
