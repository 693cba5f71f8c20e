package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pontoon-net/pontoon/control"
	"github.com/pontoon-net/pontoon/ipam"
	"github.com/pontoon-net/pontoon/loader"
)

func newAgent(o *opts) *cobra.Command {
	cfg := control.Config{}
	var snatPorts, xdp string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the control plane in the foreground (systemd runs it)",
		Long: `Run the control plane in the foreground. Its network namespace is "the host".
It adopts the pinned datapath, reconciles the kernel with the state file and
only then reports ready. Stopping it (SIGTERM, or kill -9) leaves the datapath
running: published ports keep working while no agent runs. One agent per
network namespace, socket, state directory, pin directory and cgroup: it
refuses to start, before it reads or changes anything, while another agent
holds any of them.

PONTOON_CPUPROFILE=FILE writes a Go CPU profile of the agent to FILE, from
start to a clean stop (SIGTERM), for 'go tool pprof'.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Socket = o.socket
			mode, err := loader.ParseXDPMode(xdp)
			if err != nil {
				return fmt.Errorf("invalid --xdp: %w", err)
			}
			cfg.XDP = mode
			if snatPorts != "" {
				r, err := ipam.ParsePortRange(snatPorts)
				if err != nil || r.First == r.Last {
					return fmt.Errorf("invalid --snat-ports %q: give FIRST-LAST, such as 1024-32767", snatPorts)
				}
				cfg.SNATPorts = r
			}
			if path := os.Getenv("PONTOON_CPUPROFILE"); path != "" {
				stopProfile, err := startCPUProfile(path)
				if err != nil {
					return err
				}
				defer stopProfile()
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return control.WithDiskAdvice(control.Run(ctx, cfg))
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.StateDir, "state-dir", control.DefaultStateDir, "directory of the state file")
	f.StringVar(&cfg.PinDir, "bpffs", loader.DefaultPinDir, "bpffs directory for pinned maps and links")
	f.StringVar(&cfg.Cgroup, "cgroup", "", "cgroup v2 directory for the socket hooks (default: the detected cgroup v2 root)")
	f.StringArrayVar(&cfg.Uplinks, "uplink", nil, "uplink interface, repeatable (default: every interface but loopback, Pontoon's bridges and veths, and ports of bridges and bonds)")
	f.BoolVar(&cfg.ForceLegacyTC, "legacy-tc", false, "attach uplinks with clsact + cls_bpf even where TCX exists")
	f.StringVar(&xdp, "xdp", string(loader.XDPOff), "XDP on uplinks, before tc: auto (native where the driver has it, else generic), native, generic or off; native XDP on a veth takes GSO from its peer, generic copies every packet without headroom")
	f.StringVar(&snatPorts, "snat-ports", "", "source ports masqueraded flows may take, FIRST-LAST; refused when it overlaps net.ipv4.ip_local_port_range (less ip_local_reserved_ports) or the published-port range (default: the longest run of 1024-65535 outside those and the reserved ports)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics, such as 127.0.0.1:9669 (default: off; loopback only unless --metrics-allow-remote)")
	f.BoolVar(&cfg.MetricsAllowRemote, "metrics-allow-remote", false, "allow --metrics-addr on a non-loopback address: the metrics name published ports and flow counts")
	f.StringVar(&cfg.DockerPlugin, "docker-plugin", "", "serve Docker's network and IPAM plugin under this name at "+control.DockerPluginDir+"/NAME.sock, for 'docker network create -d NAME --ipam-driver NAME' (--docker-plugin alone: "+control.DefaultDockerPlugin+")")
	f.Lookup("docker-plugin").NoOptDefVal = control.DefaultDockerPlugin
	f.BoolVar(&cfg.StackForwarding, "stack-forwarding", false, "leave translated packets to the kernel's forward path (and so to netfilter's FORWARD chain) instead of forwarding them in BPF")
	return cmd
}

// startCPUProfile profiles the agent into path until the returned func
// runs: the agent's own side of a request, which the benchmarks through
// its socket cannot see otherwise.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("PONTOON_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("PONTOON_CPUPROFILE: start profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
