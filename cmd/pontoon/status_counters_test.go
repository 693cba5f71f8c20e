package main

import (
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/maps"
)

// TestPrintCounters: counters that moved are shown by name, drops first,
// then passes, then the rest; with no drop, "drops: none" says so.
func TestPrintCounters(t *testing.T) {
	var b strings.Builder
	printCounters(&b, map[string]maps.Counter{
		"dnat": {Packets: 5, Bytes: 300}, "drop_spoofed": {Packets: 1, Bytes: 60}, "drop_icc": {Packets: 2, Bytes: 120},
		"pass_no_match": {Packets: 3, Bytes: 180}, "rnat": {}, "drop_ct_full": {},
	})
	want := "drop drop_icc:\t2 packets, 120 bytes\ndrop drop_spoofed:\t1 packets, 60 bytes\npass pass_no_match:\t3 packets, 180 bytes\ncounter dnat:\t5 packets, 300 bytes\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	printCounters(&b, map[string]maps.Counter{"dnat": {Packets: 1, Bytes: 60}, "drop_icc": {}})
	if want := "drops:\tnone\ncounter dnat:\t1 packets, 60 bytes\n"; b.String() != want {
		t.Errorf("without drops, got:\n%s\nwant:\n%s", b.String(), want)
	}
}
