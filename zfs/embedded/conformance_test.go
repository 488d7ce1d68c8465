package embedded_test

import (
	"testing"

	"github.com/cairnbackup/cairn/zfs"
	"github.com/cairnbackup/cairn/zfs/embedded"
	"github.com/cairnbackup/cairn/zfs/zfstest"
)

func newPool(t *testing.T) *embedded.Pool {
	t.Helper()
	p, err := embedded.Open(embedded.Config{Dir: t.TempDir(), Name: "tank"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close pool: %v", err)
		}
	})
	return p
}

func TestConformance(t *testing.T) {
	zfstest.Run(t, func(t *testing.T) zfs.Pool { return newPool(t) })
}

// TestConformanceBuffered runs the suite with packs written through the
// page cache, as where O_DIRECT is refused.
func TestConformanceBuffered(t *testing.T) {
	zfstest.Run(t, func(t *testing.T) zfs.Pool {
		p := newPool(t)
		embedded.WriteBuffered(p)
		return p
	})
}
