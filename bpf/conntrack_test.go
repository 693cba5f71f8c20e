package bpf_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pontoon-net/pontoon/maps"
)

// TCP state as the ct map (published ports) and the snat map (masquerade)
// follow it: the handshake, a tuple reused after a close, RSTs inside and
// outside the window, and a new flow of one binding meeting the live flow
// of another on the same reply tuple.

// One handshake for every case: the opener starts at 1000, the answerer
// at 9000, both scale their windows by 7.
var (
	openSyn   = tcpSeg{flags: syn, seq: 1000, win: 64240, opts: wscaleOpt(7)}
	answerSyn = tcpSeg{flags: syn | ack, seq: 9000, ack: 1001, win: 65160, opts: wscaleOpt(7)}
	openAck   = tcpSeg{flags: ack, seq: 1001, ack: 9001, win: 502}
	answerAck = tcpSeg{flags: ack, seq: 9001, ack: 1001, win: 509}
	openFin   = tcpSeg{flags: fin | ack, seq: 1001, ack: 9001, win: 502}
	answerFin = tcpSeg{flags: fin | ack, seq: 9001, ack: 1002, win: 509}
	openLast  = tcpSeg{flags: ack, seq: 1002, ack: 9002, win: 502}
	// A later connection on the same tuple, without window scaling.
	reopenSyn = tcpSeg{flags: syn, seq: 50000, win: 64240}

	// What each side last told the other after the handshake. The
	// opener accepts [9001, 9001 + 502<<7), the answerer [1001, 1001 +
	// 509<<7).
	openerSide   = side(9001, 502, 7)
	answererSide = side(1001, 509, 7)
	// A SYN's side: its window scale, before any ACK from that side.
	synSide = maps.TCPSide{Wscale: 7, Seen: maps.TCPSideSynWindow | maps.TCPSideWscale}
	// A SYN without window scaling.
	plainSynSide = maps.TCPSide{Seen: maps.TCPSideSynWindow}
)

func rstSeg(seq uint32) tcpSeg { return tcpSeg{flags: rst, seq: seq} }

// ctPlace is where a DNAT flow's entry is: in ct_new until the flow is
// answered (TCP: established; UDP: a reply), and whether the backend
// replied.
type ctPlace struct{ new, replied bool }

var (
	unanswered = ctPlace{new: true}
	halfOpen   = ctPlace{new: true, replied: true}
	answered   = ctPlace{replied: true}
	// reopened is a flow of ct that a SYN started over in place.
	reopened = ctPlace{}
)

// tcpFlow is the ct entry of clientPort's TCP flow through binding b.
func tcpFlow(b maps.Binding, p ctPlace, flags uint8, client, backend maps.TCPSide) ctRow {
	return ctRow{
		CTEntry: maps.CTEntry{Proto: maps.TCP, Backend: b.Backend, Client: clientPort, Dialled: b.Host, BindingID: b.ID, TCPFlags: flags},
		New:     p.new,
		Replied: p.replied,
		TCP:     [2]maps.TCPSide{client, backend},
	}
}

// back and fwd move n bytes in sequence space, wrapping around 2^32.
func back(seq, n uint32) uint32 { return seq - n }

func fwd(seq, n uint32) uint32 { return seq + n }

const (
	established = maps.CTTCPSyn | maps.CTTCPSynAck | maps.CTTCPEstablished
	openerWin   = 502 << 7
	answererWin = 509 << 7
)

// ctTakeoverIdle is CT_TAKEOVER_IDLE_NS of bpf/lib/ct.h.
const ctTakeoverIdle = 10 * time.Second

