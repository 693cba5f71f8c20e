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
	__be16 port;
	int found;
};

static long probe_hostaddr(void *map, struct hostaddr_key *key, struct hostaddr_value *value,
			   struct published_probe *probe)
{
	if (key->family == PONTOON_AF_INET &&
	    binding_lookup4(probe->proto, addr_get4(key->addr), probe->port, 1)) {
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
	struct published_probe probe = { .proto = proto, .port = port };

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

/* The same for IPv6 sockets: [::] takes the IPv4 wildcard too on a
 * dual-stack socket (docker-proxy's [::] listener made it fail as well),
 * and an IPv4-mapped address is the IPv4 address. */
SEC("cgroup/bind6")
int sock_bind6(struct bpf_sock_addr *ctx)
{
	__be16 port = (__be16)ctx->user_port;
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2];
	__u32 w3 = ctx->user_ip6[3];
	struct config *cfg;
	__be32 v4;

	if (port == 0 || (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP))
		return SOCK_ALLOW;
	if (w0 || w1)
		return SOCK_ALLOW;
	if (w2 == 0 && w3 == 0)
		v4 = 0;
	else if (w2 == bpf_htonl(0xffff))
		v4 = w3;
	else
		return SOCK_ALLOW;
	cfg = config_get();
	if (!cfg || cfg->host_netns_cookie != bpf_get_netns_cookie(ctx))
		return SOCK_ALLOW;
	if (!published4(ctx->protocol, v4, port))
		return SOCK_ALLOW;
	stat_bump(STAT_SOCK_BIND_REFUSED, 0);
	bpf_set_retval(-EADDRINUSE);
	return SOCK_REFUSE;
}
