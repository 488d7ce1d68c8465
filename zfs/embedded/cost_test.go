package embedded

import (
	"context"
	"testing"

	"github.com/cairnbackup/cairn/zfs"
)

// TestCosts counts the bytes the pool writes (BytesWritten), not time:
// writing costs the chunks that change plus an index; a snapshot costs an
// index; identical data in another dataset costs no chunks at all.
func TestCosts(t *testing.T) {
	ctx := context.Background()
	p, dir := newTestPool(t, 0)
	cs := p.ChunkSize()
	const big = 256 << 20
	bigIndex := int64(len(newIndex(cs, big).marshal()))
	ds := agentDataset(t, p, "cost")
	img := createOpen(t, p, ds, "vol", big)

	written := func(what string, fn func()) int64 {
		t.Helper()
		before := p.BytesWritten()
		fn()
		n := p.BytesWritten() - before
		t.Logf("%s: %d bytes written", what, n)
		return n
	}

	n := written("1 byte into 256 MiB, then Sync", func() {
		check(t, writeAllAt(img, []byte{42}, 123456789), "write")
		check(t, img.Sync(), "sync")
	})
	if n < bigIndex || n >= 2*cs+bigIndex {
		t.Errorf("1 byte and Sync wrote %d bytes; want the index (%d) and at most about one chunk (< %d)", n, bigIndex, 2*cs+bigIndex)
	}

	n = written("Sync with nothing changed", func() { check(t, img.Sync(), "sync") })
	if n != 0 {
		t.Errorf("a Sync with nothing to do wrote %d bytes", n)
	}

	for _, open := range []bool{true, false} {
		if !open {
			check(t, img.Close(), "close")
		}
		name := map[bool]string{true: "s-open", false: "s-closed"}[open]
		n = written("Snapshot of an unchanged 256 MiB image ("+name+")", func() {
			_, err := p.Snapshot(ctx, ds, name)
			check(t, err, "snapshot")
		})
		if n < bigIndex || n > bigIndex+4096 {
			t.Errorf("snapshot %s of an unchanged image wrote %d bytes; want about its index, %d", name, n, bigIndex)
		}
	}

	// Dedup: the same data at the same offsets in another dataset.
	const size = 4<<20 + 1000
	data := randBytes(77, size)
	a, b := agentDataset(t, p, "dedup-a"), agentDataset(t, p, "dedup-b")
	smallIndex := int64(len(newIndex(cs, size).marshal()))
	for i, target := range []zfs.DatasetName{a, b} {
		check(t, p.CreateImage(ctx, target, "vol", size), "create image")
		im, err := p.OpenImage(ctx, target, "vol")
		check(t, err, "open image")
		chunksBefore := len(storedChunks(t, dir))
		n := written("4 MiB of data into dataset "+target.String(), func() {
			check(t, writeAllAt(im, data, 0), "write")
			check(t, im.Sync(), "sync")
		})
		check(t, im.Close(), "close")
		newChunks := len(storedChunks(t, dir)) - chunksBefore
		switch i {
		case 0:
			if n < size || newChunks != int(chunkCount(size, cs)) {
				t.Errorf("first copy wrote %d bytes, %d new chunks; want at least %d bytes, %d chunks", n, newChunks, size, chunkCount(size, cs))
			}
		case 1:
			if n != smallIndex || newChunks != 0 {
				t.Errorf("identical data wrote %d bytes and %d new chunks; want only its index, %d bytes", n, newChunks, smallIndex)
			}
		}
	}
}
