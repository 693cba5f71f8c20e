package main

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// iptablesDP is Docker's bridge driver without the userland proxy
// ("userland-proxy": false): the DOCKER chains, addrtype LOCAL jumps from
// PREROUTING and OUTPUT, DNAT per port, MASQUERADE, FORWARD policy DROP,
// and route_localnet so 127.0.0.1 can be DNATed out of the host. The rules
// are the ones libnetwork (docker.io 20.10) writes in hairpin mode.
type iptablesDP struct {
	w        *world
	iptables string // iptables, iptables-nft or iptables-legacy
}

func (d *iptablesDP) name() string                    { return "iptables" }
func (d *iptablesDP) world() *world                   { return d.w }
func (d *iptablesDP) clientCgroup(clientKind) *cgroup { return nil }
func (d *iptablesDP) target(c clientKind, s service) netip.AddrPort {
	return published(c, s)
}
func (d *iptablesDP) maxN() int { return 1 << 30 }

// clientGap: with the userland proxy off, Docker's ip6tables rules serve
// no [::1] client. IPv6 has no route_localnet: the kernel never routes
// ::1 off the host, so no DNAT can take it to a container, and dockerd
// keeps docker-proxy for it.
func (d *iptablesDP) clientGap(c clientKind) string {
	if c == viaLoopback6 {
		return "IPv6 has no route_localnet, so ip6tables cannot DNAT [::1] to a container (dockerd keeps docker-proxy for it)"
	}
	return ""
}

// ruleFamily is what differs between the iptables and ip6tables rules.
type ruleFamily struct {
	subnet    string
	container netip.Addr
	// any is the "-d" of a wildcard DNAT rule.
	any string
}

var (
	rules4 = ruleFamily{subnet: subnet, container: containerIP, any: "0/0"}
	rules6 = ruleFamily{subnet: subnet6, container: containerIP6, any: "::/0"}
)

// ip6tables is the ip6tables binary of the same flavour (nft, legacy).
func (d *iptablesDP) ip6tables() string {
	return strings.Replace(d.iptables, "iptables", "ip6tables", 1)
}
func (d *iptablesDP) opReps(runs int) int {
	return runs
}

func (d *iptablesDP) restoreBin() string { return d.iptables + "-restore" }

// setup writes the IPv4 rules and, as dockerd with ip6tables on does
// for a dual-stack network, the same in ip6tables to the container's
// IPv6 address. Rule scaling replaces the IPv4 rules alone.
func (d *iptablesDP) setup(ctx context.Context, _ *cleanups) error {
	if err := sysctl(ctx, d.w.host, "net.ipv4.conf.all.route_localnet", "1"); err != nil {
		return err
	}
	if err := d.restoreFamily(ctx, d.ip6tables()+"-restore", rules6, services); err != nil {
		return err
	}
	return d.restore(ctx, services)
}

// restore replaces the nat and filter tables with the base chains and
// the given ports, in one transaction.
func (d *iptablesDP) restore(ctx context.Context, ports []service) error {
	return d.restoreFamily(ctx, d.restoreBin(), rules4, ports)
}

