package backup

import (
	"context"
	"testing"

	"github.com/cairnbackup/cairn/appliance/backup/backuptest"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/zfs"
)

// TestForgetNewestPoint deletes the newest recovery point (record and
// snapshot): the live image still holds its data, so the next backup must
// not trust the older point where they differ.
func TestForgetNewestPoint(t *testing.T) {
	f := newFixture(t, embeddedPool(t, t.TempDir()), nil)
	a := f.agent("n-1", map[string][]byte{"sda": backuptest.SparseImage(2<<20, bs, 100)})
	f.mustSucceed("n-1")
	older := a.Volume("sda")
	sda := a.Volume("sda")
	backuptest.Change(sda, bs, 2, 101)
	a.SetVolume("sda", sda)
	newest := f.mustSucceed("n-1")

	f.update(func(tx *catalog.Tx) error { return ForgetPoint(tx, "n-1", newest.Snapshot) })
	snap, _ := zfs.MustDatasetName(f.pool.Root().String() + "/agents/n-1").Snapshot(newest.Snapshot)
	if err := f.pool.DestroySnapshot(context.Background(), snap); err != nil {
		t.Fatal(err)
	}
	if d := f.dirty("n-1"); len(d) != 1 || d[0].Blocks != 32 {
		t.Fatalf("dirty records %+v, want the whole image", d)
	}
	// The agent reads the old content again; the image holds the newer.
	a.SetVolume("sda", older)
	a.ForgetBaseline()
	j := f.mustSucceed("n-1")
	f.assertPoint("n-1", j.Snapshot, map[string][]byte{"sda": older})
}
