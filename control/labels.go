package control

import (
	"errors"
	"strings"

	"github.com/vishvananda/netlink"
)

// An interface's alias is its label: "pontoon:net:NAME" on a network's
// bridge, "pontoon:ep:NAME" on an endpoint's host veth, "pontoon:peer:NAME"
// on an engine endpoint's waiting peer. Space-separated fields after the
// name keep what only the record holds otherwise, so `pontoon state
// rebuild` can give it back: who made it (owner=docker, owner=cni), its
// container (cid=, cname=), and "adopted" on a bridge or veth another
// tool made (with "added-gateway" where the agent put the gateway on an
// adopted bridge). Names never hold a space (nameRE).
type label struct {
	kind          string // bridgeAlias, vethAlias or peerAlias
	name          string
	owner         string
	containerID   string
	containerName string
	adopted       bool
	addedGateway  bool
}

// maxAliasLen is IFALIASZ less its terminating zero; fields that would
// run past it are left out (a rebuild then reports them lost).
const maxAliasLen = 255

// parseLabel reads an alias Pontoon gives; ok is false for any other.
func parseLabel(alias string) (l label, ok bool) {
	for _, kind := range []string{bridgeAlias, vethAlias, peerAlias} {
		rest, found := strings.CutPrefix(alias, kind)
		if !found {
			continue
		}
		fields := strings.Split(rest, " ")
		if fields[0] == "" {
			return label{}, false
		}
		l = label{kind: kind, name: fields[0]}
		for _, f := range fields[1:] {
			key, val, _ := strings.Cut(f, "=")
			switch key {
			case "owner":
				l.owner = val
			case "cid":
				l.containerID = val
			case "cname":
				l.containerName = val
			case "adopted":
				l.adopted = true
			case "added-gateway":
				l.addedGateway = true
			}
		}
		return l, true
	}
	return label{}, false
}

// String is the alias for l.
func (l label) String() string {
	s := l.kind + l.name
	add := func(field string) {
		if len(s)+1+len(field) <= maxAliasLen && !strings.ContainsAny(field, " \t\n") {
			s += " " + field
		}
	}
	if l.adopted {
		add("adopted")
	}
	if l.addedGateway {
		add("added-gateway")
	}
	if l.owner != "" {
		add("owner=" + l.owner)
	}
	if l.containerID != "" {
		add("cid=" + l.containerID)
	}
	if l.containerName != "" {
		add("cname=" + l.containerName)
	}
	return s
}

func networkLabel(n *Network) label {
	return label{kind: bridgeAlias, name: n.Name, owner: n.Owner, adopted: n.Adopted, addedGateway: n.Adopted && n.AddedGateway}
}

func endpointLabel(e *Endpoint) label {
	return label{kind: vethAlias, name: e.Name, owner: e.Owner, containerID: e.ContainerID, containerName: e.ContainerName, adopted: e.Adopted}
}

// setLabel gives l its label unless it has it. An adopted interface
// keeps an alias that is not Pontoon's: it is its maker's.
func setLabel(l netlink.Link, want label) error {
	alias := l.Attrs().Alias
	if alias == want.String() {
		return nil
	}
	if _, ours := parseLabel(alias); want.adopted && alias != "" && !ours {
		return nil
	}
	return netlink.LinkSetAlias(l, want.String())
}

// clearLabel takes Pontoon's label off an adopted interface by name,
// when the agent lets go of it; a missing interface is fine.
func clearLabel(name string) error {
	l, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, ours := parseLabel(l.Attrs().Alias); !ours {
		return nil
	}
	return netlink.LinkSetAlias(l, "")
}

// relabel gives every network's bridge and endpoint's host veth the
// label its record says (records from before labels carried owners, and
// adopted interfaces, had none or less).
func (a *Agent) relabel(links map[string]netlink.Link) {
	for _, n := range a.st.networks {
		if l := links[n.Bridge]; l != nil {
			if err := setLabel(l, networkLabel(n)); err != nil {
				a.log.Warn("label bridge", "network", n.Name, "bridge", n.Bridge, "err", err)
			}
		}
	}
	for _, e := range a.st.endpoints {
		if l := links[e.HostIf]; l != nil && l.Type() == "veth" {
			if err := setLabel(l, endpointLabel(e)); err != nil {
				a.log.Warn("label veth", "endpoint", e.Name, "veth", e.HostIf, "err", err)
			}
		}
	}
}

// labelLink labels the interface name as want, logging what fails: a
// label is for a later rebuild, never worth failing a request over.
func (a *Agent) labelLink(name string, want label) {
	l, err := netlink.LinkByName(name)
	if err == nil {
		err = setLabel(l, want)
	}
	if err != nil {
		a.log.Warn("label interface", "name", name, "label", want.String(), "err", err)
	}
}
