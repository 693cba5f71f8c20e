// Command pontoon-cni is Pontoon's CNI plugin (type "pontoon-cni"): a thin
// adapter that turns CNI calls into the agent's operations over its socket
// and owns no state of its own.
//
// Main-plugin mode (no prevResult): the agent makes the veth pair, takes
// the address from its IPAM (creating the network on first use) and
// publishes the portMappings capability's ports.
//
// Chained mode (after bridge + host-local, in place of portmap): the
// container already sits on a bridge Pontoon did not make. The agent adopts
// that bridge as a network (its subnet and gateway from prevResult), so its
// bridge program, isolation and masquerade apply there, and records the
// bridge plugin's veth as an adopted endpoint (its program attached, never
// deleted by Pontoon); the ports are then published to the prevResult
// address, and prevResult is passed through untouched.
package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/pontoon-net/pontoon/control"
)

// owner marks the agent's endpoint records this plugin made.
const owner = "cni"

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus,
	}, version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "pontoon-cni: Pontoon's BPF bridge networking and published ports")
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	specs, _ := conf.specs()
	c := control.NewClient(conf.Socket)
	name := endpointName(args.ContainerID, args.IfName, conf.Network)
	req := control.EndpointAttach{
		Network: conf.Network, Name: name, Netns: args.Netns, IfName: args.IfName,
		Owner: owner, ContainerID: args.ContainerID,
	}
	var prev *current.Result
	if conf.PrevResult != nil {
		if prev, err = current.NewResultFromResult(conf.PrevResult); err != nil {
			return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("read prevResult: %v", err), "")
		}
		addr, gw, err := containerAddress(prev, args.IfName)
		if err != nil {
			return err
		}
		bridge, err := prevBridge(prev)
		if err != nil {
			return err
		}
		create := control.NetworkCreate{Name: conf.Network, Subnet: addr.Masked().String(), Gateway: gw.String(), Bridge: bridge}
		if err := ensureNetwork(c, create); err != nil {
			return err
		}
		req.Adopt, req.IP = true, addr.Addr().String()
	} else if err := ensureNetwork(c, control.NetworkCreate{Name: conf.Network, Subnet: conf.Subnet}); err != nil {
		return err
	}

	ep, err := c.Attach(req)
	if err != nil {
		return agentError(fmt.Sprintf("attach container %s (%s) to network %s as endpoint %s", args.ContainerID, args.IfName, conf.Network, name), err)
	}
	if len(specs) > 0 {
		if _, err := c.Publish(control.PublishRequest{Endpoint: name, Specs: specs}); err != nil {
			// All or nothing: the attachment goes with the refused ports.
			if derr := c.Detach(name); derr != nil {
				fmt.Fprintf(os.Stderr, "pontoon-cni: detach %s after the failed publish: %v\n", name, derr)
			}
			return agentError(fmt.Sprintf("publish %v to endpoint %s", specs, name), err)
		}
	}
	if prev != nil {
		return types.PrintResult(prev, conf.CNIVersion)
	}
	return types.PrintResult(mainResult(ep, args.Netns), conf.CNIVersion)
}

// ensureNetwork creates the network unless it exists. Parallel ADDs race
// to create it: the loser's conflict is fine when the network is there
// now. In chained mode an existing network must be on the same bridge.
func ensureNetwork(c *control.Client, create control.NetworkCreate) error {
	n, err := c.Network(create.Name)
	if notFound(err) {
		n, err = c.CreateNetwork(create)
		if conflict(err) {
			n, err = c.Network(create.Name)
		}
	}
	if err != nil {
		return agentError("create network "+create.Name, err)
	}
	if n != nil && create.Bridge != "" && n.Bridge != create.Bridge {
		return invalidConf(fmt.Sprintf("network %s is on bridge %s, but the container's bridge is %s: give this conflist its own \"network\"", create.Name, n.Bridge, create.Bridge))
	}
	return nil
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	name := endpointName(args.ContainerID, args.IfName, conf.Network)
	err = control.NewClient(conf.Socket).Detach(name)
	switch {
	case err == nil, notFound(err):
		return nil
	case control.Unreachable(err):
		// DEL must succeed with the agent gone: its next start detaches
		// endpoints whose namespace is gone, and GC catches the rest.
		fmt.Fprintf(os.Stderr, "pontoon-cni: DEL of %s left to the agent's next start: %v\n", name, err)
		return nil
	}
	return agentError("detach endpoint "+name, err)
}

func cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	c := control.NewClient(conf.Socket)
	eps, err := c.Endpoints(conf.Network)
	if notFound(err) {
		return nil
	}
	if err != nil {
		return agentError("list the endpoints of network "+conf.Network, err)
	}
	valid := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[endpointName(a.ContainerID, a.IfName, conf.Network)] = true
	}
	for _, ep := range eps {
		if ep.Owner != owner || valid[ep.Name] {
			continue
		}
		if err := c.Detach(ep.Name); err != nil && !notFound(err) {
			return agentError("detach stale endpoint "+ep.Name, err)
		}
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	s, err := control.NewClient(conf.Socket).Status()
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, err.Error(), "ask the agent for its status")
	}
	if s.Health != "ok" {
		return types.NewError(types.ErrPluginNotAvailable, "the agent is "+s.Health, "ask the agent for its status")
	}
	return nil
}
