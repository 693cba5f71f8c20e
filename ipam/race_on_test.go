//go:build race

package ipam

// raceEnabled: the race detector is on, whose instrumentation allocates
// on its own, so allocation counts mean nothing.
const raceEnabled = true
