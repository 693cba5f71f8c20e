package main

import (
	"regexp"
	"testing"
)

// Every test of a split package runs in exactly one shard: the patterns'
// shards and the rest, which skips them all.
func TestShardsRunEveryTestOnce(t *testing.T) {
	shards, err := parseSplit("loader=^TestTraffic$,^(TestA|TestB)$; bpf=^TestX$")
	if err != nil {
		t.Fatal(err)
	}
	js := jobsFor("5.10", "github.com/pontoon-net/pontoon/loader", shards)
	if len(js) != 3 {
		t.Fatalf("got %d loader jobs, want 3 (two patterns and the rest): %v", len(js), js)
	}
	for _, name := range []string{"TestTraffic", "TestA", "TestB", "TestC", "TestTrafficX"} {
		runs := 0
		for _, j := range js {
			re := regexp.MustCompile(j.filter[1])
			if (j.filter[0] == "-run") == re.MatchString(name) {
				runs++
			}
		}
		if runs != 1 {
			t.Errorf("%s runs in %d shards, want 1", name, runs)
		}
	}
	if js := jobsFor("6.1", "github.com/pontoon-net/pontoon/maps", shards); len(js) != 1 || js[0].filter != nil {
		t.Errorf("an unsplit package got %v, want one whole job", js)
	}
}

func TestParseSplitRefusesBadSpecs(t *testing.T) {
	for _, s := range []string{"loader", "=^X$", "loader="} {
		if _, err := parseSplit(s); err == nil {
			t.Errorf("parseSplit(%q) accepted it", s)
		}
	}
}
