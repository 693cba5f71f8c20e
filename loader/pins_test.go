package loader

import "testing"

// TestIsOwnPin: cleanup removes only names a datapath gives its pins.
func TestIsOwnPin(t *testing.T) {
	for _, c := range []struct {
		sub, name string
		want      bool
	}{
		{linksDir, "tcx_ingress_7", true},
		{linksDir, "tcx_bridge-ingress_12", true},
		{linksDir, "cg_connect4_4242", true},
		{progsDir, "tc_egress_3", true},
		{progsDir, "tcx_ingress_7", false},   // a tcx link is never under progs
		{linksDir, "tc_egress_3", false},     // nor a legacy program under links
		{linksDir, "tcx_sideways_7", false},  // no such hook
		{linksDir, "cg_ingress_7", false},    // a tc hook is no socket hook
		{linksDir, "tcx_ingress_-1", false},  // no such index
		{linksDir, "tcx_ingress_x", false},   // not an index
		{linksDir, "other-tool", false},      // another program's pin
		{linksDir, "tcx_ingress_7_x", false}, // more than Pontoon's parts
		{linksDir, "xdp_uplink_7", true},
		{progsDir, "xdp_uplink_7", false},  // XDP is always a link
		{linksDir, "xdp_ingress_7", false}, // XDP has one hook
	} {
		if got := isOwnPin(c.sub, c.name); got != c.want {
			t.Errorf("isOwnPin(%s, %s) = %v, want %v", c.sub, c.name, got, c.want)
		}
	}
}
