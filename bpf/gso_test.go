package bpf_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/pontoon-net/pontoon/maps"
)

// GSO packets: a TCP segment many MSS long, as GRO hands one to tc ingress
// and a socket with TSO hands one to tc egress, marked with gso_size and
// gso_segs. A test run puts those two fields into its skb, but its data
// must fit one page (about 3.7 KB on this kernel, no page fragments): so
// a 64 KB segment enters as the skb's linear head would hold it, headers
// and the first two segments' payload, while the rest of the payload
// stays here and is spliced back behind the output to check the TCP
// checksum over the whole segment. A segment of three MSS fits whole.
//
// The test skb's checksum state is CHECKSUM_NONE or CHECKSUM_COMPLETE;
// either way the TCP checksum field is the sender's full checksum and must
// stay right for the whole segment. A real TSO skb is CHECKSUM_PARTIAL,
// its field holding only the pseudo header's sum: no test run can make
// one, so that state is left to the end-to-end tests.

const gsoSize = 1448

// gsoSeg is a segment of one flow: the frame it is sent as, the frame it
// must leave as (both whole), and how much of them the skb holds.
type gsoSeg struct {
	in, out []byte
	head    int
	ctx     *skBuff
}

// newGSOSeg builds a segment of s from src to dst translated to tsrc ->
// tdst. head 0 puts the whole frame in the skb.
func newGSOSeg(t testing.TB, src, dst, tsrc, tdst netip.AddrPort, s tcpSeg, head int) gsoSeg {
	in, out := segFrame(t, src, dst, s), segFrame(t, tsrc, tdst, s)
	if head == 0 {
		head = len(in)
	}
	segs := (len(s.payload) + gsoSize - 1) / gsoSize
	return gsoSeg{in: in, out: out, head: head, ctx: &skBuff{GSOSize: gsoSize, GSOSegs: uint32(segs), WireLen: uint32(len(in))}}
}

// step runs g with the given counter, on egress or not.
func (g gsoSeg) step(name string, egress bool, stat string) step {
	return step{name: name, egress: egress, in: g.in[:g.head], ctx: g.ctx, ret: actUnspec, out: g.out[:g.head], stat: stat}
}

