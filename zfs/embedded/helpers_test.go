package embedded

// Helpers shared by the package's internal tests (crash, GC, corruption,
// costs, persistence, fuzz). The conformance suite and the benchmark are in
// package embedded_test and have their own.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/zfs"
)

const testPoolName = "tank"

// openTestPool opens the pool in dir; the caller closes it.
func openTestPool(t testing.TB, dir string, maxDirty int64) *Pool {
	t.Helper()
	p, err := Open(Config{Dir: dir, Name: testPoolName, MaxDirty: maxDirty})
	if err != nil {
		t.Fatalf("open pool %s: %v", dir, err)
	}
	return p
}

// newTestPool opens a pool in a new temporary directory and closes it when
// the test ends.
func newTestPool(t testing.TB, maxDirty int64) (*Pool, string) {
	t.Helper()
	dir := t.TempDir()
	p := openTestPool(t, dir, maxDirty)
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close pool: %v", err)
		}
	})
	return p, dir
}

func check(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// agentDataset creates root/agents/<id>.
func agentDataset(t testing.TB, p *Pool, id string) zfs.DatasetName {
	t.Helper()
	ds, err := zfs.AgentDataset(p.Root(), id)
	check(t, err, "dataset name")
	check(t, p.CreateDataset(context.Background(), ds), "create dataset "+ds.String())
	return ds
}

func snapOf(t testing.TB, ds zfs.DatasetName, snap string) zfs.SnapshotName {
	t.Helper()
	s, err := ds.Snapshot(snap)
	check(t, err, "snapshot name")
	return s
}

// createOpen creates an image and opens it; the caller closes it.
func createOpen(t testing.TB, p *Pool, ds zfs.DatasetName, image string, size int64) zfs.Image {
	t.Helper()
	ctx := context.Background()
	check(t, p.CreateImage(ctx, ds, image, size), "create image "+image)
	img, err := p.OpenImage(ctx, ds, image)
	check(t, err, "open image "+image)
	return img
}

// randBytes returns n deterministic pseudo-random (incompressible) bytes.
func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var key [32]byte
	key[0], key[1], key[2], key[3] = byte(seed), byte(seed>>8), byte(seed>>16), byte(seed>>24)
	key[4], key[5], key[6], key[7] = byte(seed>>32), byte(seed>>40), byte(seed>>48), byte(seed>>56)
	rand.NewChaCha8(key).Read(b)
	return b
}

// writeModel writes b at off to img and to the model m.
func writeModel(t testing.TB, img zfs.Image, m []byte, b []byte, off int64) {
	t.Helper()
	n, err := img.WriteAt(b, off)
	if err != nil || n != len(b) {
		t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", len(b), off, n, err)
	}
	copy(m[off:], b)
}

// readerSum hashes size bytes of r, read in odd-sized pieces.
func readerSum(r io.ReaderAt, size int64) ([32]byte, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.NewSectionReader(r, 0, size), make([]byte, 100003))
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s, err
}

func imageSum(t testing.TB, r io.ReaderAt, size int64) [32]byte {
	t.Helper()
	s, err := readerSum(r, size)
	check(t, err, "read image")
	return s
}

// snapSum hashes one image of a snapshot.
func snapSum(t testing.TB, p *Pool, snap zfs.SnapshotName, image string) [32]byte {
	t.Helper()
	r, err := p.OpenSnapshotImage(context.Background(), snap, image)
	check(t, err, "open snapshot image "+snap.String()+":"+image)
	defer r.Close()
	return imageSum(t, r, r.Size())
}

// verifyClean fails unless snap verifies without problems.
func verifyClean(t testing.TB, p *Pool, snap zfs.SnapshotName) zfs.VerifyReport {
	t.Helper()
	rep, err := p.Verify(context.Background(), snap)
	check(t, err, "verify "+snap.String())
	if !rep.OK() {
		t.Fatalf("verify %s: %d problems, first %+v", snap, len(rep.Problems), rep.Problems[0])
	}
	return rep
}

// diskPack is a sealed pack as its files on disk describe it.
type diskPack struct {
	size int64 // of the .pack file
	recs []tocRec
}

