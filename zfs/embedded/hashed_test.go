package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/klauspost/compress/zstd"

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

// TestWriteAtEncoded writes whole chunks with their SHA-256 and the form
// they travelled in, as the backup path does with an agent's blocks: a
// zstd frame is stored as it is (the record is the frame, and reads back
// through the pool's decoder), a chunk said not to compress is stored raw
// without trying, a frame no smaller than its chunk is stored raw, an
// all-zero chunk is a hole whatever it came with, a chunk written twice is
// stored once, a chunk overwritten in part after that is compressed from
// its new content, and a chunk written with its hash only is compressed.
func TestWriteAtEncoded(t *testing.T) {
	ctx := context.Background()
	p, dir := newTestPool(t, 0)
	cs := int(p.ChunkSize())
	ds := agentDataset(t, p, "encoded")
	const chunks = 8
	img := createOpen(t, p, ds, "vol", int64(chunks*cs))
	ew, ok := img.(zfs.EncodedWriter)
	if !ok {
		t.Fatal("the embedded pool's live image is not a zfs.EncodedWriter")
	}
	// The agent's encoder options (agent/backup): fastest, no checksum.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	text := func(seed int) []byte { // compressible
		return bytes.Repeat([]byte(fmt.Sprintf("chunk %d of text that compresses. ", seed)), cs)[:cs]
	}
	model := make([]byte, chunks*cs)
	write := func(i int, b, frame []byte) {
		t.Helper()
		if _, err := ew.WriteAtEncoded(b, int64(i*cs), sha256.Sum256(b), frame); err != nil {
			t.Fatal(err)
		}
		copy(model[i*cs:], b)
	}
	write(0, text(0), enc.EncodeAll(text(0), nil))
	write(1, randBytes(1, cs), nil)
	write(2, randBytes(2, cs), enc.EncodeAll(randBytes(2, cs), nil)) // larger than the chunk
	write(3, make([]byte, cs), nil)
	write(4, make([]byte, cs), enc.EncodeAll(make([]byte, cs), nil))
	write(5, text(0), enc.EncodeAll(text(0), nil)) // the same as chunk 0
	write(6, text(6), enc.EncodeAll(text(6), nil))
	writeModel(t, img, model, []byte("overwritten"), int64(6*cs+100))
	// Written with its hash only: compressed by the pool.
	if _, err := img.(zfs.HashedWriter).WriteAtHashed(text(7), int64(7*cs), sha256.Sum256(text(7))); err != nil {
		t.Fatal(err)
	}
	copy(model[7*cs:], text(7))
	check(t, img.Sync(), "sync")
	if got, want := imageSum(t, img, int64(len(model))), sha256.Sum256(model); got != want {
		t.Fatalf("image reads %x, wrote %x", got, want)
	}
	check(t, img.Close(), "close")
	snap := snapOf(t, ds, "s1")
	if _, err := p.Snapshot(ctx, ds, "s1"); err != nil {
		t.Fatal(err)
	}
	verifyClean(t, p, snap)
	if got, want := snapSum(t, p, snap, "vol"), sha256.Sum256(model); got != want {
		t.Fatalf("snapshot reads %x, wrote %x", got, want)
	}

	ix := snapIndex(t, p, snap, "vol")
	for i, want := range []struct {
		hole  bool
		enc   byte
		frame []byte // the stored data when zstd, if it must be this frame
	}{
		{enc: chunkZstd, frame: enc.EncodeAll(text(0), nil)},
		{enc: chunkRaw},
		{enc: chunkRaw},
		{hole: true},
		{hole: true},
		{enc: chunkZstd, frame: enc.EncodeAll(text(0), nil)},
		{enc: chunkZstd}, // compressed by the pool from its new content
		{enc: chunkZstd},
	} {
		e := ix.entries[i]
		if e.sum.isHole() != want.hole {
			t.Fatalf("chunk %d: hole %v, want %v", i, e.sum.isHole(), want.hole)
		}
		if want.hole {
			continue
		}
		if e.sum != sha256.Sum256(model[i*cs:(i+1)*cs]) {
			t.Fatalf("chunk %d: indexed under the wrong digest", i)
		}
		raw, err := p.chunks.readRaw(e.sum)
		if err != nil {
			t.Fatal(err)
		}
		if raw[0] != want.enc {
			t.Errorf("chunk %d: stored with encoding %d, want %d", i, raw[0], want.enc)
		}
		if want.frame != nil && !bytes.Equal(raw[1:], want.frame) {
			t.Errorf("chunk %d: stored %d bytes, not the %d-byte frame it was written with", i, len(raw)-1, len(want.frame))
		}
	}
	if n := len(storedChunks(t, dir)); n != 5 {
		t.Errorf("%d chunks stored, want 5 (0 and 5 are one chunk; 3 and 4 are holes)", n)
	}
}
