package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestStagedReads writes more than a pack holds, flushing chunks into packs
// as it goes, and reads everything back before any barrier: records still
// staged in memory for O_DIRECT, in segments being written, in the pack that
// rolled over and is written in the background, and on disk, including
// records that straddle two segments. Partial writes read the chunk they
// change the same way. After Sync, the packs hold exactly their records
// (the padding of the last segment is cut off), and a reopened pool reads
// the image back.
func TestStagedReads(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		name := map[bool]string{false: "direct", true: "buffered"}[buffered]
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p, dir := newTestPool(t, 4<<20)
			if buffered {
				WriteBuffered(p)
			}
			cs := p.ChunkSize()
			chunks := int64(maxPackSize/cs) + 80 // one pack and some of the next
			size := chunks*cs - 1000
			ds := agentDataset(t, p, "staged")
			img := createOpen(t, p, ds, "vol", size)
			model := make([]byte, size)
			for i := int64(0); i < chunks; i += 16 {
				writeModel(t, img, model, randBytes(uint64(i), int(min(16*cs, size-i*cs))), i*cs)
			}
			// A few partial writes into chunks already in packs.
			for _, off := range []int64{7, 3*cs + 100, 1000*cs - 5, size - 10} {
				writeModel(t, img, model, []byte("partial!"), off)
			}
			buf := make([]byte, 3*cs)
			for off := int64(0); off < size; off += int64(len(buf)) {
				n, _ := img.ReadAt(buf, off)
				if want := model[off:min(size, off+int64(len(buf)))]; !bytes.Equal(buf[:n], want) {
					t.Fatalf("before sync: %d bytes at %d differ from what was written", len(want), off)
				}
			}
			check(t, img.Sync(), "sync")
			if !buffered && p.chunks.noDirect.Load() {
				t.Errorf("the test directory's file system (%s) refused O_DIRECT, so the direct path went untested: set TMPDIR to a directory on a disk file system", dir)
			}
			for id, pk := range sealedPacksOnDisk(t, dir) {
				var end int64
				for _, r := range pk.recs {
					end = max(end, r.off+recordHeader+int64(r.n))
				}
				if pk.size != end {
					t.Errorf("pack %d: %d bytes on disk, its records end at %d", id, pk.size, end)
				}
			}
			check(t, img.Close(), "close")
			check(t, p.Close(), "close pool")
			p2 := openTestPool(t, dir, 0)
			defer p2.Close()
			r, err := p2.OpenImage(ctx, ds, "vol")
			check(t, err, "open image")
			defer r.Close()
			if got, want := imageSum(t, r, size), sha256.Sum256(model); got != want {
				t.Fatal("the reopened image differs from what was written")
			}
		})
	}
}

// TestDiskFullThenSpace fills a small tmpfs while an image is written:
// storing fails with ENOSPC (whether the packs are written with O_DIRECT or
// not), and once space is freed, Sync writes what failed and the image,
// reopened, holds everything written.
func TestDiskFullThenSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	for _, buffered := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "buffered"}[buffered], func(t *testing.T) {
			dir := t.TempDir()
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", dir).CombinedOutput(); err != nil {
				t.Fatalf("mount tmpfs: %v: %s", err, out)
			}
			t.Cleanup(func() {
				if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
					t.Errorf("umount %s: %v: %s", dir, err, out)
				}
			})
			filler := filepath.Join(dir, "filler")
			check(t, os.WriteFile(filler, make([]byte, 12<<20), 0o600), "write filler")
			pdir := filepath.Join(dir, "pool")
			p := openTestPool(t, pdir, 1<<20)
			defer p.Close()
			if buffered {
				WriteBuffered(p)
			}
			ctx := context.Background()
			cs := p.ChunkSize()
			size := 16 << 20
			ds := agentDataset(t, p, "full")
			img := createOpen(t, p, ds, "vol", int64(size))
			model := make([]byte, size)
			for off := 0; off < size; off += int(cs) {
				writeModel(t, img, model, randBytes(uint64(off), int(cs)), int64(off))
			}
			if err := img.Sync(); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("sync on a full file system: %v, want ENOSPC", err)
			}
			if !buffered && p.chunks.noDirect.Load() {
				t.Skip("tmpfs refuses O_DIRECT before Linux 6.6: only the buffered disk-full path ran here")
			}
			check(t, os.Remove(filler), "remove filler")
			check(t, img.Sync(), "sync once there is space")
			if got, want := imageSum(t, img, int64(size)), sha256.Sum256(model); got != want {
				t.Fatal("the image differs from what was written")
			}
			check(t, img.Close(), "close")
			check(t, p.Close(), "close pool")
			p2 := openTestPool(t, pdir, 0)
			defer p2.Close()
			r, err := p2.OpenImage(ctx, ds, "vol")
			check(t, err, "open image")
			defer r.Close()
			if got, want := imageSum(t, r, int64(size)), sha256.Sum256(model); got != want {
				t.Fatal("the reopened image differs from what was written")
			}
		})
	}
}
