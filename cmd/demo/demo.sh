#!/usr/bin/env bash
# Pontoon in a throwaway namespace world: an agent, a network, a container
# namespace serving HTTP, a published port fetched from the host and from an
# outside namespace, the BPF map that does it, then teardown.
#
#   outside (198.51.100.2) --veth-- host (198.51.100.1) --bridge-- ctr (HTTP :80)
#
# "host" is a network namespace standing in for the machine: nothing here
# touches the real host's interfaces, routes, firewall or root cgroup.
# Usage: cmd/demo/demo.sh path/to/pontoon   (as root)
set -euo pipefail

PONTOON=$(readlink -f "${1:?usage: $0 path/to/pontoon}")
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates namespaces and loads BPF)" >&2; exit 1; }
for tool in ip nsenter curl bpftool; do
	command -v "$tool" >/dev/null || { echo "demo: needs $tool: run 'make deps'" >&2; exit 1; }
done

ID=$$
HOST=pdemo-host-$ID
OUT=pdemo-out-$ID
CTR=pdemo-ctr-$ID
UPLINK=pdemo-up$((ID % 10000))
HOST_IP=198.51.100.1
OUT_IP=198.51.100.2
WORK=$(mktemp -d /tmp/pontoon-demo.XXXXXX)
SOCK=$WORK/pontoon.sock
PINS=/sys/fs/bpf/pontoon-demo-$ID
CGROOT=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
[ -n "$CGROOT" ] || { echo "demo: no cgroup v2 hierarchy is mounted" >&2; exit 1; }
CGROUP=$CGROOT/pontoon-demo-$ID
AGENT_PID=
HTTPD_PID=

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
pt() { printf '$ pontoon %s\n' "$*"; "$PONTOON" --socket "$SOCK" "$@"; }
in_host() { nsenter --net="/run/netns/$HOST" -- "$@"; }
# Host processes run in the demo's cgroup, where the socket hooks are.
in_host_cgroup() { nsenter --net="/run/netns/$HOST" -- sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CGROUP" "$@"; }

teardown() {
	status=$?
	set +e
	step "teardown"
	[ -n "$HTTPD_PID" ] && kill "$HTTPD_PID" 2>/dev/null && wait "$HTTPD_PID" 2>/dev/null
	if [ -n "$AGENT_PID" ]; then
		kill -TERM "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
	fi
	if ip netns list | grep -qw "$HOST"; then
		in_host "$PONTOON" cleanup --state-dir "$WORK/state" --bpffs "$PINS" --purge || true
	fi
	for ns in "$CTR" "$OUT" "$HOST"; do ip netns del "$ns" 2>/dev/null || true; done
	[ -d "$CGROUP" ] && rmdir "$CGROUP" 2>/dev/null
	rm -rf "$WORK" "$PINS"
	if [ "$status" = 0 ]; then
		echo "demo: everything worked and is gone again"
	else
		echo "demo: FAILED (exit $status); see the output above" >&2
	fi
	exit "$status"
}
trap teardown EXIT

step "build a throwaway world: host, outside and container namespaces"
run ip netns add "$HOST"
run ip netns add "$OUT"
run ip netns add "$CTR"
run ip -n "$HOST" link set lo up
run ip -n "$OUT" link set lo up
run ip -n "$HOST" link add "$UPLINK" type veth peer name eth0 netns "$OUT"
run ip -n "$HOST" addr add "$HOST_IP/24" dev "$UPLINK"
run ip -n "$OUT" addr add "$OUT_IP/24" dev eth0
run ip -n "$HOST" link set "$UPLINK" up
run ip -n "$OUT" link set eth0 up
run mkdir "$CGROUP"

step "start the agent in the host namespace"
mkdir -p "$WORK/state"
printf '$ pontoon agent --state-dir %s --socket %s --bpffs %s --cgroup %s --uplink %s\n' \
	"$WORK/state" "$SOCK" "$PINS" "$CGROUP" "$UPLINK"
# nsenter execs the agent, so $! is the agent itself.
nsenter --net="/run/netns/$HOST" -- "$PONTOON" agent --state-dir "$WORK/state" --socket "$SOCK" \
	--bpffs "$PINS" --cgroup "$CGROUP" --uplink "$UPLINK" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 100); do
	"$PONTOON" --socket "$SOCK" status >/dev/null 2>&1 && break
	kill -0 "$AGENT_PID" 2>/dev/null || { cat "$WORK/agent.log" >&2; exit 1; }
	sleep 0.1
done
pt status

step "create a network and attach the container namespace"
pt network create demo --subnet 10.123.0.0/24
pt endpoint attach demo web --netns "/run/netns/$CTR"
run ip -n "$CTR" -br addr show eth0
run ip -n "$CTR" route

step "serve HTTP inside the container namespace"
mkdir -p "$WORK/www"
echo "hello from the container namespace $CTR" >"$WORK/www/index.html"
if busybox --list 2>/dev/null | grep -qx httpd; then
	ip netns exec "$CTR" busybox httpd -f -p 80 -h "$WORK/www" >/dev/null 2>&1 &
else
	ip netns exec "$CTR" python3 -m http.server 80 --bind 0.0.0.0 --directory "$WORK/www" >/dev/null 2>&1 &
fi
HTTPD_PID=$!
for _ in $(seq 50); do
	ip netns exec "$CTR" curl -fsS -o /dev/null http://127.0.0.1/ 2>/dev/null && break
	sleep 0.1
done

step "publish container port 80 on host port 8080 (and a dynamic port)"
pt port publish web 8080:80 80
pt port ls

fetch() {
	local where=$1
	shift
	printf '$ %s\n' "$*"
	if ! body=$("$@"); then
		echo "demo: fetch $where failed" >&2
		exit 1
	fi
	echo "$body"
}

step "fetch it from the host, through loopback and the host address"
fetch "host 127.0.0.1" in_host_cgroup curl -fsS --max-time 5 http://127.0.0.1:8080/
fetch "host $HOST_IP" in_host_cgroup curl -fsS --max-time 5 "http://$HOST_IP:8080/"

step "fetch it from the outside namespace"
fetch "outside" ip netns exec "$OUT" curl -fsS --max-time 5 "http://$HOST_IP:8080/"

step "no proxy listens and no firewall rule exists in the host namespace"
run in_host ss -Htln
if command -v nft >/dev/null; then run in_host nft list ruleset; fi
echo "(empty: the translation is a BPF map entry)"

step "the bindings map, as bpftool shows it"
run bpftool map dump pinned "$PINS/bindings"

step "the agent's counters"
pt status | grep -E 'counter|bindings|tc attach'
