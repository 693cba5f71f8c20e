package control

import (
	"strings"
	"testing"
)

// TestLabels: a label reads back as written, fields that would pass
// IFALIASZ are left out rather than cut, and aliases Pontoon does not give
// are not labels.
func TestLabels(t *testing.T) {
	id := strings.Repeat("ab", 32)
	for _, l := range []label{
		{kind: bridgeAlias, name: "net1"},
		{kind: bridgeAlias, name: "docker-0123456789ab", owner: dockerOwner},
		{kind: bridgeAlias, name: "cni1", adopted: true, addedGateway: true},
		{kind: vethAlias, name: "docker-0123456789ab", owner: dockerOwner, containerID: id, containerName: "web-1"},
		{kind: vethAlias, name: "cnitool-0123-eth0", owner: "cni", containerID: "cnitool-0123", adopted: true},
		{kind: peerAlias, name: "docker-0123456789ab"},
	} {
		alias := l.String()
		got, ok := parseLabel(alias)
		if !ok || got != l || len(alias) > maxAliasLen {
			t.Errorf("label %+v: alias %q (%d bytes) reads back as %+v, %v", l, alias, len(alias), got, ok)
		}
	}

	long := label{kind: vethAlias, name: strings.Repeat("e", 64), owner: "cni", containerID: strings.Repeat("c", 256), containerName: "x"}
	got, _ := parseLabel(long.String())
	if len(long.String()) > maxAliasLen || got.containerID != "" || got.owner != "cni" || got.containerName != "x" || got.name != long.name {
		t.Errorf("a container id too long for the alias: %q reads back as %+v", long.String(), got)
	}
	spaced := label{kind: vethAlias, name: "e1", containerName: "two words"}
	if got, _ := parseLabel(spaced.String()); got.containerName != "" || got.name != "e1" {
		t.Errorf("a name with a space: %q reads back as %+v", spaced.String(), got)
	}

	for _, alias := range []string{"", "pontoon:", "pontoon:ep:", "pontoon:ep: owner=cni", "someone else's", "pontoon:other:x"} {
		if l, ok := parseLabel(alias); ok {
			t.Errorf("alias %q read as label %+v", alias, l)
		}
	}
}
