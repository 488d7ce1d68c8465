package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/backup/backuptest"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/zfs"
)

const bs = agentv1.DefaultBlockSize

// TestFullThenIncrementals backs up a sparse volume (with a short last
// block) and a small one, changes them, backs up again several times, and
// checks that every recovery point restores to the bytes the agent had
// at its time and verifies.
func TestFullThenIncrementals(t *testing.T) {
	eachPool(t, func(t *testing.T, pool zfs.Pool) {
		f := newFixture(t, pool, nil)
		vols := map[string][]byte{
			"sda": backuptest.SparseImage(32<<20+4097, bs, 1),
			"sdb": backuptest.SparseImage(4<<20, bs, 2),
		}
		a := f.agent("web-1", vols)
		history := map[string]map[string][32]byte{}
		snapshotOf := func(j catalog.Job) string {
			t.Helper()
			if j.Snapshot == "" {
				t.Fatalf("job %d made no snapshot", j.ID)
			}
			history[j.Snapshot] = map[string][32]byte{"sda": sha256.Sum256(a.Volume("sda")), "sdb": sha256.Sum256(a.Volume("sdb"))}
			return j.Snapshot
		}

		j1 := f.mustSucceed("web-1")
		snapshotOf(j1)
		if j1.Progress.BytesWritten == 0 || j1.Progress.BytesTotal != int64(len(vols["sda"])+len(vols["sdb"])) {
			t.Errorf("first job's progress %+v", j1.Progress)
		}

		sda := a.Volume("sda")
		backuptest.Change(sda, bs, 10, 3)
		a.SetVolume("sda", sda)
		j2 := f.mustSucceed("web-1")
		snapshotOf(j2)
		req := a.Requests()[1]
		if len(req.GetVolumes()) != 2 || len(req.GetVolumes()[0].GetBaseManifest()) != 32 || req.GetVolumes()[0].GetFull() {
			t.Errorf("second request %v: want base manifests, no full read", req)
		}
		if !strings.Contains(j2.Detail, "sda: incremental") || !strings.Contains(j2.Detail, "sdb: incremental, 0 of 64 blocks sent") {
			t.Errorf("second job's detail %q", j2.Detail)
		}

		j3 := f.mustSucceed("web-1") // nothing changed
		snapshotOf(j3)
		if j3.Progress.BytesWritten != 0 {
			t.Errorf("unchanged incremental wrote %d bytes", j3.Progress.BytesWritten)
		}

		// An agent without its baseline reads everything; the appliance
		// writes nothing, as its image holds it all.
		a.ForgetBaseline()
		sdb := a.Volume("sdb")
		backuptest.Change(sdb, bs, 4, 4)
		a.SetVolume("sdb", sdb)
		j4 := f.mustSucceed("web-1")
		snapshotOf(j4)
		if !strings.Contains(j4.Detail, "sda: full") {
			t.Errorf("fourth job's detail %q: want a full read of sda", j4.Detail)
		}
		changed := 0
		for i := 0; i < len(sdb); i += bs {
			if !bytes.Equal(sdb[i:i+bs], vols["sdb"][i:i+bs]) {
				changed += bs
			}
		}
		if j4.Progress.BytesWritten != int64(changed) {
			t.Errorf("full read after a lost baseline wrote %d bytes, want %d (the changed blocks of sdb)", j4.Progress.BytesWritten, changed)
		}

		rps := f.points("web-1")
		if len(rps) != 4 {
			t.Fatalf("%d recovery points, want 4", len(rps))
		}
		for _, rp := range rps {
			f.assertPointSums("web-1", rp.Snapshot, history[rp.Snapshot])
			if rp.BlockSize != bs || len(rp.Images) != 2 || rp.Bytes != int64(len(vols["sda"])+len(vols["sdb"])) {
				t.Errorf("recovery point %+v", rp)
			}
		}
		if d := f.dirty("web-1"); len(d) != 0 {
			t.Errorf("dirty records left after successful jobs: %+v", d)
		}
		// Volumes are found by image name, volume ID or index.
		rp := rps[0]
		for _, name := range []string{rp.Images[1].Image, "sdb", "1"} {
			if got := f.restore("web-1", rp.Snapshot, name); sha256.Sum256(got) != history[rp.Snapshot]["sdb"] {
				t.Errorf("volume %q: not sdb's content", name)
			}
		}
		if _, err := f.r.OpenVolume(context.Background(), "web-1", rp.Snapshot, "2"); !errors.Is(err, catalog.ErrNotFound) {
			t.Errorf("volume 2: %v, want ErrNotFound", err)
		}
	})
}
