package openzfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cairnbackup/cairn/zfs"
)

// VM-side tests of what only OpenZFS offers.

// fill writes n random bytes at off into image name of ds.
func fill(t *testing.T, p *Pool, ds zfs.DatasetName, name string, seed uint64, off int64, n int) {
	t.Helper()
	img, err := p.OpenImage(context.Background(), ds, name)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	rng := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, n)
	for i := 0; i+8 <= len(buf); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			buf[i+j] = byte(v >> (8 * j))
		}
	}
	if _, err := img.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
}

// sum hashes an image of a snapshot.
func sum(t *testing.T, p *Pool, snap zfs.SnapshotName, image string) [32]byte {
	t.Helper()
	r, err := p.OpenSnapshotImage(context.Background(), snap, image)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, r.Size())); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func child(t *testing.T, ds zfs.DatasetName, c string) zfs.DatasetName {
	t.Helper()
	d, err := ds.Child(c)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func snapOf(t *testing.T, ds zfs.DatasetName, s string) zfs.SnapshotName {
	t.Helper()
	n, err := ds.Snapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustNil(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantIs(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got %v, want %v", what, err, target)
	}
}

// TestBookmarkIncremental sends s1, destroys it on the source, and sends
// s2 incrementally from a bookmark of s1. It also shows that reading a
// received dataset's live files does not stop the next incremental
// receive (readonly=on).
func TestBookmarkIncremental(t *testing.T) {
	ctx := context.Background()
	p := newTestPool(t).Pool
	src := child(t, p.Root(), "src")
	mustNil(t, p.CreateDataset(ctx, src), "create")
	mustNil(t, p.CreateImage(ctx, src, "vol", 4<<20), "create image")
	fill(t, p, src, "vol", 1, 0, 4<<20)
	s1, err := p.Snapshot(ctx, src, "s1")
	mustNil(t, err, "snapshot s1")
	mustNil(t, p.Bookmark(ctx, s1.Name, "b1"), "bookmark")
	wantIs(t, p.Bookmark(ctx, s1.Name, "b1"), zfs.ErrExists, "bookmark twice")
	wantIs(t, p.Bookmark(ctx, snapOf(t, src, "nope"), "b2"), zfs.ErrNotFound, "bookmark of a missing snapshot")
	bms, err := p.Bookmarks(ctx, src)
	mustNil(t, err, "bookmarks")
	if len(bms) != 1 || bms[0].Name != "b1" || bms[0].CreateTxg != s1.CreateTxg || !bms[0].Created.Equal(s1.Created) {
		t.Fatalf("bookmarks = %+v, snapshot %+v", bms, s1)
	}

	dst := child(t, p.Root(), "replica")
	var full bytes.Buffer
	mustNil(t, p.Send(ctx, s1.Name, "", &full), "send s1")
	_, err = p.Receive(ctx, dst, &full)
	mustNil(t, err, "receive s1")

	// Reading the replica's live files changes their atime; the replica
	// is read-only, so that cannot happen and does not count as a change.
	mnt, err := p.mountpoint(ctx, dst)
	mustNil(t, err, "mountpoint")
	if _, err := os.ReadFile(filepath.Join(mnt, "vol")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Images(ctx, dst); err != nil {
		t.Fatal(err)
	}
	if _, err := p.OpenImage(ctx, dst, "vol"); err == nil {
		t.Fatal("a received dataset's image opened for writing")
	}

	mustNil(t, p.DestroySnapshot(ctx, s1.Name), "destroy s1 on the source")
	fill(t, p, src, "vol", 2, 1<<20, 100000)
	s2, err := p.Snapshot(ctx, src, "s2")
	mustNil(t, err, "snapshot s2")
	wantIs(t, p.Send(ctx, s2.Name, "s1", io.Discard), zfs.ErrNotFound, "send from the destroyed snapshot")
	wantIs(t, p.SendFromBookmark(ctx, s2.Name, "nope", io.Discard), zfs.ErrNotFound, "send from a missing bookmark")
	var inc bytes.Buffer
	mustNil(t, p.SendFromBookmark(ctx, s2.Name, "b1", &inc), "send from bookmark")
	if inc.Len() > 1<<20 {
		t.Fatalf("incremental stream from the bookmark is %d bytes", inc.Len())
	}
	got, err := p.Receive(ctx, dst, &inc)
	mustNil(t, err, "receive incremental from bookmark")
	if got.Name != snapOf(t, dst, "s2") {
		t.Fatalf("received %v", got.Name)
	}
	if sum(t, p, got.Name, "vol") != sum(t, p, s2.Name, "vol") {
		t.Fatal("replica differs from the source")
	}

	mustNil(t, p.DestroyBookmark(ctx, src, "b1"), "destroy bookmark")
	wantIs(t, p.DestroyBookmark(ctx, src, "b1"), zfs.ErrNotFound, "destroy bookmark twice")
	bms, err = p.Bookmarks(ctx, src)
	mustNil(t, err, "bookmarks")
	if len(bms) != 0 {
		t.Fatalf("bookmarks after destroy = %+v", bms)
	}
}

// TestResumableReceive interrupts a full and an incremental receive,
// resumes the first from its token and aborts the second.
func TestResumableReceive(t *testing.T) {
	ctx := context.Background()
	tp := newTestPool(t)
	p := tp.Pool
	src := child(t, p.Root(), "src")
	mustNil(t, p.CreateDataset(ctx, src), "create")
	mustNil(t, p.CreateImage(ctx, src, "vol", 8<<20), "create image")
	fill(t, p, src, "vol", 3, 0, 8<<20)
	s1, err := p.Snapshot(ctx, src, "s1")
	mustNil(t, err, "snapshot")
	var full bytes.Buffer
	mustNil(t, p.Send(ctx, s1.Name, "", &full), "send")

	dst := child(t, p.Root(), "dst")
	tok, err := p.ResumeToken(ctx, src)
	if err != nil || tok != "" {
		t.Fatalf("token of a dataset without partial state = %q, %v", tok, err)
	}
	_, err = p.ReceiveResumable(ctx, dst, bytes.NewReader(full.Bytes()[:full.Len()*2/3]))
	wantIs(t, err, zfs.ErrStream, "interrupted resumable receive")
	tok, err = p.ResumeToken(ctx, dst)
	mustNil(t, err, "resume token")
	if tok == "" {
		t.Fatal("no resume token after an interrupted receive")
	}
	_, err = p.Receive(ctx, dst, bytes.NewReader(full.Bytes()))
	if !errors.Is(err, zfs.ErrBusy) && !errors.Is(err, zfs.ErrExists) {
		t.Fatalf("plain receive onto partial state: %v", err)
	}

	// A pool with another root must not send what the token names.
	other, err := Open(ctx, Config{Root: zfs.MustDatasetName(tp.zpool + "/other"), Logger: testLogger(t)})
	mustNil(t, err, "open second root")
	wantIs(t, other.SendResume(ctx, tok, io.Discard), zfs.ErrInvalidName, "resume a send outside the root")
	wantIs(t, p.SendResume(ctx, "1-abc-12-789c", io.Discard), zfs.ErrStream, "corrupt token")

	var rest bytes.Buffer
	mustNil(t, p.SendResume(ctx, tok, &rest), "send resume")
	if rest.Len() >= full.Len() {
		t.Fatalf("resumed stream %d bytes, full %d", rest.Len(), full.Len())
	}
	got, err := p.ReceiveResumable(ctx, dst, &rest)
	mustNil(t, err, "resumed receive")
	if got.Name != snapOf(t, dst, "s1") {
		t.Fatalf("received %v", got.Name)
	}
	if tok, err := p.ResumeToken(ctx, dst); err != nil || tok != "" {
		t.Fatalf("token after completion = %q, %v", tok, err)
	}
	if sum(t, p, got.Name, "vol") != sum(t, p, s1.Name, "vol") {
		t.Fatal("resumed replica differs from the source")
	}

	// An interrupted incremental, aborted: dst keeps s1 only.
	fill(t, p, src, "vol", 4, 0, 4<<20)
	s2, err := p.Snapshot(ctx, src, "s2")
	mustNil(t, err, "snapshot s2")
	var inc bytes.Buffer
	mustNil(t, p.Send(ctx, s2.Name, "s1", &inc), "send incremental")
	_, err = p.ReceiveResumable(ctx, dst, bytes.NewReader(inc.Bytes()[:inc.Len()/2]))
	wantIs(t, err, zfs.ErrStream, "interrupted incremental")
	if tok, err := p.ResumeToken(ctx, dst); err != nil || tok == "" {
		t.Fatalf("token after interrupted incremental = %q, %v", tok, err)
	}
	mustNil(t, p.AbortReceive(ctx, dst), "abort")
	wantIs(t, p.AbortReceive(ctx, dst), zfs.ErrNotFound, "abort twice")
	if tok, err := p.ResumeToken(ctx, dst); err != nil || tok != "" {
		t.Fatalf("token after abort = %q, %v", tok, err)
	}
	snaps, err := p.Snapshots(ctx, dst)
	mustNil(t, err, "snapshots")
	if len(snaps) != 1 || snaps[0].Name.Snap() != "s1" {
		t.Fatalf("snapshots after abort = %v", snaps)
	}
	got, err = p.Receive(ctx, dst, &inc)
	mustNil(t, err, "incremental after abort")
	if sum(t, p, got.Name, "vol") != sum(t, p, s2.Name, "vol") {
		t.Fatal("replica differs from the source")
	}

	// Aborting a partial full receive leaves no dataset.
	dst2 := child(t, p.Root(), "dst2")
	_, err = p.ReceiveResumable(ctx, dst2, bytes.NewReader(full.Bytes()[:full.Len()/2]))
	wantIs(t, err, zfs.ErrStream, "interrupted full receive")
	mustNil(t, p.AbortReceive(ctx, dst2), "abort full")
	_, err = p.Dataset(ctx, dst2)
	wantIs(t, err, zfs.ErrNotFound, "dataset after aborted full receive")
}

// TestVerifyFindsCorruption damages one 128 KiB record of an image on
// the pool's disk and checks that Verify reports exactly that range and
// reads everything else.
func TestVerifyFindsCorruption(t *testing.T) {
	ctx := context.Background()
	tp := newTestPool(t)
	p := tp.Pool
	ds := child(t, p.Root(), "v")
	mustNil(t, p.CreateDataset(ctx, ds), "create")
	const size = 1 << 20
	mustNil(t, p.CreateImage(ctx, ds, "vol", size), "create image")
	mustNil(t, p.CreateImage(ctx, ds, "ok", 5000), "create image")
	fill(t, p, ds, "vol", 5, 0, size) // random: not compressible
	fill(t, p, ds, "ok", 6, 0, 5000)
	snap, err := p.Snapshot(ctx, ds, "v1")
	mustNil(t, err, "snapshot")

	// Find where the record at offset 256 KiB is on disk: zdb prints
	// each level-0 block as "<offset> L0 <vdev>:<disk offset>:<size>".
	mnt, err := p.mountpoint(ctx, ds)
	mustNil(t, err, "mountpoint")
	fi, err := os.Stat(filepath.Join(mnt, "vol"))
	mustNil(t, err, "stat")
	ino := fi.Sys().(*syscall.Stat_t).Ino
	sh(t, "zpool", "sync", tp.zpool)
	const bad = 0x40000
	var diskOff int64 = -1
	for _, l := range strings.Split(sh(t, "zdb", "-ddddd", snap.Name.String(), strconv.FormatUint(ino, 10)), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[1] == "L0" && f[0] == strconv.FormatInt(bad, 16) {
			dva := strings.Split(f[2], ":")
			if len(dva) == 3 {
				diskOff, err = strconv.ParseInt(dva[1], 16, 64)
				mustNil(t, err, "parse DVA")
			}
		}
	}
	if diskOff < 0 {
		t.Fatal("zdb did not show the block")
	}
	// Allocatable space starts after the two front labels and the boot
	// area, 4 MiB into the device.
	vdev, err := os.OpenFile(filepath.Join(tp.dir, "vdev"), os.O_WRONLY, 0)
	mustNil(t, err, "open vdev")
	_, err = vdev.WriteAt(bytes.Repeat([]byte{0xde, 0xad}, 2048), 4<<20+diskOff+1000)
	mustNil(t, err, "corrupt")
	mustNil(t, vdev.Close(), "close vdev")
	// Export and import so that the block is read from disk, not the ARC.
	sh(t, "zpool", "export", tp.zpool)
	sh(t, "zpool", "import", "-d", tp.dir, tp.zpool)

	rep, err := p.Verify(ctx, snap.Name)
	mustNil(t, err, "verify")
	want := zfs.VerifyProblem{Image: "vol", Offset: bad, Length: 128 << 10}
	if len(rep.Problems) != 1 || rep.Problems[0].Image != want.Image || rep.Problems[0].Offset != want.Offset || rep.Problems[0].Length != want.Length {
		t.Fatalf("problems = %+v, want one like %+v", rep.Problems, want)
	}
	if rep.Images != 2 || rep.Bytes != size+5000-128<<10 || rep.OK() {
		t.Fatalf("report = %+v", rep)
	}
	t.Logf("verify found: %+v", rep.Problems[0])
}

// TestDestroyWithOpenImages checks that an open image makes destroying
// its dataset or snapshot fail with ErrBusy before anything is destroyed.
func TestDestroyWithOpenImages(t *testing.T) {
	ctx := context.Background()
	p := newTestPool(t).Pool
	parent := child(t, p.Root(), "agents")
	ds := child(t, parent, "a")
	mustNil(t, p.CreateDataset(ctx, ds), "create")
	mustNil(t, p.CreateImage(ctx, ds, "vol", 1<<20), "create image")
	s1, err := p.Snapshot(ctx, ds, "s1")
	mustNil(t, err, "snapshot")

	img, err := p.OpenImage(ctx, ds, "vol")
	mustNil(t, err, "open image")
	wantIs(t, p.DestroyDataset(ctx, parent), zfs.ErrBusy, "destroy the parent of an open image")
	mustNil(t, img.Close(), "close")
	wantIs(t, img.Close(), zfs.ErrClosed, "close twice")
	_, err = img.ReadAt(make([]byte, 1), 0)
	wantIs(t, err, zfs.ErrClosed, "read after close")

	r, err := p.OpenSnapshotImage(ctx, s1.Name, "vol")
	mustNil(t, err, "open snapshot image")
	wantIs(t, p.DestroySnapshot(ctx, s1.Name), zfs.ErrBusy, "destroy a snapshot with an open image")
	wantIs(t, p.DestroyDataset(ctx, ds), zfs.ErrBusy, "destroy a dataset with an open snapshot image")
	mustNil(t, r.Close(), "close snapshot image")

	snaps, err := p.Snapshots(ctx, ds)
	mustNil(t, err, "snapshots")
	if len(snaps) != 1 {
		t.Fatalf("snapshots after refused destroys = %v", snaps)
	}
	mustNil(t, p.DestroyDataset(ctx, parent), "destroy after closing")
}
