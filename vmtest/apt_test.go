package vmtest

import (
	"slices"
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
