package embedded

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/zfs"
)

// TestPersistence: what was written is there after the pool is closed and
// opened again, whether it was synced, or only closed (Close syncs), or the
// image was still open when the pool closed (the pool's Close syncs).
func TestPersistence(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := openTestPool(t, dir, 0)
	cs := p.ChunkSize()
	size := 3*cs + 5
	ds := agentDataset(t, p, "persist")
	tests := []struct {
		image string
		end   func(img zfs.Image) error // what happens to the handle before the pool closes
	}{
		{"synced", func(img zfs.Image) error { return errors.Join(img.Sync(), img.Close()) }},
		{"closed", func(img zfs.Image) error { return img.Close() }},
		{"left-open", func(zfs.Image) error { return nil }},
	}
	models := make(map[string][]byte)
	var leftOpen []zfs.Image
	for i, tc := range tests {
		img := createOpen(t, p, ds, tc.image, size)
		m := make([]byte, size)
		writeModel(t, img, m, randBytes(uint64(i), int(cs)), cs)     // a whole chunk
		writeModel(t, img, m, randBytes(uint64(i+10), 100), 2*cs-50) // across two chunks
		writeModel(t, img, m, randBytes(uint64(i+20), 5), size-5)    // the short last chunk
		check(t, tc.end(img), "end "+tc.image)
		models[tc.image] = m
		if tc.image == "left-open" {
			leftOpen = append(leftOpen, img)
		}
	}
	_, err := p.Snapshot(ctx, ds, "s1")
	check(t, err, "snapshot")
	// Written after the snapshot and never synced by hand.
	writeModel(t, leftOpen[0], models["left-open"], []byte("after the snapshot"), 7)
	check(t, p.Close(), "close pool")
	check(t, leftOpen[0].Close(), "close an image after its pool") // nothing left to sync

	p = openTestPool(t, dir, 0)
	defer p.Close()
	for _, tc := range tests {
		img, err := p.OpenImage(ctx, ds, tc.image)
		check(t, err, "reopen "+tc.image)
		if imageSum(t, img, size) != sha256.Sum256(models[tc.image]) {
			t.Errorf("image %s lost writes across close and open", tc.image)
		}
		check(t, img.Close(), "close")
	}
	s1 := snapOf(t, ds, "s1")
	verifyClean(t, p, s1)
	imgs, err := p.SnapshotImages(ctx, s1)
	check(t, err, "snapshot images")
	if len(imgs) != len(tests) {
		t.Fatalf("snapshot images %v", imgs)
	}
}

func TestOpenBusy(t *testing.T) {
	dir := t.TempDir()
	p := openTestPool(t, dir, 0)
	if q, err := Open(Config{Dir: dir}); !errors.Is(err, zfs.ErrBusy) {
		if q != nil {
			q.Close()
		}
		t.Fatalf("second open of an open pool: %v, want ErrBusy", err)
	}
	check(t, p.Close(), "close")
	p = openTestPool(t, dir, 0)
	check(t, p.Close(), "close after reopen")
}

// TestOpenBadPoolJSON: a pool.json this version cannot use is refused with
// an error that says why, and the refusal leaves the pool unlocked.
func TestOpenBadPoolJSON(t *testing.T) {
	tests := []struct {
		name, json, errHas string
	}{
		{"future format", `{"format":2,"name":"tank","chunk_size":65536}`, "format 2"},
		{"no format", `{"name":"tank","chunk_size":65536}`, "format 0"},
		{"not json", `format=1`, "pool.json"},
		{"zero chunk size", `{"format":1,"name":"tank","chunk_size":0}`, "chunk size"},
		{"odd chunk size", `{"format":1,"name":"tank","chunk_size":5000}`, "chunk size"},
		{"huge chunk size", `{"format":1,"name":"tank","chunk_size":1073741824}`, "chunk size"},
		{"name with a slash", `{"format":1,"name":"tank/x","chunk_size":65536}`, "name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			check(t, openTestPool(t, dir, 0).Close(), "create pool")
			meta := filepath.Join(dir, "pool.json")
			check(t, os.WriteFile(meta, []byte(tc.json), 0o600), "write pool.json")
			p, err := Open(Config{Dir: dir})
			if err == nil {
				p.Close()
				t.Fatalf("open with pool.json %s succeeded", tc.json)
			}
			if !strings.Contains(err.Error(), tc.errHas) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("open with pool.json %s: %q; want an error naming the pool and %q", tc.json, err, tc.errHas)
			}
			check(t, os.WriteFile(meta, []byte(`{"format":1,"name":"tank","chunk_size":65536}`), 0o600), "fix pool.json")
			p = openTestPool(t, dir, 0)
			check(t, p.Close(), "close")
		})
	}
}
