package vmtest

import (
	"fmt"
	"testing"
)

func TestJobParser(t *testing.T) {
	p := newJobParser("n0nce")
	tests := []struct {
		name    string
		line    string
		wantOut string
		wantEv  *event
	}{
		{"plain output", "=== RUN   TestX\n", "=== RUN   TestX\n", nil},
		{"crlf from a tty", "ok\r\n", "ok\n", nil},
		{"start", "PONTOON-VMTEST n0nce start\n", "", &event{kind: evStart}},
		{"start under systemd", "PONTOON-VMTEST n0nce start systemd=degraded\r\n", "", &event{kind: evStart, text: "degraded"}},
		{"exit 0", "PONTOON-VMTEST n0nce exit 0\n", "", &event{kind: evExit, code: 0}},
		{"exit 1", "PONTOON-VMTEST n0nce exit 1\n", "", &event{kind: evExit, code: 1}},
		{"exit after output without newline", "PASSPONTOON-VMTEST n0nce exit 0\n", "PASS\n", &event{kind: evExit, code: 0}},
		{"guest error", "PONTOON-VMTEST n0nce error cannot load module kernel/fs/9p/9p.ko\n", "", &event{kind: evError, text: "cannot load module kernel/fs/9p/9p.ko"}},
		{"forged nonce is output", "PONTOON-VMTEST other exit 0\n", "PONTOON-VMTEST other exit 0\n", nil},
		{"bad exit code is output", "PONTOON-VMTEST n0nce exit x\n", "PONTOON-VMTEST n0nce exit x\n", nil},
		{"exit code out of range is output", "PONTOON-VMTEST n0nce exit 300\n", "PONTOON-VMTEST n0nce exit 300\n", nil},
		{"unknown word is output", "PONTOON-VMTEST n0nce reboot\n", "PONTOON-VMTEST n0nce reboot\n", nil},
		{"last line without newline", "partial", "partial", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ev := p.line(tt.line)
			if out != tt.wantOut {
				t.Errorf("output %q, want %q", out, tt.wantOut)
			}
			if fmt.Sprint(ev) != fmt.Sprint(tt.wantEv) {
				t.Errorf("event %+v, want %+v", ev, tt.wantEv)
			}
		})
	}
}

func TestFailedTest(t *testing.T) {
	tests := []struct {
		line, want string
		ok         bool
	}{
		{"--- FAIL: TestDeliberateFailure (0.00s)\n", "TestDeliberateFailure", true},
		{"    --- FAIL: TestTable/case_1 (0.01s)\n", "TestTable/case_1", true},
		{"--- PASS: TestX (0.00s)\n", "", false},
		{"FAIL\n", "", false},
		{"got --- FAIL: inside a message\n", "", false},
	}
	for _, tt := range tests {
		got, ok := failedTest(tt.line)
		if got != tt.want || ok != tt.ok {
			t.Errorf("failedTest(%q) = %q, %v; want %q, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

func TestLineRingKeepsTail(t *testing.T) {
	r := &lineRing{max: 3}
	for i := range 5 {
		r.add(fmt.Sprintf("line %d\r\n", i))
	}
	if got, want := r.String(), "line 2\nline 3\nline 4"; got != want {
		t.Errorf("tail %q, want %q", got, want)
	}
}
