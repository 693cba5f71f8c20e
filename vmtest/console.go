package vmtest

import (
	"strconv"
	"strings"
)

// markerWord starts every line the guest scripts write for the host. Each
// run adds a random nonce, so a command that prints marker-like text (this
// package's own tests do) cannot forge its exit status.
const markerWord = "PONTOON-VMTEST"

type eventKind int

const (
	evStart eventKind = iota + 1 // the guest is up and the command starts
	evExit                       // the command ended with code
	evError                      // the guest could not set itself up
)

type event struct {
	kind eventKind
	code int
	text string // evError: the reason; evStart: the systemd state, if any
}

// jobParser separates the markers from the command's output on the job tty.
type jobParser struct {
	prefix string
}

func newJobParser(nonce string) *jobParser {
	return &jobParser{prefix: markerWord + " " + nonce + " "}
}

// line takes one line read from the job tty (with its newline, if it had
// one) and returns the output to pass on and the marker event it held, if
// any. A marker may follow output that did not end in a newline.
func (p *jobParser) line(l string) (string, *event) {
	l = strings.ReplaceAll(l, "\r\n", "\n")
	i := strings.Index(l, p.prefix)
	if i < 0 {
		return l, nil
	}
	ev := parseEvent(strings.TrimRight(l[i+len(p.prefix):], "\r\n"))
	if ev == nil {
		return l, nil
	}
	out := l[:i]
	if out != "" {
		out += "\n"
	}
	return out, ev
}

func parseEvent(s string) *event {
	word, rest, _ := strings.Cut(s, " ")
	switch word {
	case "start":
		state, _ := strings.CutPrefix(rest, "systemd=")
		return &event{kind: evStart, text: state}
	case "exit":
		code, err := strconv.Atoi(strings.TrimSpace(rest))
		if err != nil || code < 0 || code > 255 {
			return nil
		}
		return &event{kind: evExit, code: code}
	case "error":
		return &event{kind: evError, text: rest}
	}
	return nil
}

// lineRing keeps the last lines of a stream, for error messages.
type lineRing struct {
	max   int
	lines []string
}

func (r *lineRing) add(l string) {
	l = strings.TrimRight(l, "\r\n")
	r.lines = append(r.lines, l)
	if len(r.lines) > r.max {
		r.lines = r.lines[len(r.lines)-r.max:]
	}
}

func (r *lineRing) String() string { return strings.Join(r.lines, "\n") }

// failedTest returns the test name on a `go test -v` "--- FAIL: Name (0.01s)"
// line, so that errors name the tests that failed.
func failedTest(l string) (string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimLeft(l, " \t"), "--- FAIL: ")
	if !ok {
		return "", false
	}
	name, _, _ := strings.Cut(rest, " ")
	name = strings.TrimSpace(name)
	return name, name != ""
}
