package embedded

import (
	"context"
	"crypto/sha256"
	"testing"

	"github.com/cairnbackup/cairn/zfs"
)

// TestWriteAtHashed writes whole chunks with their known SHA-256, a chunk
// overwritten in part after that, and unaligned writes: the image reads
// back as written and its snapshot verifies, so a known sum is used only
// while the chunk still holds the bytes it was given for.
func TestWriteAtHashed(t *testing.T) {
	ctx := context.Background()
	p, _ := newTestPool(t, 0)
	cs := p.ChunkSize()
	const size = 1<<20 + 12345 // a short last chunk
	ds := agentDataset(t, p, "hashed")
	img := createOpen(t, p, ds, "vol", size)
	hw, ok := img.(zfs.HashedWriter)
	if !ok {
		t.Fatal("the embedded pool's live image is not a zfs.HashedWriter")
	}
	model := make([]byte, size)
	hashed := func(b []byte, off int64) {
		t.Helper()
		if _, err := hw.WriteAtHashed(b, off, sha256.Sum256(b)); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], b)
	}
	for i := int64(0); i < 8; i++ {
		hashed(randBytes(uint64(i), int(cs)), i*cs)
	}
	// The last, short chunk whole; then a partial write into chunk 2,
	// whose known sum must no longer be used.
	last := (size / cs) * cs
	hashed(randBytes(100, int(size-last)), last)
	writeModel(t, img, model, randBytes(101, 100), 2*cs+7)
	// Unaligned and larger than a chunk: stored by hashing.
	hashed(randBytes(102, int(cs)+3), 9*cs+1)
	check(t, img.Sync(), "sync")

	if got, want := imageSum(t, img, size), sha256.Sum256(model); got != want {
		t.Fatalf("image reads %x, wrote %x", got, want)
	}
	snap := snapOf(t, ds, "s1")
	if _, err := p.Snapshot(ctx, ds, "s1"); err != nil {
		t.Fatal(err)
	}
	rep, err := p.Verify(ctx, snap)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	check(t, img.Close(), "close")
	r, err := p.OpenSnapshotImage(ctx, snap, "vol")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, want := imageSum(t, r, size), sha256.Sum256(model); got != want {
		t.Fatalf("snapshot reads %x, wrote %x", got, want)
	}
}