func TestConntrackDNAT(t *testing.T) {
	o := loadObjects(t)
	// Seeded flows are "idle since boot": in a VM just booted that is less
	// than the takeover time, so wait until it is not.
	for maps.MonotonicNow() < ctTakeoverIdle+time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	host := []netip.Addr{hostIP, hostIP2}
	web := flowSeed{seed: seed{bindings: []maps.Binding{tcpWeb}, hostAddrs: host}}

	// The client's packets on ingress, the backend's on egress.
	cIn := func(s tcpSeg) step {
		return dnatStep(segFrame(t, clientPort, tcpWeb.Host, s), segFrame(t, clientPort, tcpWeb.Backend, s))
	}
	bOut := func(s tcpSeg) step {
		return rnatStep(segFrame(t, tcpWeb.Backend, clientPort, s), segFrame(t, tcpWeb.Host, clientPort, s))
	}
	handshake := []step{named("syn", cIn(openSyn)), named("syn-ack", bOut(answerSyn)), named("ack", cIn(openAck)), named("backend ack", bOut(answerAck))}
	closeByClient := []step{named("fin", cIn(openFin)), named("backend fin", bOut(answerFin)), named("last ack", cIn(openLast))}
	row := func(p ctPlace, flags uint8, client, backend maps.TCPSide) []ctRow {
		return []ctRow{tcpFlow(tcpWeb, p, flags, client, backend)}
	}

	// RST storms: from either side, RSTs just before the window, at its
	// end and one past, half the sequence space away, at 0 and 2^32-1,
	// and a window's length before it. None of them may end the flow.
	var clientStorm, backendStorm []step
	for _, seq := range []uint32{1000, 1001 + answererWin, 1001 + answererWin + 1, 1001 + 1<<31, 0, 1<<32 - 1, back(1001, answererWin)} {
		clientStorm = append(clientStorm, named(fmt.Sprintf("client rst seq %d", seq), rstIgnored(cIn(rstSeg(seq)))))
	}
	for _, seq := range []uint32{9000, 9001 + openerWin, 9001 + openerWin + 1, 9001 + 1<<31, 0, 1<<32 - 1, back(9001, openerWin)} {
		backendStorm = append(backendStorm, named(fmt.Sprintf("backend rst seq %d", seq), rstIgnored(bOut(rstSeg(seq)))))
	}

	// The handshake again with sequence numbers about to wrap.
	wrapSyn := tcpSeg{flags: syn, seq: 0xffffff00, win: 64240, opts: wscaleOpt(7)}
	wrapSynAck := tcpSeg{flags: syn | ack, seq: 9000, ack: 0xffffff01, win: 65160, opts: wscaleOpt(7)}
	wrapAck := tcpSeg{flags: ack, seq: 0xffffff01, ack: 9001, win: 502}
	wrapBackendAck := tcpSeg{flags: ack, seq: 9001, ack: 0xffffff01, win: 509}

	// The handshake without window scaling.
	plainSyn := tcpSeg{flags: syn, seq: 1000, win: 64240}
	plainSynAck := tcpSeg{flags: syn | ack, seq: 9000, ack: 1001, win: 65160}

	// Two bindings to one backend port (-p 80:80 and -p 8080:80): a
	// client using one source port for both lands on one reply tuple.
	p80 := maps.Binding{Proto: maps.TCP, Host: ap(hostIP, 80), Backend: ap(backend, 80), ID: 21}
	p8080 := maps.Binding{Proto: maps.TCP, Host: ap(hostIP, 8080), Backend: ap(backend, 80), ID: 22}
	twoPorts := flowSeed{seed: seed{bindings: []maps.Binding{p80, p8080}, hostAddrs: host}}
	to := func(b maps.Binding, s tcpSeg) step {
		return dnatStep(segFrame(t, clientPort, b.Host, s), segFrame(t, clientPort, b.Backend, s))
	}
	from := func(b maps.Binding, s tcpSeg) step {
		return rnatStep(segFrame(t, b.Backend, clientPort, s), segFrame(t, b.Host, clientPort, s))
	}
	clash := func(b maps.Binding, s tcpSeg) step {
		return step{name: "clashing syn", in: segFrame(t, clientPort, b.Host, s), ret: actShot, stat: "drop_ct_clash"}
	}
	on80 := []step{named("syn :80", to(p80, openSyn)), named("syn-ack :80", from(p80, answerSyn)), named("ack :80", to(p80, openAck))}
	// Seeded entries carry last-seen 1: idle since boot. An established
	// flow is in ct, a half-open one in ct_new.
	idle := func(b maps.Binding, flags uint8) flowSeed {
		s := twoPorts
		e := tcpFlow(b, answered, flags, maps.TCPSide{}, maps.TCPSide{}).CTEntry
		if flags&maps.CTTCPEstablished != 0 {
			s.ct = []maps.CTEntry{e}
		} else {
			s.ctNew = []maps.CTEntry{e}
		}
		return s
	}

	u5300 := maps.Binding{Proto: maps.UDP, Host: ap(hostIP, 5300), Backend: ap(backend, 53), ID: 23}
	u5301 := maps.Binding{Proto: maps.UDP, Host: ap(hostIP, 5301), Backend: ap(backend, 53), ID: 24}
	udpTo := func(b maps.Binding) step {
		return dnatStep(udpFrame(t, clientPort, b.Host), udpFrame(t, clientPort, b.Backend))
	}
	udpEntry := func(b maps.Binding) maps.CTEntry {
		return maps.CTEntry{Proto: maps.UDP, Backend: b.Backend, Client: clientPort, Dialled: b.Host, BindingID: b.ID}
	}

	cases := []flowCase{
		// The handshake.
		{
			name:  "syn and syn-ack without the last ack are half open",
			seed:  web,
			steps: handshake[:2],
			ct:    row(halfOpen, maps.CTTCPSyn|maps.CTTCPSynAck, synSide, synAckSide(1001, 65160, 7)),
		},
		{
			name:  "a retransmitted syn-ack does not establish",
			seed:  web,
			steps: slices.Concat(handshake[:2], []step{named("syn-ack again", bOut(answerSyn))}),
			ct:    row(halfOpen, maps.CTTCPSyn|maps.CTTCPSynAck, synSide, synAckSide(1001, 65160, 7)),
		},
		{
			name:  "the backend's ack does not finish the client's handshake",
			seed:  web,
			steps: slices.Concat(handshake[:2], []step{named("backend ack", bOut(answerAck))}),
			ct:    row(halfOpen, maps.CTTCPSyn|maps.CTTCPSynAck, synSide, answererSide),
		},
		{
			name:  "the client's ack before any syn-ack does not establish",
			seed:  web,
			steps: []step{named("syn", cIn(openSyn)), named("ack", cIn(openAck))},
			ct:    row(unanswered, maps.CTTCPSyn, openerSide, maps.TCPSide{}),
		},
		{
			name:  "a syn-ack alone is no flow",
			seed:  web,
			steps: []step{{name: "syn-ack", egress: true, in: segFrame(t, tcpWeb.Backend, clientPort, answerSyn), ret: actUnspec, stat: "pass_no_match"}},
		},
		{
			name:  "the client's ack after the syn-ack establishes",
			seed:  web,
			steps: handshake,
			ct:    row(answered, established, openerSide, answererSide),
		},

		// A tuple used again.
		{
			name:  "a syn after both fins starts a fresh entry",
			seed:  web,
			steps: slices.Concat(handshake, closeByClient, []step{named("new syn", cIn(reopenSyn))}),
			ct:    row(reopened, maps.CTTCPSyn, plainSynSide, maps.TCPSide{}),
		},
		{
			name:  "a syn after the backend's fin alone starts a fresh entry",
			seed:  web,
			steps: slices.Concat(handshake, []step{named("backend fin", bOut(answerFin)), named("new syn", cIn(reopenSyn))}),
			ct:    row(reopened, maps.CTTCPSyn, plainSynSide, maps.TCPSide{}),
		},
		{
			name:  "a syn after an rst starts a fresh entry",
			seed:  web,
			steps: slices.Concat(handshake, []step{named("rst", cIn(rstSeg(1001))), named("new syn", cIn(reopenSyn))}),
			ct:    row(reopened, maps.CTTCPSyn, plainSynSide, maps.TCPSide{}),
		},
		{
			name: "the fresh entry establishes with its own handshake",
			seed: web,
			steps: slices.Concat(handshake, closeByClient, []step{
				named("new syn", cIn(reopenSyn)),
				named("new syn-ack", bOut(tcpSeg{flags: syn | ack, seq: 70000, ack: 50001, win: 65160})),
				named("new ack", cIn(tcpSeg{flags: ack, seq: 50001, ack: 70001, win: 64240})),
			}),
			ct: row(answered, established, side(70001, 64240, 0), synAckSide(50001, 65160, 0)),
		},
		{
			name:  "an ack on a closed tuple does not reopen it",
			seed:  web,
			steps: slices.Concat(handshake, closeByClient, []step{named("stray ack", cIn(openLast))}),
			ct:    row(answered, established|maps.CTTCPFin, side(9002, 502, 7), side(1002, 509, 7)),
		},

		// RSTs.
		{
			name:  "client rsts outside the window are ignored",
			seed:  web,
			steps: slices.Concat(handshake, clientStorm),
			ct:    row(answered, established, openerSide, answererSide),
		},
		{
			name:  "backend rsts outside the window are ignored",
			seed:  web,
			steps: slices.Concat(handshake, backendStorm),
			ct:    row(answered, established, openerSide, answererSide),
		},
		{
			name:  "a client rst at the window's last byte after a storm closes",
			seed:  web,
			steps: slices.Concat(handshake, clientStorm, []step{named("rst in window", cIn(rstSeg(1001+answererWin-1)))}),
			ct:    row(answered, established|maps.CTTCPRst, openerSide, answererSide),
		},
		{
			name:  "a backend rst at the window's first byte after a storm closes",
			seed:  web,
			steps: slices.Concat(handshake, backendStorm, []step{named("rst in window", bOut(rstSeg(9001)))}),
			ct:    row(answered, established|maps.CTTCPRst, openerSide, answererSide),
		},
		{
			name:  "an rst past the unscaled window but inside the scaled one closes",
			seed:  web,
			steps: slices.Concat(handshake, []step{named("rst", cIn(rstSeg(1001+509+100)))}),
			ct:    row(answered, established|maps.CTTCPRst, openerSide, answererSide),
		},
		{
			name: "without window scaling the window is what was sent",
			seed: web,
			steps: slices.Concat([]step{named("syn", cIn(plainSyn)), named("syn-ack", bOut(plainSynAck)), named("ack", cIn(openAck)), named("backend ack", bOut(answerAck))},
				[]step{named("rst just past", rstIgnored(cIn(rstSeg(1001+509)))), named("rst at the last byte", cIn(rstSeg(1001+508)))}),
			ct: row(answered, established|maps.CTTCPRst, side(9001, 502, 0), side(1001, 509, 0)),
		},
		{
			name: "the window wraps around the sequence space",
			seed: web,
			steps: []step{
				named("syn", cIn(wrapSyn)), named("syn-ack", bOut(wrapSynAck)), named("ack", cIn(wrapAck)), named("backend ack", bOut(wrapBackendAck)),
				named("rst before the wrap, before the window", rstIgnored(cIn(rstSeg(0xffffff00)))),
				named("rst after the wrap, past the window", rstIgnored(cIn(rstSeg(fwd(0xffffff01, answererWin))))),
				named("rst after the wrap, inside", cIn(rstSeg(0x100))),
			},
			ct: row(answered, established|maps.CTTCPRst, openerSide, side(0xffffff01, 509, 7)),
		},
		{
			name: "a zero window takes only the next byte",
			seed: web,
			steps: slices.Concat(handshake[:3], []step{
				named("backend zero window", bOut(tcpSeg{flags: ack, seq: 9001, ack: 1001, win: 0})),
				named("rst one past", rstIgnored(cIn(rstSeg(1002)))),
				named("rst at the next byte", cIn(rstSeg(1001))),
			}),
			ct: row(answered, established|maps.CTTCPRst, openerSide, side(1001, 0, 7)),
		},
		{
			name:  "an rst of a half-open flow counts whatever its sequence",
			seed:  web,
			steps: slices.Concat(handshake[:2], []step{named("rst", cIn(rstSeg(0x12345678)))}),
			ct:    row(halfOpen, maps.CTTCPSyn|maps.CTTCPSynAck|maps.CTTCPRst, synSide, synAckSide(1001, 65160, 7)),
		},
		// RFC 7323 2.2: the window of a SYN or SYN-ACK is never scaled.
		{
			name: "the syn-ack's window is not scaled",
			seed: web,
			steps: slices.Concat(handshake[:3], []step{
				named("rst past the syn-ack's window", rstIgnored(cIn(rstSeg(1001+65160)))),
			}),
			ct: row(answered, established, openerSide, synAckSide(1001, 65160, 7)),
		},
		// RFC 7323 2.3: scaling is on only when both SYNs carry the option.
		{
			name: "a window scale only the client offered is not in effect",
			seed: web,
			steps: []step{
				named("syn", cIn(openSyn)), named("syn-ack", bOut(plainSynAck)), named("ack", cIn(openAck)), named("backend ack", bOut(answerAck)),
				named("backend rst past the client's window", rstIgnored(bOut(rstSeg(9001+502)))),
			},
			ct: row(answered, established, openerSide, side(1001, 509, 0)),
		},

		// Two bindings on one reply tuple.
		{
			name: "a second binding's syn is refused while the first flow is established",
			seed: twoPorts,
			steps: slices.Concat(on80, []step{
				clash(p8080, openSyn),
				named("the first flow goes on", to(p80, openAck)),
				named("and its replies too", from(p80, answerAck)),
			}),
			ct: []ctRow{tcpFlow(p80, answered, established, openerSide, answererSide)},
		},
		{
			name:  "a second binding's syn is refused while the first flow is half open",
			seed:  twoPorts,
			steps: []step{named("syn :80", to(p80, openSyn)), clash(p8080, openSyn)},
			ct:    []ctRow{tcpFlow(p80, unanswered, maps.CTTCPSyn, synSide, maps.TCPSide{})},
		},
		{
			name: "a second binding's syn takes the tuple over once the first flow closed",
			seed: twoPorts,
			steps: slices.Concat(on80, []step{
				named("fin :80", to(p80, openFin)),
				named("syn :8080", to(p8080, reopenSyn)),
				named("syn-ack leaves as :8080", from(p8080, tcpSeg{flags: syn | ack, seq: 70000, ack: 50001, win: 65160})),
			}),
			ct: []ctRow{tcpFlow(p8080, halfOpen, maps.CTTCPSyn|maps.CTTCPSynAck, plainSynSide, synAckSide(50001, 65160, 0))},
		},
		{
			name:  "a second binding's syn takes the tuple over after an rst",
			seed:  twoPorts,
			steps: slices.Concat(on80, []step{named("rst :80", to(p80, rstSeg(1001))), named("syn :8080", to(p8080, openSyn))}),
			ct:    []ctRow{tcpFlow(p8080, unanswered, maps.CTTCPSyn, synSide, maps.TCPSide{})},
		},
		{
			name:  "a second binding's syn takes over a half-open flow idle past the takeover time",
			seed:  idle(p80, maps.CTTCPSyn),
			steps: []step{named("syn :8080", to(p8080, openSyn))},
			ct:    []ctRow{tcpFlow(p8080, unanswered, maps.CTTCPSyn, synSide, maps.TCPSide{})},
		},
		{
			name:  "an established flow is never taken over, however idle",
			seed:  idle(p80, established),
			steps: []step{clash(p8080, openSyn)},
		},
		{
			name: "a second binding's datagram is refused while the first's is fresh",
			seed: flowSeed{seed: seed{bindings: []maps.Binding{u5300, u5301}, hostAddrs: host}},
			steps: []step{
				named("to :5300", udpTo(u5300)),
				{name: "to :5301", in: udpFrame(t, clientPort, u5301.Host), ret: actShot, stat: "drop_ct_clash"},
			},
			ct: []ctRow{{CTEntry: udpEntry(u5300), New: true}},
		},
		{
			name:  "a second binding's datagram takes over an idle answered udp flow",
			seed:  flowSeed{seed: seed{bindings: []maps.Binding{u5300, u5301}, hostAddrs: host, ct: []maps.CTEntry{udpEntry(u5300)}}},
			steps: []step{named("to :5301", udpTo(u5301))},
			ct:    []ctRow{{CTEntry: udpEntry(u5301), New: true}},
		},
		{
			name:  "a second binding's datagram takes over an idle unanswered udp flow",
			seed:  flowSeed{seed: seed{bindings: []maps.Binding{u5300, u5301}, hostAddrs: host}, ctNew: []maps.CTEntry{udpEntry(u5300)}},
			steps: []step{named("to :5301", udpTo(u5301))},
			ct:    []ctRow{{CTEntry: udpEntry(u5301), New: true}},
		},
		{
			name: "a udp flow is answered by its first reply",
			seed: flowSeed{seed: seed{bindings: []maps.Binding{u5300}, hostAddrs: host}},
			steps: []step{
				named("to :5300", udpTo(u5300)),
				named("reply", rnatStep(udpFrame(t, u5300.Backend, clientPort), udpFrame(t, u5300.Host, clientPort))),
			},
			ct: []ctRow{{CTEntry: udpEntry(u5300), Replied: true}},
		},
	}
	runFlows(t, o, cases)
}

