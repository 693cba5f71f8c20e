package vmtest

import (
	"slices"
	"strings"
	"testing"
)

func TestParseDepends(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want []string
	}{
		{
			name: "meta-package",
			out:  "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n",
			want: []string{"linux-image-6.1.0-56-amd64"},
		},
		{
			name: "image package with alternatives and a virtual package",
			out: "linux-image-6.1.0-56-amd64\n  Depends: kmod\n  Depends: linux-base\n" +
				" |Depends: initramfs-tools\n  Depends: <linux-initramfs-tool>\n    dracut\n" +
				"  Recommends: firmware-linux-free\n  Suggests: debian-kernel-handbook\n  Breaks: fwupdate (<< 12-7)\n",
			want: []string{"kmod", "linux-base", "initramfs-tools"},
		},
		{name: "unknown package", out: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseDepends(tt.out); !slices.Equal(got, tt.want) {
				t.Errorf("parseDepends = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestImageTarget(t *testing.T) {
	if got := imageTarget([]string{"linux-image-6.12.117+deb12-amd64"}); got != "linux-image-6.12.117+deb12-amd64" {
		t.Errorf("meta-package target = %q", got)
	}
	if got := imageTarget([]string{"kmod", "linux-base", "initramfs-tools"}); got != "" {
		t.Errorf("an image package's dependencies gave target %q, want none", got)
	}
}

func TestMatchesSeries(t *testing.T) {
	tests := []struct {
		pkg, spec string
		want      bool
	}{
		{"linux-image-6.1.0-56-amd64", "6.1", true},
		{"linux-image-6.12.117+deb12-amd64", "6.12", true},
		{"linux-image-6.12.117+deb12-amd64", "6.1", false},
		{"linux-image-6.1.0-56-amd64", "6.12", false},
		{"linux-image-6.1.0-56-amd64", "6", true},
		{"linux-image-6.10.1-amd64", "6.1", false},
	}
	for _, tt := range tests {
		if got := matchesSeries(tt.pkg, tt.spec); got != tt.want {
			t.Errorf("matchesSeries(%s, %s) = %v, want %v", tt.pkg, tt.spec, got, tt.want)
		}
	}
}

func TestCandidateMetas(t *testing.T) {
	want := []string{"linux-image-6.12-amd64", "linux-image-amd64"}
	if got := candidateMetas("6.12"); !slices.Equal(got, want) {
		t.Errorf("candidateMetas(6.12) = %q, want %q", got, want)
	}
}

func TestOlderSuite(t *testing.T) {
	tests := map[string]string{
		"5.10":                             "bullseye",
		"linux-image-5.10.0-32-amd64":      "bullseye",
		"6.1":                              "",
		"linux-image-6.1.0-56-amd64":       "",
		"5.1":                              "",
		"linux-image-5.100.0-1-amd64":      "",
		"linux-image-6.12.117+deb12-amd64": "",
	}
	for spec, want := range tests {
		if got := olderSuite(spec); got != want {
			t.Errorf("olderSuite(%s) = %q, want %q", spec, got, want)
		}
	}
}

func TestParseSourcesList(t *testing.T) {
	in := "# deb http://old.example/debian bookworm main\n" +
		"deb-src http://src.example/debian bookworm main\n" +
		"deb http://security.example/debian-security bookworm-security main\n" +
		"deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.example/debian bookworm main contrib\n"
	e, ok := parseSourcesList(strings.NewReader(in), "bookworm")
	want := aptEntry{URI: "http://mirror.example/debian", SignedBy: "/usr/share/keyrings/k.gpg"}
	if !ok || e != want {
		t.Errorf("parseSourcesList = %+v, %v; want %+v", e, ok, want)
	}
	if e, ok := parseSourcesList(strings.NewReader(in), "trixie"); ok {
		t.Errorf("found %+v for a suite no line names", e)
	}
}

func TestParseDeb822(t *testing.T) {
	// The machine's own debian.sources: the security stanza names only
	// bookworm-security and must not be taken.
	in := "Types: deb\n# http://snapshot.debian.org/archive/debian-security/20250520T000000Z\n" +
		"URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n" +
		"Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n" +
		"Types: deb deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n" +
		"Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
	e, ok := parseDeb822(strings.NewReader(in), "bookworm")
	want := aptEntry{URI: "http://deb.debian.org/debian", SignedBy: "/usr/share/keyrings/debian-archive-keyring.gpg"}
	if !ok || e != want {
		t.Errorf("parseDeb822 = %+v, %v; want %+v", e, ok, want)
	}
	inline := "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n"
	e, ok = parseDeb822(strings.NewReader(inline), "bookworm")
	if !ok || e != (aptEntry{URI: "http://m.example/debian"}) {
		t.Errorf("inline key: parseDeb822 = %+v, %v; want the URI without a keyring", e, ok)
	}
	disabled := "Enabled: no\nTypes: deb\nURIs: http://m.example/debian\nSuites: bookworm\n"
	if e, ok := parseDeb822(strings.NewReader(disabled), "bookworm"); ok {
		t.Errorf("took the disabled source %+v", e)
	}
}
