package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/pontoon-net/pontoon/control"
)

// netConf is one entry of a conflist:
//
//	{"type": "pontoon-cni", "network": "NAME", "subnet": "CIDR", "socket": "PATH",
//	 "capabilities": {"portMappings": true}}
//
// and what the runtime adds to it (runtimeConfig, prevResult).
type netConf struct {
	types.PluginConf
	// Network is the agent's network; the conflist's name by default.
	Network string `json:"network,omitempty"`
	// Subnet is given to the network when the plugin creates it (main
	// mode only: chained, the subnet is the IPAM plugin's).
	Subnet string `json:"subnet,omitempty"`
	// Socket is the agent's; control.DefaultSocket by default.
	Socket        string `json:"socket,omitempty"`
	RuntimeConfig struct {
		PortMappings []portMapping `json:"portMappings,omitempty"`
	} `json:"runtimeConfig"`
}

// portMapping is one entry of the portMappings capability. Runtimes send
// ranges as one entry per port and always choose the host port.
type portMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// parseConf reads the plugin's stdin; a bad one is a CNI "invalid network
// configuration" error saying what is wrong.
func parseConf(stdin []byte) (*netConf, error) {
	conf := &netConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("read the network configuration: %v", err), "")
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("read prevResult: %v", err), "")
		}
	}
	if conf.Network == "" {
		conf.Network = conf.Name
	}
	if conf.Socket == "" {
		conf.Socket = control.DefaultSocket
	}
	if conf.Network == "" {
		return nil, invalidConf("no network name: set \"network\" (or the conflist's \"name\") to the Pontoon network to attach to")
	}
	if conf.Subnet != "" {
		if _, err := netip.ParsePrefix(conf.Subnet); err != nil {
			return nil, invalidConf(fmt.Sprintf("subnet %q: give a CIDR such as 10.88.0.0/16, or leave it out for a free one", conf.Subnet))
		}
	}
	if _, err := conf.specs(); err != nil {
		return nil, err
	}
	return conf, nil
}

func invalidConf(msg string) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
}

// specs turns the port mappings into the agent's (Docker's -p) grammar:
// [hostIP:]hostPort:containerPort/proto.
func (c *netConf) specs() ([]string, error) {
	var out []string
	for _, m := range c.RuntimeConfig.PortMappings {
		if m.HostPort < 1 || m.HostPort > 65535 || m.ContainerPort < 1 || m.ContainerPort > 65535 {
			return nil, invalidConf(fmt.Sprintf("port mapping %d:%d: ports are 1-65535, and the runtime chooses the host port", m.HostPort, m.ContainerPort))
		}
		proto := strings.ToLower(m.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		spec := fmt.Sprintf("%d:%d/%s", m.HostPort, m.ContainerPort, proto)
		if m.HostIP != "" {
			ip, err := netip.ParseAddr(m.HostIP)
			if err != nil || !ip.Is4() {
				return nil, invalidConf(fmt.Sprintf("port mapping hostIP %q: give an IPv4 address (Pontoon publishes IPv4 only), or leave it out for every address", m.HostIP))
			}
			if !ip.IsUnspecified() {
				spec = ip.String() + ":" + spec
			}
		}
		out = append(out, spec)
	}
	return out, nil
}

var unsafeID = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// endpointName is the agent's name for CNI's attachment (container id,
// ifname, network): readable by its container id's first characters,
// unique by a hash of all three, within the agent's 64 characters.
func endpointName(containerID, ifName, network string) string {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifName + "\x00" + network))
	short := unsafeID.ReplaceAllString(containerID, "")
	if len(short) > 12 {
		short = short[:12]
	}
	return "cni-" + short + "-" + hex.EncodeToString(sum[:])[:12]
}

// agentError makes an error from the agent, or from reaching it, a CNI
// error object: "try again later" (11) when the agent does not answer or
// is unhealthy, 100 when it refuses the request, 999 when it failed. The
// message is the agent's one line; details say what was being done.
func agentError(doing string, err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	var re *control.ReplyError
	switch {
	case control.Unreachable(err):
		return types.NewError(types.ErrTryAgainLater, err.Error(), doing)
	case errors.As(err, &re) && re.Status == http.StatusServiceUnavailable:
		return types.NewError(types.ErrTryAgainLater, err.Error(), doing)
	case errors.As(err, &re) && (re.Status < 500 || re.Status == http.StatusNotImplemented):
		return types.NewError(errAgentRefused, err.Error(), doing)
	}
	return types.NewError(types.ErrInternal, err.Error(), doing)
}

// Plugin-specific CNI error codes (100 and up).
const (
	// errAgentRefused: the agent refused the request (bad input, a
	// conflict, something missing); its message says what to do.
	errAgentRefused uint = 100
	// errCheckFailed: CHECK found the attachment differing from what ADD
	// made.
	errCheckFailed uint = 101
)

// notFound says whether the agent answered 404.
func notFound(err error) bool {
	var re *control.ReplyError
	return errors.As(err, &re) && re.Status == http.StatusNotFound
}

// conflict says whether the agent answered 409.
func conflict(err error) bool {
	var re *control.ReplyError
	return errors.As(err, &re) && re.Status == http.StatusConflict
}
