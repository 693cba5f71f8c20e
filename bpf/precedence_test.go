package bpf_test

import (
	"net/netip"
	"testing"

	"github.com/pontoon-net/pontoon/maps"
)

// TestPublishedPortOfMasqueradedFlow: a port claimed for a masqueraded
// flow is published afterwards (claims skip published ports, publishing
// does not wait for flows). The flow's replies still reach its container,
// whatever the binding would say of them (loopback only, a source not
// allowed), and an orphaned half still drops them: through tc, and
// through XDP, which leaves them to tc untouched and opens no DNAT flow.
// Other clients of the port reach the binding's backend, and an
// established DNAT flow on a port inside the SNAT range goes on being
// translated. Each runs with the prefilter on and off.
func TestPublishedPortOfMasqueradedFlow(t *testing.T) {
	o := loadObjects(t)
	host := []netip.Addr{hostIP}
	container := ap(backend, 40001)
	web := ap(server, 443)
	peer := ap(server, 4500)
	nat := ap(hostIP, 40001)
	dialled := ap(backend2, 8080)
	published := maps.Binding{Proto: maps.TCP, Host: nat, Backend: dialled, ID: 9}

	tcpFlow := masquerading.withSNAT(snatFlow(maps.TCP, container, web, nat))
	tcpFlow.bindings, tcpFlow.hostAddrs = []maps.Binding{published}, host
	udpFlow := masquerading.withSNAT(snatFlow(maps.UDP, container, peer, nat))
	udpPublished := published
	udpPublished.Proto = maps.UDP
	udpFlow.bindings, udpFlow.hostAddrs = []maps.Binding{udpPublished}, host
	loopbackOnly := tcpFlow
	loopbackOnly.bindings = nil
	loopbackOnly.raw = map[maps.BindingKey]maps.BindingValue{published.Key(): {BackendAddr: raw16(backend2), BackendPort: netOrder(8080), Flags: 1, ID: 9}}
	allowlisted := tcpFlow
	allowed := published
	allowed.Allowlist = true
	allowlisted.bindings = []maps.Binding{allowed}
	allowlisted.allow = map[uint32][]netip.Prefix{9: {netip.MustParsePrefix("10.0.0.0/8")}}
	orphan := masquerading.withSNAT(snatFlow(maps.TCP, container, web, nat)[1:])
	orphan.bindings, orphan.hostAddrs = []maps.Binding{published}, host
	established := maps.CTEntry{Proto: maps.TCP, Backend: dialled, Client: clientPort, Dialled: nat, BindingID: 9,
		TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished}
	withDNATFlow := tcpFlow
	withDNATFlow.ct = []maps.CTEntry{established}

	cases := []struct {
		name string
		seed flowSeed
		in   []byte
		out  []byte
		ret  uint32
		stat string
		// xdp: XDP translates the packet itself, rather than leave it
		// to tc untouched.
		xdp bool
		ct  []maps.CTEntry
	}{
		{
			name: "tcp reply of the masqueraded flow",
			seed: tcpFlow,
			in:   tcpFrame(t, web, nat, syn|ack),
			out:  tcpFrame(t, web, container, syn|ack),
			ret:  actUnspec,
			stat: "snat_reverse",
		},
		{
			name: "tcp reply that closes the masqueraded flow",
			seed: tcpFlow,
			in:   tcpFrame(t, web, nat, fin|ack),
			out:  tcpFrame(t, web, container, fin|ack),
			ret:  actUnspec,
			stat: "snat_reverse",
		},
		{
			name: "udp reply of the masqueraded flow",
			seed: udpFlow,
			in:   udpFrame(t, peer, nat),
			out:  udpFrame(t, peer, container),
			ret:  actUnspec,
			stat: "snat_reverse",
		},
		{
			name: "reply on a port published loopback only",
			seed: loopbackOnly,
			in:   tcpFrame(t, web, nat, ack),
			out:  tcpFrame(t, web, container, ack),
			ret:  actUnspec,
			stat: "snat_reverse",
		},
		{
			name: "reply from a source the binding does not allow",
			seed: allowlisted,
			in:   tcpFrame(t, web, nat, ack),
			out:  tcpFrame(t, web, container, ack),
			ret:  actUnspec,
			stat: "snat_reverse",
		},
		{
			name: "reply to an orphaned half",
			seed: orphan,
			in:   tcpFrame(t, web, nat, ack),
			ret:  tcActShot,
			stat: "drop_snat_orphan",
		},
		{
			name: "another client of the published port",
			seed: udpFlow,
			in:   udpFrame(t, clientPort, nat),
			out:  udpFrame(t, clientPort, dialled),
			ret:  actUnspec,
			stat: "dnat",
			xdp:  true,
			ct:   []maps.CTEntry{{Proto: maps.UDP, Backend: dialled, Client: clientPort, Dialled: nat, BindingID: 9}},
		},
		{
			name: "established dnat flow on a port of the snat range",
			seed: withDNATFlow,
			in:   tcpFrame(t, clientPort, nat, ack),
			out:  tcpFrame(t, clientPort, dialled, ack),
			ret:  actUnspec,
			stat: "dnat",
			xdp:  true,
			ct:   []maps.CTEntry{established},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, prefilter := range []bool{false, true} {
				filter := c.seed.seed
				filter.networks = c.seed.networks
				seedFlow(t, o, c.seed)
				setPrefilter(t, o, filter, prefilter)
				zeroStats(t, o.Stats)
				ret, got := run(t, o.UplinkIngress, c.in)
				checkRun(t, o, c.in, ret, got, c.ret, c.out, c.stat, c.ct)
			}
			t.Run("xdp", func(t *testing.T) {
				xdp := o.xdp(t)
				for _, prefilter := range []bool{false, true} {
					filter := c.seed.seed
					filter.networks = c.seed.networks
					seedFlow(t, o, c.seed)
					setPrefilter(t, o, filter, prefilter)
					zeroStats(t, o.Stats)
					ret, got := run(t, xdp, c.in)
					meta, frame := got[:len(got)-len(c.in)], got[len(got)-len(c.in):]
					if !c.xdp {
						// Left to tc: untouched, uncounted, no flow opened.
						if xdpNote(meta) != 0 {
							t.Errorf("prefilter %v: XDP left the note %x on a packet it leaves to tc", prefilter, meta)
						}
						checkRun(t, o, c.in, ret, frame, xdpPass, nil, "", nil)
						continue
					}
					if !xdpMarked(meta) {
						t.Errorf("prefilter %v: XDP metadata %x, want the translated note", prefilter, meta)
					}
					checkRun(t, o, c.in, ret, frame, xdpPass, c.out, c.stat, c.ct)
				}
			})
		})
	}
}
