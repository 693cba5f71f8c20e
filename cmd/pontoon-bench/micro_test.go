package main

import (
	"bytes"
	"strings"
	"testing"
)

// goTestOutput is what `go test -bench -count 2` prints, trimmed.
const goTestOutput = `goos: linux
goarch: amd64
pkg: github.com/pontoon-net/pontoon/bpf
cpu: AMD EPYC
BenchmarkMiss/bindings=65536/tc-2         	24000000	        66.00 ns/op	        46.00 ns/pkt
BenchmarkMiss/bindings=65536/tc-2         	24000000	        70.00 ns/op	        50.00 ns/pkt
BenchmarkPublish60k-2   	       5	 476019952 ns/op	       486.0 agent-ms/op	        79.98 client-ms/op
BenchmarkPublish60k-2   	       5	 176019952 ns/op	       186.0 agent-ms/op	        19.98 client-ms/op
--- BENCH: something printed by b.Log
PASS
ok  	github.com/pontoon-net/pontoon/bpf	12.1s
`

func TestParseMicro(t *testing.T) {
	cells, err := parseMicro(bytes.NewBufferString(goTestOutput), "./bpf")
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != 2 || cells[0].Name != "Miss/bindings=65536/tc" || cells[1].Name != "Publish60k" {
		t.Fatalf("cells %+v, want Miss/bindings=65536/tc then Publish60k", cells)
	}
	if m := cells[0]; m.Median != 68 || m.Min != 66 || m.Max != 70 || m.Metrics["ns/pkt"].Median != 48 {
		t.Errorf("Miss: %+v, want ns/op median 68 of 66 and 70, ns/pkt 48", m)
	}
	p := cells[1]
	if p.Median != 326019952 || p.Metrics["agent-ms/op"].Median != 336 || p.Metrics["client-ms/op"].Max != 79.98 {
		t.Errorf("Publish60k: %+v", p)
	}
	if _, err := parseMicro(bytes.NewBufferString("PASS\nok x 1s\n"), "./x"); err == nil {
		t.Error("output without a result parsed without an error")
	}

	// The report shows each with its goal, and the goals list them.
	r := &results{Micro: cells}
	r.Goals = evaluateGoals(r)
	md := markdown(r)
	for _, want := range []string{"| ./bpf | Miss/bindings=65536/tc | 68 ns (66 ns–70 ns) | 48 ns/pkt | < 60 ns a packet: met |", "< 200 ms: not met"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	var met, notMet int
	for _, g := range r.Goals {
		if strings.HasPrefix(g.Goal, "Miss/") && g.Status == goalMet {
			met++
		}
		if strings.HasPrefix(g.Goal, "Publish60k") && g.Status == goalNotMet {
			notMet++
		}
	}
	if met != 1 || notMet != 1 {
		t.Errorf("goals %+v: want Miss met and Publish60k not met", r.Goals)
	}
}

func TestTrimProcs(t *testing.T) {
	for in, want := range map[string]string{"Miss/bindings=1/tc-2": "Miss/bindings=1/tc", "X-16": "X", "X": "X", "A-b": "A-b", "X-": "X-"} {
		if got := trimProcs(in); got != want {
			t.Errorf("trimProcs(%q) = %q, want %q", in, got, want)
		}
	}
}
