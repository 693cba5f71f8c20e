package control

import (
	"github.com/pontoon-net/pontoon/maps"
)

// fillThresholds are the fill levels, in percent of a table's capacity,
// the agent warns at, once each on the way up.
var fillThresholds = []float64{80, 95}

// fillRearm is how far, in percent, a table must fall below a threshold
// before passing it again warns again: a table hovering at 80% warns once.
const fillRearm = 5

// fillEffect says what a full table does to traffic or to the API.
var fillEffect = map[string]string{
	"ct":        "when full, answered flows stay in ct_new (counter ct_not_promoted) where newer ones can evict them",
	"ct_new":    "an LRU: when full, the oldest unanswered flows are evicted",
	"snat":      "when full, new masqueraded flows are dropped (counter drop_snat_exhausted)",
	"bindings":  "when full, publishing ports fails",
	"endpoints": "when full, attaching endpoints fails",
}

// fillWarner remembers, by table, how many thresholds it has warned of.
type fillWarner struct{ warned map[string]int }

// fillChange is what one reading of a table's fill is worth logging: a
// threshold passed on the way up (Up), or Down when every threshold
// above the fill is re-armed.
type fillChange struct {
	Threshold float64
	Up        bool
}

// update takes a reading and says whether to log: at most one change per
// reading, naming the highest threshold passed when several were at once.
func (w *fillWarner) update(f maps.Fill) (fillChange, bool) {
	if w.warned == nil {
		w.warned = map[string]int{}
	}
	pct := f.Percent()
	reached, kept := 0, 0
	for _, t := range fillThresholds {
		if pct >= t {
			reached++
		}
		if pct >= t-fillRearm {
			kept++
		}
	}
	was := w.warned[f.Name]
	switch {
	case reached > was:
		w.warned[f.Name] = reached
		return fillChange{Threshold: fillThresholds[reached-1], Up: true}, true
	case kept < was:
		w.warned[f.Name] = kept
		return fillChange{Threshold: fillThresholds[kept]}, true
	}
	return fillChange{}, false
}

// warnFill reads how full each table is and logs thresholds passed.
func (a *Agent) warnFill(w *fillWarner) {
	for _, t := range a.tables() {
		n, err := maps.CountEntries(t.m)
		if err != nil {
			a.log.Warn("read table fill", "map", t.name, "err", err)
			continue
		}
		f := maps.Fill{Name: t.name, Entries: n, Capacity: int(t.m.MaxEntries())}
		c, ok := w.update(f)
		switch {
		case !ok:
		case c.Up:
			a.log.Warn("datapath table filling up", "map", f.Name, "entries", f.Entries, "capacity", f.Capacity,
				"passed_percent", c.Threshold, "effect", fillEffect[f.Name])
		default:
			a.log.Info("datapath table back below threshold", "map", f.Name, "entries", f.Entries, "capacity", f.Capacity,
				"below_percent", c.Threshold)
		}
	}
}
