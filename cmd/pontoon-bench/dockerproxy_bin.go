package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// proxyBinary is the docker-proxy used and where it came from.
type proxyBinary struct {
	Path    string `json:"path"`
	Package string `json:"package"`
}

// findDockerProxy returns docker-proxy from Debian's docker.io package:
// the one given, an installed one, or one unpacked from the package into
// cacheDir. Unpacking instead of installing is deliberate: the package's
// maintainer scripts start dockerd, which would rewrite the host's own
// firewall and add docker0 to it.
func findDockerProxy(ctx context.Context, given, cacheDir string) (proxyBinary, error) {
	if given != "" {
		if _, err := os.Stat(given); err != nil {
			return proxyBinary{}, fmt.Errorf("docker-proxy %s: %w", given, err)
		}
		return proxyBinary{Path: given, Package: "given with --docker-proxy"}, nil
	}
	if path, version, ok := installedDockerProxy(ctx); ok {
		return proxyBinary{Path: path, Package: "docker.io " + version + " (installed)"}, nil
	}
	return unpackDockerProxy(ctx, cacheDir)
}

// installedDockerProxy asks dpkg where the installed docker.io put it.
func installedDockerProxy(ctx context.Context) (string, string, bool) {
	version, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", "docker.io").Output()
	if err != nil {
		return "", "", false
	}
	files, err := exec.CommandContext(ctx, "dpkg", "-L", "docker.io").Output()
	if err != nil {
		return "", "", false
	}
	for _, f := range strings.Split(string(files), "\n") {
		if filepath.Base(f) == "docker-proxy" {
			if st, err := os.Stat(f); err == nil && !st.IsDir() {
				return f, string(version), true
			}
		}
	}
	return "", "", false
}

// unpackDockerProxy downloads docker.io with apt and unpacks docker-proxy
// alone, once; later runs reuse it.
func unpackDockerProxy(ctx context.Context, cacheDir string) (proxyBinary, error) {
	dir, err := filepath.Abs(filepath.Join(cacheDir, "docker.io"))
	if err != nil {
		return proxyBinary{}, err
	}
	bin := filepath.Join(dir, "docker-proxy")
	versionFile := filepath.Join(dir, "VERSION")
	if version, err := os.ReadFile(versionFile); err == nil {
		if _, err := os.Stat(bin); err == nil {
			return proxyBinary{Path: bin, Package: "docker.io " + strings.TrimSpace(string(version)) + " (unpacked)"}, nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return proxyBinary{}, fmt.Errorf("create %s: %w", dir, err)
	}
	fmt.Fprintf(os.Stderr, "pontoon-bench: fetching docker-proxy from Debian's docker.io package into %s\n", dir)
	download := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", "docker.io")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get download docker.io: %w: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := download(); err != nil {
		// A fresh machine has no package lists yet.
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
			return proxyBinary{}, fmt.Errorf("%w; apt-get update: %v: %s", err, uerr, out)
		}
		if err := download(); err != nil {
			return proxyBinary{}, err
		}
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "docker.io_*.deb"))
	if len(debs) == 0 {
		return proxyBinary{}, errors.New("apt-get download docker.io left no .deb behind")
	}
	deb := debs[len(debs)-1]
	defer func() {
		for _, d := range debs {
			os.Remove(d)
		}
	}()
	version, err := exec.CommandContext(ctx, "dpkg-deb", "-f", deb, "Version").Output()
	if err != nil {
		return proxyBinary{}, fmt.Errorf("read version of %s: %w", deb, err)
	}
	// dpkg-deb -c shows where the package puts it; Debian 12 uses
	// /usr/sbin, other releases /usr/libexec/docker.
	list, err := exec.CommandContext(ctx, "dpkg-deb", "-c", deb).Output()
	if err != nil {
		return proxyBinary{}, fmt.Errorf("list %s: %w", deb, err)
	}
	var member string
	for _, line := range strings.Split(string(list), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 0 && filepath.Base(fields[len(fields)-1]) == "docker-proxy" {
			member = fields[len(fields)-1]
		}
	}
	if member == "" {
		return proxyBinary{}, fmt.Errorf("%s has no docker-proxy", deb)
	}
	extract := fmt.Sprintf("dpkg-deb --fsys-tarfile %q | tar -x -C %q %q", deb, dir, member)
	if out, err := exec.CommandContext(ctx, "sh", "-c", extract).CombinedOutput(); err != nil {
		return proxyBinary{}, fmt.Errorf("unpack docker-proxy: %w: %s", err, out)
	}
	if err := os.Rename(filepath.Join(dir, filepath.Clean(member)), bin); err != nil {
		return proxyBinary{}, fmt.Errorf("move docker-proxy into place: %w", err)
	}
	if err := os.WriteFile(versionFile, version, 0o644); err != nil {
		return proxyBinary{}, err
	}
	return proxyBinary{Path: bin, Package: "docker.io " + strings.TrimSpace(string(version)) + " (unpacked)"}, nil
}