func (d *iptablesDP) restoreFamily(ctx context.Context, bin string, fam ruleFamily, ports []service) error {
	var b bytes.Buffer
	writeRuleset(&b, fam, ports)
	argv := nsenterArgv(d.w.host, bin, "--wait")
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = childAttr()
	cmd.Stdin = &b
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s (%d ports): %w: %s", bin, len(ports), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// writeRuleset writes iptables-restore input: libnetwork's chains for one
// bridge network, then each port's three rules in publishing order.
func writeRuleset(b *bytes.Buffer, fam ruleFamily, ports []service) {
	br := bridgeName
	fmt.Fprintf(b, "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n")
	fmt.Fprintf(b, "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n")
	// Hairpin mode: no "! -d 127.0.0.0/8", loopback is DNATed too.
	fmt.Fprintf(b, "-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER\n")
	fmt.Fprintf(b, "-A POSTROUTING -s %s ! -o %s -j MASQUERADE\n", fam.subnet, br)
	fmt.Fprintf(b, "-A POSTROUTING -m addrtype --src-type LOCAL -o %s -j MASQUERADE\n", br)
	for _, p := range ports {
		fmt.Fprintf(b, "-A POSTROUTING %s\n", strings.Join(masqRule(fam, p), " "))
	}
	for _, p := range ports {
		fmt.Fprintf(b, "-A DOCKER %s\n", strings.Join(dnatRule(fam, p), " "))
	}
	fmt.Fprintf(b, "COMMIT\n")
	fmt.Fprintf(b, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	fmt.Fprintf(b, ":DOCKER - [0:0]\n:DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n")
	fmt.Fprintf(b, "-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n")
	fmt.Fprintf(b, "-A FORWARD -o %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n", br)
	fmt.Fprintf(b, "-A FORWARD -o %s -j DOCKER\n", br)
	fmt.Fprintf(b, "-A FORWARD -i %s ! -o %s -j ACCEPT\n", br, br)
	fmt.Fprintf(b, "-A FORWARD -i %s -o %s -j ACCEPT\n", br, br)
	fmt.Fprintf(b, "-A DOCKER-ISOLATION-STAGE-1 -i %s ! -o %s -j DOCKER-ISOLATION-STAGE-2\n", br, br)
	fmt.Fprintf(b, "-A DOCKER-ISOLATION-STAGE-1 -j RETURN\n")
	fmt.Fprintf(b, "-A DOCKER-ISOLATION-STAGE-2 -o %s -j DROP\n", br)
	fmt.Fprintf(b, "-A DOCKER-ISOLATION-STAGE-2 -j RETURN\n")
	fmt.Fprintf(b, "-A DOCKER-USER -j RETURN\n")
	for _, p := range ports {
		fmt.Fprintf(b, "-A DOCKER %s\n", strings.Join(acceptRule(fam, p), " "))
	}
	fmt.Fprintf(b, "COMMIT\n")
}

func protoOf(s service) string {
	if s.udp {
		return "udp"
	}
	return "tcp"
}

// The three rules libnetwork writes per published port (Forward in
// iptables.go), in its argument order.
func dnatRule(fam ruleFamily, s service) []string {
	daddr := fam.any
	if !s.wildcard() {
		daddr = netip.PrefixFrom(s.hostAddr, s.hostAddr.BitLen()).String()
	}
	return []string{"-p", protoOf(s), "-d", daddr, "--dport", strconv.Itoa(int(s.hostPort)),
		"-j", "DNAT", "--to-destination", netip.AddrPortFrom(fam.container, s.containerPort).String()}
}

func acceptRule(fam ruleFamily, s service) []string {
	return []string{"!", "-i", bridgeName, "-o", bridgeName, "-p", protoOf(s), "-d", fam.container.String(),
		"--dport", strconv.Itoa(int(s.containerPort)), "-j", "ACCEPT"}
}

func masqRule(fam ruleFamily, s service) []string {
	return []string{"-p", protoOf(s), "-s", fam.container.String(), "-d", fam.container.String(),
		"--dport", strconv.Itoa(int(s.containerPort)), "-j", "MASQUERADE"}
}

// install times one iptables-restore of all n ports: the fastest way
// there is (dockerd runs six iptables commands per port instead). Memory
// is the kernel memory the rules added, system-wide, so it is noisy below
// about a megabyte: other processes allocate meanwhile.
func (d *iptablesDP) install(ctx context.Context, ports []service) (time.Duration, memUse, error) {
	if err := d.restore(ctx, nil); err != nil {
		return 0, memUse{}, err
	}
	before, err := kernelMemory()
	if err != nil {
		return 0, memUse{}, err
	}
	start := time.Now()
	if err := d.restore(ctx, ports); err != nil {
		return 0, memUse{}, err
	}
	took := time.Since(start)
	after, err := kernelMemory()
	if err != nil {
		return 0, memUse{}, err
	}
	return took, memUse{Bytes: after - before, What: "kernel memory added (slab+percpu+vmalloc)"}, nil
}

// addOne does what dockerd does to publish a port: for each of the three
// rules, "iptables -C" and, as it is missing, "iptables -A"; six
// processes, each of which reads and writes the whole table.
func (d *iptablesDP) addOne(ctx context.Context) (time.Duration, error) {
	return d.program(ctx, "-A")
}

func (d *iptablesDP) deleteOne(ctx context.Context) (time.Duration, error) {
	return d.program(ctx, "-D")
}

func (d *iptablesDP) program(ctx context.Context, action string) (time.Duration, error) {
	s := service{name: "extra", containerPort: extraPort, hostPort: extraPort}
	rules := []struct {
		table, chain string
		args         []string
	}{
		{"nat", "DOCKER", dnatRule(rules4, s)},
		{"filter", "DOCKER", acceptRule(rules4, s)},
		{"nat", "POSTROUTING", masqRule(rules4, s)},
	}
	start := time.Now()
	for _, r := range rules {
		check := append([]string{"--wait", "-t", r.table, "-C", r.chain}, r.args...)
		exists := inNetns(ctx, d.w.host, d.iptables, check...) == nil
		if exists == (action == "-A") {
			return 0, fmt.Errorf("%s %s: rule already in the wanted state: %v", d.iptables, action, r.args)
		}
		do := append([]string{"--wait", "-t", r.table, action, r.chain}, r.args...)
		if err := inNetns(ctx, d.w.host, d.iptables, do...); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}
