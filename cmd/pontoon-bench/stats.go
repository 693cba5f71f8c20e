package main

import (
	"slices"
)

// summary is several runs of one number: the median is what tables show,
// min and max say how far to trust it.
type summary struct {
	Runs   []float64 `json:"runs"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
}

func summarize(runs []float64) summary {
	if len(runs) == 0 {
		return summary{}
	}
	s := slices.Clone(runs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{Runs: runs, Median: med, Min: s[0], Max: s[len(s)-1]}
}

// ratio is performance relative to a reference, > 1 meaning better
// whichever way the metric points (rates up, latencies and costs down).
func ratio(v, ref float64, higherIsBetter bool) *float64 {
	if v <= 0 || ref <= 0 {
		return nil
	}
	r := v / ref
	if !higherIsBetter {
		r = ref / v
	}
	return &r
}
