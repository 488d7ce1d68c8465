package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/zfs"
)

// corruptFixture is a snapshot s1 of an image whose chunk 3 is alone in its
// pack; the other chunks and the short last chunk are in another pack.
type corruptFixture struct {
	p     *Pool
	dir   string
	ds    zfs.DatasetName
	snap  zfs.SnapshotName
	size  int64
	m     []byte
	chunk digest // chunk 3
}

const corruptChunk = 3

func newCorruptFixture(t *testing.T, compressible bool) *corruptFixture {
	t.Helper()
	ctx := context.Background()
	p, dir := newTestPool(t, 0)
	cs := p.ChunkSize()
	f := &corruptFixture{p: p, dir: dir, size: 8*cs + 100}
	f.ds = agentDataset(t, p, "c")
	img := createOpen(t, p, f.ds, "vol", f.size)
	f.m = make([]byte, f.size)
	data := randBytes(5, int(f.size))
	if compressible {
		data = bytes.Repeat([]byte("cairn compresses this line well. "), int(f.size)/33+1)[:f.size]
		copy(data[corruptChunk*cs+100:], randBytes(6, 3000)) // distinct from the other chunks
	}
	writeModel(t, img, f.m, data[:corruptChunk*cs], 0)
	writeModel(t, img, f.m, data[(corruptChunk+1)*cs:], (corruptChunk+1)*cs)
	check(t, img.Sync(), "sync")
	writeModel(t, img, f.m, data[corruptChunk*cs:(corruptChunk+1)*cs], corruptChunk*cs)
	check(t, img.Close(), "close") // syncs: chunk 3 in a pack of its own
	_, err := p.Snapshot(ctx, f.ds, "s1")
	check(t, err, "snapshot")
	f.snap = snapOf(t, f.ds, "s1")
	f.chunk = snapIndex(t, p, f.snap, "vol").entries[corruptChunk].sum
	verifyClean(t, p, f.snap)
	return f
}

// wantOneProblem checks that Verify reports chunk 3 of vol, and only it, and
// that reading it fails with ErrCorrupt while the rest reads right.
func (f *corruptFixture) wantOneProblem(t *testing.T, p *Pool, errHas string) {
	t.Helper()
	ctx := context.Background()
	cs := p.ChunkSize()
	rep, err := p.Verify(ctx, f.snap)
	check(t, err, "verify")
	if len(rep.Problems) != 1 {
		t.Fatalf("verify found %d problems, want 1: %+v", len(rep.Problems), rep.Problems)
	}
	pr := rep.Problems[0]
	if pr.Image != "vol" || pr.Offset != corruptChunk*cs || pr.Length != cs || !strings.Contains(pr.Err, errHas) {
		t.Fatalf("problem %+v; want vol at %d, %d bytes, error with %q", pr, corruptChunk*cs, cs, errHas)
	}
	if rep.Images != 1 || rep.Bytes != f.size {
		t.Fatalf("verify report %+v", rep)
	}
	r, err := p.OpenSnapshotImage(ctx, f.snap, "vol")
	check(t, err, "open snapshot image")
	defer r.Close()
	buf := make([]byte, 1000)
	if _, err := r.ReadAt(buf, corruptChunk*cs+500); !errors.Is(err, zfs.ErrCorrupt) {
		t.Fatalf("reading the damaged chunk: %v, want ErrCorrupt", err)
	}
	// A read that spans the damage fails too, and the rest reads right.
	if _, err := r.ReadAt(make([]byte, 3*cs), (corruptChunk-1)*cs); !errors.Is(err, zfs.ErrCorrupt) {
		t.Fatalf("reading across the damaged chunk: %v, want ErrCorrupt", err)
	}
	for _, rng := range [][2]int64{{0, corruptChunk * cs}, {(corruptChunk + 1) * cs, f.size}} {
		got := make([]byte, rng[1]-rng[0])
		if _, err := r.ReadAt(got, rng[0]); err != nil && err != io.EOF {
			t.Fatalf("reading undamaged bytes %v: %v", rng, err)
		}
		if !bytes.Equal(got, f.m[rng[0]:rng[1]]) {
			t.Fatalf("undamaged bytes %v read wrong", rng)
		}
	}
}