// sealedPacksOnDisk reads every pack's TOC in the pool in dir, independently
// of any open pool.
func sealedPacksOnDisk(t testing.TB, dir string) map[uint32]diskPack {
	t.Helper()
	out := make(map[uint32]diskPack)
	paths, err := filepath.Glob(filepath.Join(dir, "packs", "*.toc"))
	check(t, err, "list TOCs")
	for _, path := range paths {
		id, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(path), ".toc"), 16, 32)
		check(t, err, "TOC name")
		b, err := os.ReadFile(path)
		check(t, err, "read TOC")
		recs, err := parseTOC(b)
		check(t, err, "parse "+path)
		info, err := os.Stat(strings.TrimSuffix(path, ".toc") + ".pack")
		check(t, err, "pack of "+path)
		out[uint32(id)] = diskPack{size: info.Size(), recs: recs}
	}
	return out
}

// storedChunks maps every chunk in a sealed pack of the pool in dir to the
// size of its record.
func storedChunks(t testing.TB, dir string) map[digest]int64 {
	t.Helper()
	out := make(map[digest]int64)
	for _, pk := range sealedPacksOnDisk(t, dir) {
		for _, r := range pk.recs {
			out[r.sum] = recordHeader + int64(r.n)
		}
	}
	return out
}

// chunkLoc finds the pack and record of chunk d on disk.
func chunkLoc(t testing.TB, dir string, d digest) (uint32, tocRec) {
	t.Helper()
	for id, pk := range sealedPacksOnDisk(t, dir) {
		for _, r := range pk.recs {
			if r.sum == d {
				return id, r
			}
		}
	}
	t.Fatalf("chunk %s is in no sealed pack", d)
	return 0, tocRec{}
}

func packFile(dir string, id uint32, ext string) string {
	return filepath.Join(dir, "packs", fmt.Sprintf("%08x%s", id, ext))
}

// referencedChunks returns the chunks named by any index file of the pool
// in dir, read independently of the pool.
func referencedChunks(t testing.TB, dir string) map[digest]struct{} {
	t.Helper()
	out := make(map[digest]struct{})
	err := filepath.WalkDir(filepath.Join(dir, "datasets"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, indexExt) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		ix, err := parseIndex(b)
		if err != nil {
			return err
		}
		for _, e := range ix.entries {
			if !e.sum.isHole() {
				out[e.sum] = struct{}{}
			}
		}
		return nil
	})
	check(t, err, "read index files")
	return out
}

// indexPath is the file of a live image's index.
func indexPath(t testing.TB, p *Pool, ds zfs.DatasetName, image string) string {
	t.Helper()
	dir, err := p.dsPath(ds)
	check(t, err, "dataset path")
	return filepath.Join(dir, imagesDir, image+indexExt)
}

// snapIndex reads the index of one image of a snapshot.
func snapIndex(t testing.TB, p *Pool, snap zfs.SnapshotName, image string) *index {
	t.Helper()
	ix, err := p.snapshotIndex(context.Background(), snap, image)
	check(t, err, "snapshot index")
	return ix
}

// waitBlocked waits, for at most 10 s, until some goroutine whose stack
// contains every one of funcs is blocked on a lock or a channel, or until
// done is closed. It reports whether it saw the goroutine blocked. It polls
// the goroutine dump: the only way to know from outside that a goroutine
// has reached a lock.
func waitBlocked(t testing.TB, done <-chan struct{}, funcs ...string) bool {
	t.Helper()
	buf := make([]byte, 1<<20)
	for start := time.Now(); time.Since(start) < 10*time.Second; runtime.Gosched() {
		select {
		case <-done:
			return false
		default:
		}
		n := runtime.Stack(buf, true)
		for _, g := range bytes.Split(buf[:n], []byte("\n\n")) {
			header, _, _ := bytes.Cut(g, []byte("\n"))
			if !bytes.Contains(header, []byte("[sync.")) && !bytes.Contains(header, []byte("[select")) &&
				!bytes.Contains(header, []byte("[chan ")) && !bytes.Contains(header, []byte("[semacquire")) {
				continue
			}
			all := true
			for _, f := range funcs {
				all = all && bytes.Contains(g, []byte(f))
			}
			if all {
				return true
			}
		}
	}
	t.Fatalf("no goroutine in %v blocked within 10 s", funcs)
	return false
}

// allStacks is a dump of every goroutine, for a failure message.
func allStacks() string {
	buf := make([]byte, 4<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

func isErr(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
