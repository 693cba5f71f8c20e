package control

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pontoon-net/pontoon/loader/testenv"
)

// BenchmarkValidateSubnet: the check a network create makes, in a
// namespace with 1,000 bridges each carrying a /24 (what 1,000 networks
// leave), so its cost per create can be compared with create's own.
func BenchmarkValidateSubnet(b *testing.B) {
	testenv.RequirePrivileges(b)
	ns := testenv.NewNetns(b, "ppv"+testenv.UniqueID(b))
	var batch strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&batch, "link add vb%d type bridge\naddr add 10.%d.%d.1/24 dev vb%d\nlink set vb%d up\n", i, 100+i/256, i%256, i, i)
	}
	file := filepath.Join(b.TempDir(), "batch")
	if err := os.WriteFile(file, []byte(batch.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	ns.IP(b, "-batch", file)
	a := &Agent{st: &state{networks: map[string]*Network{}}, uplinks: map[int]Uplink{}}
	p, gw := netip.MustParsePrefix("10.99.0.0/24"), netip.MustParseAddr("10.99.0.1")
	b.ResetTimer()
	err := ns.Do(func() error {
		for range b.N {
			if err := a.validateSubnet(p, gw, false, "pt-x"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
