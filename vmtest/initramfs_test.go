package vmtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSpec builds a guestSpec over a fake module tree whose folder name has
// a quote and a space, to exercise the config's quoting.
func fakeSpec(t *testing.T) guestSpec {
	t.Helper()
	dir := t.TempDir()
	bb := filepath.Join(dir, "busybox")
	if err := os.WriteFile(bb, []byte("fake busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	modRoot := filepath.Join(dir, "it's cached", "lib", "modules")
	rel := "6.1.0-99-amd64"
	mods := []string{"kernel/net/9p/9pnet.ko", "kernel/net/9p/9pnet_virtio.ko", "kernel/fs/9p/9p.ko"}
	for _, m := range mods {
		p := filepath.Join(modRoot, rel, m)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("module "+m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(dir, "hello.service")
	if err := os.WriteFile(src, []byte("[Unit]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return guestSpec{
		Busybox: bb, Release: rel, ModRoot: modRoot, Modules: mods,
		Nonce: "0123456789abcdef", Mode: modeSystemd,
		Shares: []share{{Tag: "rw0", Path: "/work/main"}},
		Files: []File{
			{Dst: "/etc/systemd/system/hello.service", Src: src},
			{Dst: "/usr/local/bin/probe", Data: []byte("#!/bin/sh\n"), Mode: 0o755},
		},
		Job:    "echo job\n",
		Limits: map[string]string{"n": "1024 4096", "l": "unlimited unlimited"},
	}
}

func buildEntries(t *testing.T, s guestSpec) map[string]cpioEntry {
	t.Helper()
	var buf bytes.Buffer
	if err := writeInitramfs(&buf, s); err != nil {
		t.Fatal(err)
	}
	entries := readCPIO(t, buf.Bytes())
	byName := map[string]cpioEntry{}
	for _, e := range entries {
		if _, dup := byName[e.name]; dup {
			t.Errorf("entry %s appears twice", e.name)
		}
		// The kernel creates nothing implicitly: a parent must come first.
		if parent := filepath.Dir(e.name); parent != "." {
			if p, ok := byName[parent]; !ok || p.mode&sIFDIR == 0 {
				t.Errorf("%s comes before its folder %s", e.name, parent)
			}
		}
		byName[e.name] = e
	}
	return byName
}

func TestInitramfsContent(t *testing.T) {
	s := fakeSpec(t)
	got := buildEntries(t, s)

	initScript, err := guestFS.ReadFile("guest/init.sh")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		mode uint32
		body string
	}{
		{"init", sIFREG | 0o755, string(initScript)},
		{"bin/busybox", sIFREG | 0o755, "fake busybox"},
		{"bin/sh", sIFLNK | 0o777, "busybox"},
		{"pontoon/job.sh", sIFREG | 0o755, "echo job\n"},
		{"pontoon/shares", sIFREG | 0o644, "rw0\t/work/main\n"},
		{"pontoon/files.list", sIFREG | 0o644, "0\t644\t/etc/systemd/system/hello.service\n1\t755\t/usr/local/bin/probe\n"},
		{"pontoon/files/0", sIFREG | 0o644, "[Unit]\n"},
		{"pontoon/files/1", sIFREG | 0o755, "#!/bin/sh\n"},
		{"lib/modules/6.1.0-99-amd64/kernel/fs/9p/9p.ko", sIFREG | 0o644, "module kernel/fs/9p/9p.ko"},
	}
	for _, c := range checks {
		e, ok := got[c.name]
		if !ok {
			t.Errorf("initramfs has no %s", c.name)
			continue
		}
		if e.mode != c.mode || string(e.body) != c.body {
			t.Errorf("%s = mode %o %q, want mode %o %q", c.name, e.mode, e.body, c.mode, c.body)
		}
	}
	if c := got["dev/console"]; c.mode != sIFCHR|0o600 || c.rmaj != 5 || c.rmin != 1 {
		t.Errorf("dev/console = %s, want char device 5:1", fmtEntry(c))
	}
	for _, name := range []string{"pontoon/stage2.sh", "pontoon/run.sh", "pontoon/pontoon-vmtest.service", "pontoon/pontoon-vmtest.target"} {
		if _, ok := got[name]; !ok {
			t.Errorf("initramfs has no %s", name)
		}
	}
}

// TestInitramfsConfigSourcesInShell sources the generated config with the
// host's sh and reads the values back.
func TestInitramfsConfigSourcesInShell(t *testing.T) {
	s := fakeSpec(t)
	got := buildEntries(t, s)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	if err := os.WriteFile(cfg, got["pontoon/config"].body, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", `. "$1"; printf '%s\n' "$MARKER" "$NONCE" "$KVER" "$MODULES" "$MODROOT" "$MODE" "$JOBTTY" "$LIMITS"`, "sh", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("source config: %v\n%s", err, out)
	}
	want := strings.Join([]string{
		markerWord, s.Nonce, s.Release, strings.Join(s.Modules, " "), s.ModRoot, modeSystemd, jobTTY,
		"l:unlimited:unlimited n:1024:4096",
	}, "\n") + "\n"
	if string(out) != want {
		t.Errorf("config read back as\n%s\nwant\n%s", out, want)
	}
}

func TestInitramfsRejectsBadPaths(t *testing.T) {
	s := fakeSpec(t)
	s.Files = []File{{Dst: "relative/path", Data: []byte("x")}}
	if err := writeInitramfs(&bytes.Buffer{}, s); err == nil {
		t.Error("a relative guest path was accepted")
	}
	s = fakeSpec(t)
	s.Shares = []share{{Tag: "rw0", Path: "/a\tb"}}
	if err := writeInitramfs(&bytes.Buffer{}, s); err == nil {
		t.Error("a shared path with a tab was accepted")
	}
	s = fakeSpec(t)
	s.Modules = append(s.Modules, "kernel/missing.ko")
	if err := writeInitramfs(&bytes.Buffer{}, s); err == nil {
		t.Error("a missing module file was accepted")
	}
}

// TestJobScriptQuoting runs a generated job script with the host's sh and
// checks that the command sees exactly its arguments, environment and folder.
func TestJobScriptQuoting(t *testing.T) {
	envPath, err := exec.LookPath("env")
	if err != nil {
		t.Skip("no env(1) on this host")
	}
	dir := filepath.Join(t.TempDir(), "a dir with 'quotes'")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"A=it's $HOME", "B=two  spaces", "C=line\nbreak"}
	argv := []string{"/bin/sh", "-c", `printf '[%s]\n' "$A" "$B" "$C" "$PWD" "$0" "$1" "${HOME-unset}"`, "arg with 'quote'", "$(not run)"}
	script := jobScript(envPath, dir, env, argv)
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("run job script: %v\n%s\nscript:\n%s", err, out, script)
	}
	want := "[it's $HOME]\n[two  spaces]\n[line\nbreak]\n[" + dir + "]\n[arg with 'quote']\n[$(not run)]\n[unset]\n"
	if string(out) != want {
		t.Errorf("job printed\n%s\nwant\n%s", out, want)
	}
}

func TestJobScriptMissingDir(t *testing.T) {
	envPath, err := exec.LookPath("env")
	if err != nil {
		t.Skip("no env(1) on this host")
	}
	dir := filepath.Join(t.TempDir(), "gone")
	cmd := exec.Command("sh", "-c", jobScript(envPath, dir, nil, []string{"/bin/true"}))
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 125 {
		t.Fatalf("exit = %v, want 125; output %s", err, out)
	}
	if !strings.Contains(string(out), "cannot enter "+dir) {
		t.Errorf("output %q does not name the folder", out)
	}
}