// wholeSegmentOK splices the rest of the payload behind the output head
// and checks the IP header and the TCP checksum of the whole segment.
func wholeSegmentOK(t *testing.T, g gsoSeg, out []byte) {
	t.Helper()
	whole := slices.Concat(out[:g.head], g.in[g.head:])
	ip := whole[14:]
	ihl := int(ip[0]&0x0f) * 4
	if onesSum(0, ip[:ihl]) != 0xffff {
		t.Errorf("IPv4 header checksum %#04x is wrong", binary.BigEndian.Uint16(ip[10:]))
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if total != len(ip) {
		t.Fatalf("spliced segment is %d bytes, its header says %d", len(ip), total)
	}
	src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	l4ChecksumOK(t, src, dst, layers.IPProtocolTCP, ip[ihl:total])
}

func TestGSO(t *testing.T) {
	o := loadObjects(t)
	host := []netip.Addr{hostIP, hostIP2}

	sizes := []struct {
		name    string
		payload int
		head    int
	}{
		// 14 + 20 + 20 + 65482 = 65536, the most wire_len may say.
		{"64k segment", 65482, 14 + 20 + 20 + 2*gsoSize},
		{"three-mss segment", 2*gsoSize + 600, 0},
	}

	var cases []flowCase
	for _, size := range sizes {
		n := uint32(size.payload)
		big := func(seq, ackNum uint32, win uint16) tcpSeg {
			return tcpSeg{flags: ack, psh: true, seq: seq, ack: ackNum, win: win, payload: pattern(size.payload)}
		}
		clientSyn := tcpSeg{flags: syn, seq: 1000, win: 64240, opts: wscaleOpt(7)}
		serverSynAck := tcpSeg{flags: syn | ack, seq: 9000, ack: 1001, win: 65160, opts: wscaleOpt(7)}
		clientAck := tcpSeg{flags: ack, seq: 1001, ack: 9001, win: 502}

		// A published port: the handshake, then a GSO segment each way.
		up := newGSOSeg(t, clientPort, tcpWeb.Host, clientPort, tcpWeb.Backend, big(1001, 9001, 502), size.head)
		down := newGSOSeg(t, tcpWeb.Backend, clientPort, tcpWeb.Host, clientPort, big(9001, 1001+n, 509), size.head)
		cases = append(cases, flowCase{
			name: fmt.Sprintf("dnat and reverse nat of a %s", size.name),
			seed: flowSeed{seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host}},
			steps: []step{
				named("syn", dnatStep(segFrame(t, clientPort, tcpWeb.Host, clientSyn), segFrame(t, clientPort, tcpWeb.Backend, clientSyn))),
				named("syn-ack", rnatStep(segFrame(t, tcpWeb.Backend, clientPort, serverSynAck), segFrame(t, tcpWeb.Host, clientPort, serverSynAck))),
				named("ack", dnatStep(segFrame(t, clientPort, tcpWeb.Host, clientAck), segFrame(t, clientPort, tcpWeb.Backend, clientAck))),
				up.step("gso in", false, "dnat"),
				down.step("gso out", true, "rnat"),
			},
			ct: []ctRow{{
				CTEntry: maps.CTEntry{Proto: maps.TCP, Backend: tcpWeb.Backend, Client: clientPort, Dialled: tcpWeb.Host, BindingID: tcpWeb.ID,
					TCPFlags: maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished},
				Replied: true,
				TCP:     [2]maps.TCPSide{side(9001, 502, 7), side(1001+n, 509, 7)},
			}},
			check: func(t *testing.T, outs [][]byte) {
				wholeSegmentOK(t, up, outs[3])
				wholeSegmentOK(t, down, outs[4])
			},
		})

		// Masquerade: the container's port kept, or moved into a SNAT
		// range that does not hold it.
		container, web := ap(backend, 40000), ap(server, 443)
		moved := masquerading
		moved.config = oneSNATPort
		for _, m := range []struct {
			name string
			seed flowSeed
			nat  netip.AddrPort
		}{
			{"masquerade", masquerading, ap(hostIP, 40000)},
			{"masquerade to another port", moved, ap(hostIP, 50000)},
		} {
			out := newGSOSeg(t, container, web, m.nat, web, big(1001, 9001, 502), size.head)
			in := newGSOSeg(t, web, m.nat, web, container, big(9001, 1001+n, 509), size.head)
			flow := snatFlow(maps.TCP, container, web, m.nat)
			flow[0].TCPFlags, flow[0].TCP = maps.CTTCPSyn|maps.CTTCPEstablished, side(9001, 502, 7)
			flow[1].TCPFlags, flow[1].TCP = maps.CTTCPSynAck, side(1001+n, 509, 7)
			cases = append(cases, flowCase{
				name: fmt.Sprintf("%s and its reverse of a %s", m.name, size.name),
				seed: m.seed,
				steps: []step{
					named("syn", snatStep(segFrame(t, container, web, clientSyn), segFrame(t, m.nat, web, clientSyn))),
					named("syn-ack", snatReverseStep(segFrame(t, web, m.nat, serverSynAck), segFrame(t, web, container, serverSynAck))),
					named("ack", snatStep(segFrame(t, container, web, clientAck), segFrame(t, m.nat, web, clientAck))),
					out.step("gso out", true, "snat"),
					in.step("gso in", false, "snat_reverse"),
				},
				snat: flow,
				check: func(t *testing.T, outs [][]byte) {
					wholeSegmentOK(t, out, outs[3])
					wholeSegmentOK(t, in, outs[4])
				},
			})
		}
	}
	runFlows(t, o, cases)
}