func TestCorruptChunk(t *testing.T) {
	tests := []struct {
		name         string
		compressible bool
		at           func(r tocRec) int64 // offset in the pack of the byte to flip
		errHas       string
	}{
		{"raw data", false, func(r tocRec) int64 { return r.off + recordHeader + 1 + int64(r.n)/2 }, "checksum mismatch"},
		{"zstd data", true, func(r tocRec) int64 { return r.off + recordHeader + 1 + int64(r.n)/2 }, ""},
		{"encoding byte", false, func(r tocRec) int64 { return r.off + recordHeader }, "unknown encoding"},
		{"record length", false, func(r tocRec) int64 { return r.off + recordHeader - 1 }, "bad record header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newCorruptFixture(t, tc.compressible)
			id, rec := chunkLoc(t, f.dir, f.chunk)
			if enc := readPackByte(t, f.dir, id, rec.off+recordHeader); (enc == chunkZstd) != tc.compressible {
				t.Fatalf("chunk stored with encoding %d", enc)
			}
			flipPackByte(t, f.dir, id, tc.at(rec))
			f.wantOneProblem(t, f.p, tc.errHas)
			// The live image shares the chunk.
			img, err := f.p.OpenImage(context.Background(), f.ds, "vol")
			check(t, err, "open live image")
			defer img.Close()
			if _, err := img.ReadAt(make([]byte, 10), corruptChunk*f.p.ChunkSize()); !errors.Is(err, zfs.ErrCorrupt) {
				t.Fatalf("live read of the damaged chunk: %v", err)
			}
		})
	}
}

func readPackByte(t *testing.T, dir string, id uint32, off int64) byte {
	t.Helper()
	b, err := os.ReadFile(packFile(dir, id, ".pack"))
	check(t, err, "read pack")
	return b[off]
}

func flipPackByte(t *testing.T, dir string, id uint32, off int64) {
	t.Helper()
	path := packFile(dir, id, ".pack")
	b, err := os.ReadFile(path)
	check(t, err, "read pack")
	b[off] ^= 0x40
	check(t, os.WriteFile(path, b, 0o600), "write pack")
}

func TestMissingChunk(t *testing.T) {
	tests := []struct {
		name   string
		remove []string // files of the chunk's pack to delete
		errHas string
	}{
		// (Under the open pool, a pack deleted would still be read through
		// the pool's open handle on it: the test reopens the pool.)
		{"pack deleted", []string{".pack"}, "no such file"},
		{"pack and TOC deleted", []string{".pack", ".toc"}, "missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newCorruptFixture(t, false)
			id, _ := chunkLoc(t, f.dir, f.chunk)
			if n := len(sealedPacksOnDisk(t, f.dir)[id].recs); n != 1 {
				t.Fatalf("the chunk's pack holds %d chunks, want 1", n)
			}
			for _, ext := range tc.remove {
				check(t, os.Remove(packFile(f.dir, id, ext)), "remove")
			}
			check(t, f.p.Close(), "close")
			p := openTestPool(t, f.dir, 0)
			defer p.Close()
			f.wantOneProblem(t, p, tc.errHas)
		})
	}
}

func TestCorruptIndex(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		at   func(size int) int
	}{
		{"header", func(int) int { return 20 }},
		{"entry", func(size int) int { return indexHeaderSize + entrySize + 5 }},
		{"trailer", func(size int) int { return size - 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCorruptFixture(t, false)
			dir, err := f.p.snapDir(f.snap)
			check(t, err, "snapshot dir")
			path := filepath.Join(dir, "vol"+indexExt)
			b, err := os.ReadFile(path)
			check(t, err, "read index")
			b[tc.at(len(b))] ^= 1
			check(t, os.WriteFile(path, b, 0o600), "write index")
			_, err = f.p.OpenSnapshotImage(ctx, f.snap, "vol")
			if !errors.Is(err, zfs.ErrCorrupt) {
				t.Fatalf("open snapshot image with a damaged index: %v, want ErrCorrupt", err)
			}
			// Verify cannot read the image's chunk list at all; it fails
			// with ErrCorrupt rather than reporting (see the report).
			if _, err := f.p.Verify(ctx, f.snap); !errors.Is(err, zfs.ErrCorrupt) {
				t.Fatalf("verify with a damaged index: %v, want ErrCorrupt", err)
			}
			// The live image has its own index and is untouched.
			img, err := f.p.OpenImage(ctx, f.ds, "vol")
			check(t, err, "open live image")
			defer img.Close()
			if imageSum(t, img, f.size) != sha256.Sum256(f.m) {
				t.Fatal("live image reads wrong")
			}
		})
	}
}
