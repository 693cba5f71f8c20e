package vmtest

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// flavour is the Debian kernel flavour booted: cloud-amd64 lacks 9p.
const flavour = "amd64"

// parseDepends returns the package names on the Depends lines of
// `apt-cache depends` output, in order. Virtual packages (<name>) are skipped:
// they name no package that can be downloaded.
func parseDepends(out string) []string {
	var deps []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "|")
		name, ok := strings.CutPrefix(line, "Depends:")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		if name == "" || strings.HasPrefix(name, "<") {
			continue
		}
		if i := strings.IndexAny(name, " ("); i >= 0 {
			name = name[:i]
		}
		deps = append(deps, name)
	}
	return deps
}

// imageTarget returns the kernel image package a meta-package points at, or
// "" when deps (of a real image package) name none.
func imageTarget(deps []string) string {
	for _, d := range deps {
		if strings.HasPrefix(d, "linux-image-") {
			return d
		}
	}
	return ""
}

// candidateMetas lists the meta-packages that may stand for a kernel series
// such as "6.12": Debian publishes linux-image-6.12-amd64 for backported
// series, while the release's own series is only linux-image-amd64.
func candidateMetas(spec string) []string {
	return []string{
		"linux-image-" + spec + "-" + flavour,
		"linux-image-" + flavour,
	}
}

// matchesSeries reports whether an image package belongs to series spec:
// linux-image-6.1.0-56-amd64 is in 6.1, not in 6.12 or 6.
func matchesSeries(pkg, spec string) bool {
	rest, ok := strings.CutPrefix(pkg, "linux-image-"+spec)
	return ok && (strings.HasPrefix(rest, ".") || strings.HasPrefix(rest, "-"))
}

// aptDepends runs `apt-cache depends name`; apt-cache prints nothing (and
// exits 0) for a package it does not know.
func aptDepends(ctx context.Context, aptOpts []string, name string) (found bool, deps []string, err error) {
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, "apt-cache", append(append([]string(nil), aptOpts...), "depends", name)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "No packages found") {
			return false, nil, nil
		}
		return false, nil, fmt.Errorf("apt-cache depends %s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	found = strings.HasPrefix(strings.TrimSpace(string(out)), name)
	return found, parseDepends(string(out)), nil
}

// resolvePackage turns a kernel spec (a series such as "6.1" or "6.12", or a
// package name) into the current linux-image package name; aptOpts point
// apt at a private configuration for an older release (nil: the system's).
func resolvePackage(ctx context.Context, aptOpts []string, spec string) (string, error) {
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return "", &MissingError{Tool: "apt-cache", Package: "apt"}
	}
	if strings.HasPrefix(spec, "linux-image-") {
		found, deps, err := aptDepends(ctx, aptOpts, spec)
		if err != nil {
			return "", err
		}
		if !found {
			return "", fmt.Errorf("no package %s in the apt lists: check the name or run apt-get update", spec)
		}
		if t := imageTarget(deps); t != "" {
			return t, nil
		}
		return spec, nil
	}
	var seen []string
	for _, meta := range candidateMetas(spec) {
		found, deps, err := aptDepends(ctx, aptOpts, meta)
		if err != nil {
			return "", err
		}
		if !found {
			continue
		}
		t := imageTarget(deps)
		if t != "" && matchesSeries(t, spec) {
			return t, nil
		}
		seen = append(seen, meta+" -> "+t)
	}
	if len(seen) == 0 {
		return "", fmt.Errorf("no Debian kernel package for %s: apt knows none of %s (run apt-get update?)",
			spec, strings.Join(candidateMetas(spec), ", "))
	}
	return "", fmt.Errorf("no Debian kernel package for %s: apt has %s; ask for one of those series or a linux-image package by name",
		spec, strings.Join(seen, ", "))
}