func TestConntrackMasquerade(t *testing.T) {
	o := loadObjects(t)
	container, web, nat := ap(backend, 40000), ap(server, 443), ap(hostIP, 40000)

	// The container's packets on egress, the server's on ingress.
	cOut := func(s tcpSeg) step {
		return snatStep(segFrame(t, container, web, s), segFrame(t, nat, web, s))
	}
	sIn := func(s tcpSeg) step {
		return snatReverseStep(segFrame(t, web, nat, s), segFrame(t, web, container, s))
	}
	handshake := []step{named("syn", cOut(openSyn)), named("syn-ack", sIn(answerSyn)), named("ack", cOut(openAck)), named("server ack", sIn(answerAck))}
	// flow is the two entries: the forward one holds the container's
	// state and side, the reverse one the server's.
	flow := func(fwdFlags uint8, fwdSide maps.TCPSide, revFlags uint8, revSide maps.TCPSide) []snatEntry {
		es := snatFlow(maps.TCP, container, web, nat)
		es[0].TCPFlags, es[0].TCP = fwdFlags, fwdSide
		es[1].TCPFlags, es[1].TCP = revFlags, revSide
		return es
	}
	estFwd := uint8(maps.CTTCPSyn | maps.CTTCPEstablished)

	var serverStorm, containerStorm []step
	for _, seq := range []uint32{9000, 9001 + openerWin, 9001 + 1<<31, back(9001, openerWin)} {
		serverStorm = append(serverStorm, named(fmt.Sprintf("server rst seq %d", seq), rstIgnored(sIn(rstSeg(seq)))))
	}
	for _, seq := range []uint32{1000, 1001 + answererWin, 1001 + 1<<31, back(1001, answererWin)} {
		containerStorm = append(containerStorm, named(fmt.Sprintf("container rst seq %d", seq), rstIgnored(cOut(rstSeg(seq)))))
	}

	cases := []flowCase{
		{
			name:  "syn and syn-ack without the last ack are half open",
			seed:  masquerading,
			steps: handshake[:2],
			snat:  flow(maps.CTTCPSyn, synSide, maps.CTTCPSynAck, synAckSide(1001, 65160, 7)),
		},
		{
			name:  "the server's ack does not finish the container's handshake",
			seed:  masquerading,
			steps: slices.Concat(handshake[:2], []step{named("syn-ack again", sIn(answerSyn)), named("server ack", sIn(answerAck))}),
			snat:  flow(maps.CTTCPSyn, synSide, maps.CTTCPSynAck, answererSide),
		},
		{
			name:  "the container's ack before any syn-ack does not establish",
			seed:  masquerading,
			steps: []step{named("syn", cOut(openSyn)), named("ack", cOut(openAck))},
			snat:  flow(maps.CTTCPSyn, openerSide, 0, maps.TCPSide{}),
		},
		{
			name:  "a syn-ack alone is no flow",
			seed:  masquerading,
			steps: []step{{name: "syn-ack", in: segFrame(t, web, nat, answerSyn), ret: actUnspec, stat: "pass_no_match"}},
		},
		{
			name:  "the container's ack after the syn-ack establishes",
			seed:  masquerading,
			steps: handshake,
			snat:  flow(estFwd, openerSide, maps.CTTCPSynAck, answererSide),
		},
		{
			name: "a syn after both fins starts fresh entries",
			seed: masquerading,
			steps: slices.Concat(handshake, []step{
				named("fin", cOut(openFin)), named("server fin", sIn(answerFin)), named("last ack", cOut(openLast)),
				named("new syn", cOut(reopenSyn)),
			}),
			snat: flow(maps.CTTCPSyn, plainSynSide, 0, maps.TCPSide{}),
		},
		{
			name:  "a syn after the container's rst starts fresh entries",
			seed:  masquerading,
			steps: slices.Concat(handshake, []step{named("rst", cOut(rstSeg(1001))), named("new syn", cOut(reopenSyn))}),
			snat:  flow(maps.CTTCPSyn, plainSynSide, 0, maps.TCPSide{}),
		},
		// The server ends the connection; the container's socket is gone
		// without a word and its port is free for the next one.
		{
			name:  "a syn after the server's rst starts fresh entries",
			seed:  masquerading,
			steps: slices.Concat(handshake, []step{named("server rst", sIn(rstSeg(9001))), named("new syn", cOut(reopenSyn))}),
			snat:  flow(maps.CTTCPSyn, plainSynSide, 0, maps.TCPSide{}),
		},
		{
			name:  "a syn after the server's fin starts fresh entries",
			seed:  masquerading,
			steps: slices.Concat(handshake, []step{named("server fin", sIn(answerFin)), named("new syn", cOut(reopenSyn))}),
			snat:  flow(maps.CTTCPSyn, plainSynSide, 0, maps.TCPSide{}),
		},
		{
			name:  "an ack on a closed tuple does not reopen it",
			seed:  masquerading,
			steps: slices.Concat(handshake, []step{named("fin", cOut(openFin)), named("stray ack", cOut(openLast))}),
			snat:  flow(estFwd|maps.CTTCPFin, side(9002, 502, 7), maps.CTTCPSynAck, answererSide),
		},
		{
			name:  "server rsts outside the window are ignored",
			seed:  masquerading,
			steps: slices.Concat(handshake, serverStorm),
			snat:  flow(estFwd, openerSide, maps.CTTCPSynAck, answererSide),
		},
		{
			name:  "container rsts outside the window are ignored",
			seed:  masquerading,
			steps: slices.Concat(handshake, containerStorm),
			snat:  flow(estFwd, openerSide, maps.CTTCPSynAck, answererSide),
		},
		{
			name:  "a server rst at the window's last byte after a storm closes",
			seed:  masquerading,
			steps: slices.Concat(handshake, serverStorm, []step{named("rst in window", sIn(rstSeg(9001+openerWin-1)))}),
			snat:  flow(estFwd, openerSide, maps.CTTCPSynAck|maps.CTTCPRst, answererSide),
		},
		{
			name:  "a container rst at the window's first byte after a storm closes",
			seed:  masquerading,
			steps: slices.Concat(handshake, containerStorm, []step{named("rst in window", cOut(rstSeg(1001)))}),
			snat:  flow(estFwd|maps.CTTCPRst, openerSide, maps.CTTCPSynAck, answererSide),
		},
		{
			name:  "an rst of a half-open flow counts whatever its sequence",
			seed:  masquerading,
			steps: slices.Concat(handshake[:2], []step{named("server rst", sIn(rstSeg(0x12345678)))}),
			snat:  flow(maps.CTTCPSyn, synSide, maps.CTTCPSynAck|maps.CTTCPRst, synAckSide(1001, 65160, 7)),
		},
		// RFC 7323 2.3: a server without window scaling turns the
		// container's off too; an outside RST past the container's
		// unscaled window must not end the flow.
		{
			name: "a window scale the server did not answer is not in effect",
			seed: masquerading,
			steps: []step{
				named("syn", cOut(openSyn)),
				named("syn-ack", sIn(tcpSeg{flags: syn | ack, seq: 9000, ack: 1001, win: 65160})),
				named("ack", cOut(openAck)), named("server ack", sIn(answerAck)),
				named("server rst past the container's window", rstIgnored(sIn(rstSeg(9001+502)))),
			},
			snat: flow(estFwd, openerSide, maps.CTTCPSynAck, side(1001, 509, 0)),
		},
	}
	runFlows(t, o, cases)
	t.Run("helper rewrites", func(t *testing.T) { runFlows(t, loadObjects(t, helperRewrites(t)), cases) })
}
