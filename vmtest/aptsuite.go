package vmtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// olderSuites names the Debian release that ships a kernel series the
// machine's own release does not: Debian 11 is the one with 5.10.
var olderSuites = map[string]string{"5.10": "bullseye"}

// hostSuite is the release whose mirror the machine's apt sources name; an
// older release is fetched from the same mirror.
const hostSuite = "bookworm"

// aptListsMaxAge is how long a private release's package lists are used
// before they are fetched again (kernels there get security updates).
const aptListsMaxAge = 24 * time.Hour

// olderSuite returns the older release spec (a series or a linux-image
// package name) belongs to, or "" for the machine's own release.
func olderSuite(spec string) string {
	for series, suite := range olderSuites {
		if spec == series || matchesSeries(spec, series) {
			return suite
		}
	}
	return ""
}

// aptEntry is one source from the machine's apt configuration.
type aptEntry struct {
	URI      string
	SignedBy string // a keyring path, or ""
}

// parseSourcesList reads one-line entries ("deb [opts] URI suite comp...")
// and returns the first whose suite is exactly suite.
func parseSourcesList(r io.Reader, suite string) (aptEntry, bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		var e aptEntry
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 {
				opt := strings.Trim(f[0], "[]")
				if k, v, ok := strings.Cut(opt, "="); ok && k == "signed-by" {
					e.SignedBy = v
				}
				end := strings.HasSuffix(f[0], "]")
				f = f[1:]
				if end {
					break
				}
			}
		}
		if len(f) >= 2 && f[1] == suite {
			e.URI = f[0]
			return e, true
		}
	}
	return aptEntry{}, false
}

// parseDeb822 reads deb822 stanzas (*.sources) and returns the first deb
// source listing suite.
func parseDeb822(r io.Reader, suite string) (aptEntry, bool) {
	stanza := map[string]string{}
	match := func() (aptEntry, bool) {
		defer clear(stanza)
		if !slices.Contains(strings.Fields(stanza["types"]), "deb") ||
			!slices.Contains(strings.Fields(stanza["suites"]), suite) ||
			strings.EqualFold(stanza["enabled"], "no") {
			return aptEntry{}, false
		}
		uris := strings.Fields(stanza["uris"])
		if len(uris) == 0 {
			return aptEntry{}, false
		}
		e := aptEntry{URI: uris[0]}
		// Signed-By may hold an inline key block; only a path is passed on.
		if sb := stanza["signed-by"]; strings.HasPrefix(sb, "/") && !strings.ContainsAny(sb, " \n") {
			e.SignedBy = sb
		}
		return e, true
	}
	var last string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			if e, ok := match(); ok {
				return e, true
			}
		case strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				stanza[last] += "\n" + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			stanza[last] = strings.TrimSpace(v)
		}
	}
	return match()
}

// hostMirror finds the machine's own bookworm source in dir
// (/etc/apt/sources.list.d), so that an older release comes from the same
// mirror the machine already uses.
func hostMirror(dir string) (aptEntry, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return aptEntry{}, fmt.Errorf("read apt sources: %w", err)
	}
	for _, ent := range ents {
		name := ent.Name()
		var parse func(io.Reader, string) (aptEntry, bool)
		switch filepath.Ext(name) {
		case ".sources":
			parse = parseDeb822
		case ".list":
			parse = parseSourcesList
		default:
			continue
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		e, ok := parse(f, hostSuite)
		f.Close()
		if ok {
			return e, nil
		}
	}
	return aptEntry{}, fmt.Errorf("no %s source in %s: add the machine's Debian mirror there", hostSuite, dir)
}

// privateApt returns the apt options that read suite's lists from a private
// folder under cache, refreshing them when they are missing or old. The
// system's sources, lists and package cache are never touched.
func privateApt(ctx context.Context, cache, suite string, log io.Writer) ([]string, error) {
	mirror, err := hostMirror("/etc/apt/sources.list.d")
	if err != nil {
		return nil, err
	}
	d := filepath.Join(cache, "apt", suite)
	for _, sub := range []string{"lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return nil, fmt.Errorf("create private apt folder: %w", err)
		}
	}
	opt := ""
	if mirror.SignedBy != "" {
		opt = "[signed-by=" + mirror.SignedBy + "] "
	}
	list := fmt.Sprintf("deb %s%s %s main\n", opt, mirror.URI, suite)
	src := filepath.Join(d, "sources.list")
	old, _ := os.ReadFile(src)
	if string(old) != list {
		if err := os.WriteFile(src, []byte(list), 0o644); err != nil {
			return nil, fmt.Errorf("write private apt sources: %w", err)
		}
	}
	opts := []string{
		"-o", "Dir::Etc::sourcelist=" + src,
		"-o", "Dir::Etc::sourceparts=-",
		"-o", "Dir::State::Lists=" + filepath.Join(d, "lists"),
		"-o", "Dir::Cache=" + filepath.Join(d, "cache"),
	}
	stamp := filepath.Join(d, "updated")
	if st, err := os.Stat(stamp); err == nil && string(old) == list && time.Since(st.ModTime()) < aptListsMaxAge {
		return opts, nil
	}
	fmt.Fprintf(log, "vmtest: fetching the %s package lists from %s\n", suite, mirror.URI)
	cmd := exec.CommandContext(ctx, "apt-get", append(slices.Clone(opts), "-q", "update")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("apt-get update for %s: %w\n%s", suite, err, tail(string(out), 10))
	}
	if err := os.WriteFile(stamp, nil, 0o644); err != nil {
		return nil, fmt.Errorf("mark %s lists fresh: %w", suite, err)
	}
	return opts, nil
}
