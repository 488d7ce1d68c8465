// Package zfstest is the conformance suite of zfs.Pool: one set of tests that
// every pool implementation runs and passes, so that the appliance can treat
// the embedded pool and OpenZFS alike.
package zfstest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/zfs"
)

// Factory returns a new, empty pool for one test and registers its cleanup
// with t. Two calls in one test return two independent pools of the same
// kind (for send/receive).
type Factory func(t *testing.T) zfs.Pool

// ImageSize is the size of the images the suite writes: large enough to
// span many chunks of the embedded pool, small enough for an emulated VM.
const ImageSize = 12<<20 + 12345

// Run runs the whole suite against pools made by newPool.
func Run(t *testing.T, newPool Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"Datasets", testDatasets},
		{"Names", testNames},
		{"Images", testImages},
		{"SparseWrites", testSparseWrites},
		{"ReadWriteBounds", testReadWriteBounds},
		{"SnapshotIsolation", testSnapshotIsolation},
		{"SnapshotOrder", testSnapshotOrder},
		{"Holds", testHolds},
		{"SendReceive", testSendReceive},
		{"ReceiveBadStreams", testReceiveBadStreams},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Verify", testVerify},
		{"Space", testSpace},
		{"Canceled", testCanceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newPool) })
	}
}

// wantErr fails t unless err matches target.
func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// agentDS returns root/agents/<id>, created.
func agentDS(t *testing.T, p zfs.Pool, id string) zfs.DatasetName {
	t.Helper()
	ds, err := zfs.AgentDataset(p.Root(), id)
	must(t, err, "agent dataset name")
	must(t, p.CreateDataset(context.Background(), ds), "create "+ds.String())
	return ds
}

func snapName(t *testing.T, ds zfs.DatasetName, snap string) zfs.SnapshotName {
	t.Helper()
	s, err := ds.Snapshot(snap)
	must(t, err, "snapshot name")
	return s
}

// model is the expected content of an image.
type model []byte

// write writes random bytes of length n at off to both img and m.
func (m model) write(t *testing.T, rng *rand.Rand, img zfs.Image, off int64, n int) {
	t.Helper()
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	got, err := img.WriteAt(p, off)
	if err != nil || got != n {
		t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", n, off, got, err)
	}
	copy(m[off:], p)
}

// scatter makes k writes of random length at random offsets, some of them
// unaligned and some crossing 64 KiB boundaries, one touching the last byte.
func (m model) scatter(t *testing.T, rng *rand.Rand, img zfs.Image, k int) {
	t.Helper()
	size := int64(len(m))
	for i := 0; i < k; i++ {
		n := 1 + rng.IntN(200<<10)
		off := rng.Int64N(size - int64(n))
		m.write(t, rng, img, off, n)
	}
	m.write(t, rng, img, size-7, 7)
}

func (m model) sum() [32]byte { return sha256.Sum256(m) }

// imageSum hashes a whole image through ReadAt in odd-sized pieces.
func imageSum(t *testing.T, r io.ReaderAt, size int64) [32]byte {
	t.Helper()
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.NewSectionReader(r, 0, size), make([]byte, 777777))
	if err != nil || n != size {
		t.Fatalf("read image: %d of %d bytes, %v", n, size, err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func snapshotSum(t *testing.T, p zfs.Pool, snap zfs.SnapshotName, image string) [32]byte {
	t.Helper()
	r, err := p.OpenSnapshotImage(context.Background(), snap, image)
	must(t, err, "open snapshot image "+snap.String())
	defer r.Close()
	return imageSum(t, r, r.Size())
}

func openNew(t *testing.T, p zfs.Pool, ds zfs.DatasetName, image string, size int64) zfs.Image {
	t.Helper()
	ctx := context.Background()
	must(t, p.CreateImage(ctx, ds, image, size), "create image")
	img, err := p.OpenImage(ctx, ds, image)
	must(t, err, "open image")
	t.Cleanup(func() { img.Close() })
	return img
}

func testDatasets(t *testing.T, newPool Factory) {
	ctx := context.Background()
	p := newPool(t)
	a := agentDS(t, p, "a-1")
	b := agentDS(t, p, "b-2")

	wantErr(t, p.CreateDataset(ctx, a), zfs.ErrExists, "create existing dataset")

	infos, err := p.Datasets(ctx)
	must(t, err, "list datasets")
	var names []string
	for _, d := range infos {
		names = append(names, d.Name.String())
	}
	agents, _ := p.Root().Child(zfs.AgentsComponent)
	want := []string{p.Root().String(), agents.String(), a.String(), b.String()}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Fatalf("datasets = %v, want %v", names, want)
	}
	info, err := p.Dataset(ctx, a)
	must(t, err, "dataset a")
	if info.Name != a || info.Used < 0 {
		t.Fatalf("dataset info = %+v", info)
	}

	must(t, p.DestroyDataset(ctx, a), "destroy a")
	_, err = p.Dataset(ctx, a)
	wantErr(t, err, zfs.ErrNotFound, "dataset after destroy")
	wantErr(t, p.DestroyDataset(ctx, a), zfs.ErrNotFound, "destroy missing dataset")
	wantErr(t, p.DestroyDataset(ctx, p.Root()), zfs.ErrBusy, "destroy root")

	// Destroying a parent takes its children and their snapshots along.
	img := openNew(t, p, b, "vol", 1<<20)
	must(t, img.Close(), "close")
	_, err = p.Snapshot(ctx, b, "s1")
	must(t, err, "snapshot b")
	must(t, p.DestroyDataset(ctx, agents), "destroy agents recursively")
	_, err = p.Dataset(ctx, b)
	wantErr(t, err, zfs.ErrNotFound, "child after recursive destroy")

	// A dataset can be made again after it was destroyed.
	agentDS(t, p, "a-1")
}

func testNames(t *testing.T, newPool Factory) {
	ctx := context.Background()
	p := newPool(t)
	outside := zfs.MustDatasetName("elsewhere-" + p.Root().Base() + "/x")
	wantErr(t, p.CreateDataset(ctx, outside), zfs.ErrInvalidName, "create outside root")
	_, err := p.Dataset(ctx, outside)
	wantErr(t, err, zfs.ErrInvalidName, "dataset outside root")
	wantErr(t, p.CreateDataset(ctx, zfs.DatasetName{}), zfs.ErrInvalidName, "create zero name")

	ds := agentDS(t, p, "n")
	for _, bad := range []string{"", "..", "a/b", "a@b", "-x", ".x", "a b"} {
		wantErr(t, p.CreateImage(ctx, ds, bad, 4096), zfs.ErrInvalidName, "image name "+quote(bad))
		_, err := p.Snapshot(ctx, ds, bad)
		wantErr(t, err, zfs.ErrInvalidName, "snapshot name "+quote(bad))
	}
	missing, _ := zfs.AgentDataset(p.Root(), "missing")
	wantErr(t, p.CreateImage(ctx, missing, "vol", 4096), zfs.ErrNotFound, "image in missing dataset")
	_, err = p.Snapshot(ctx, missing, "s")
	wantErr(t, err, zfs.ErrNotFound, "snapshot of missing dataset")
	_, err = p.Snapshots(ctx, missing)
	wantErr(t, err, zfs.ErrNotFound, "snapshots of missing dataset")
	_, err = p.Images(ctx, missing)
	wantErr(t, err, zfs.ErrNotFound, "images of missing dataset")
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

func testImages(t *testing.T, newPool Factory) {
	ctx := context.Background()
	p := newPool(t)
	ds := agentDS(t, p, "img")
	must(t, p.CreateImage(ctx, ds, "disk1", 1<<20), "create disk1")
	must(t, p.CreateImage(ctx, ds, "disk0", 3<<20+1), "create disk0")
	wantErr(t, p.CreateImage(ctx, ds, "disk0", 1<<20), zfs.ErrExists, "create existing image")
	wantErr(t, p.CreateImage(ctx, ds, "neg", -1), zfs.ErrOutOfRange, "negative size")
	_, err := p.OpenImage(ctx, ds, "nope")
	wantErr(t, err, zfs.ErrNotFound, "open missing image")

	imgs, err := p.Images(ctx, ds)
	must(t, err, "images")
	want := []zfs.ImageInfo{{Name: "disk0", Size: 3<<20 + 1}, {Name: "disk1", Size: 1 << 20}}
	if fmt.Sprint(imgs) != fmt.Sprint(want) {
		t.Fatalf("images = %v, want %v", imgs, want)
	}

	// A new image reads as zeros.
	img, err := p.OpenImage(ctx, ds, "disk0")
	must(t, err, "open disk0")
	defer img.Close()
	if img.Size() != 3<<20+1 {
		t.Fatalf("size = %d", img.Size())
	}
	buf := make([]byte, 100000)
	n, err := img.ReadAt(buf, 2<<20)
	must(t, err, "read new image")
	if n != len(buf) || !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Fatal("a new image does not read as zeros")
	}

	// A second handle on the same image sees the first one's writes.
	must(t, writeAll(img, []byte("hello"), 12345), "write")
	img2, err := p.OpenImage(ctx, ds, "disk0")
	must(t, err, "open disk0 again")
	defer img2.Close()
	got := make([]byte, 5)
	_, err = img2.ReadAt(got, 12345)
	must(t, err, "read second handle")
	if string(got) != "hello" {
		t.Fatalf("second handle read %q", got)
	}

	// Writes survive Sync, Close and reopening.
	must(t, img.Sync(), "sync")
	must(t, img.Close(), "close")
	must(t, img2.Close(), "close 2")
	img3, err := p.OpenImage(ctx, ds, "disk0")
	must(t, err, "reopen")
	defer img3.Close()
	_, err = img3.ReadAt(got, 12345)
	must(t, err, "read reopened")
	if string(got) != "hello" {
		t.Fatalf("reopened image read %q", got)
	}
}

func writeAll(img zfs.Image, p []byte, off int64) error {
	n, err := img.WriteAt(p, off)
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	return err
}

func testSparseWrites(t *testing.T, newPool Factory) {
	p := newPool(t)
	ds := agentDS(t, p, "sparse")
	img := openNew(t, p, ds, "vol", ImageSize)
	rng := rand.New(rand.NewPCG(1, 2))
	m := make(model, ImageSize)
	m.scatter(t, rng, img, 60)
	if imageSum(t, img, ImageSize) != m.sum() {
		t.Fatal("live image differs from what was written")
	}
	// Overwrite with zeros: the image must read zeros there again.
	zero := make([]byte, 300000)
	must(t, writeAll(img, zero, 1<<20+3), "write zeros")
	copy(m[1<<20+3:], zero)
	must(t, img.Sync(), "sync")
	if imageSum(t, img, ImageSize) != m.sum() {
		t.Fatal("live image differs after zero overwrite")
	}
}

func testReadWriteBounds(t *testing.T, newPool Factory) {
	p := newPool(t)
	ds := agentDS(t, p, "bounds")
	const size = 1<<20 + 100
	img := openNew(t, p, ds, "vol", size)
	must(t, writeAll(img, bytes.Repeat([]byte{7}, 100), size-100), "write the last 100 bytes")

	buf := make([]byte, 300)
	n, err := img.ReadAt(buf, size-100)
	if n != 100 || err != io.EOF {
		t.Fatalf("read across the end = %d, %v; want 100, io.EOF", n, err)
	}
	if !bytes.Equal(buf[:100], bytes.Repeat([]byte{7}, 100)) {
		t.Fatal("read across the end returned wrong bytes")
	}
	n, err = img.ReadAt(buf, size)
	if n != 0 || err != io.EOF {
		t.Fatalf("read at the end = %d, %v; want 0, io.EOF", n, err)
	}
	_, err = img.ReadAt(buf, -1)
	wantErr(t, err, zfs.ErrOutOfRange, "read at negative offset")

	n, err = img.WriteAt([]byte("xyz"), size-2)
	wantErr(t, err, zfs.ErrOutOfRange, "write across the end")
	if n != 0 {
		t.Fatalf("write across the end wrote %d bytes", n)
	}
	_, err = img.WriteAt([]byte("x"), -5)
	wantErr(t, err, zfs.ErrOutOfRange, "write at negative offset")
	got := make([]byte, 2)
	_, err = img.ReadAt(got, size-2)
	if err != nil || !bytes.Equal(got, []byte{7, 7}) {
		t.Fatalf("a refused write changed the image: %v %v", got, err)
	}
}

func testSnapshotIsolation(t *testing.T, newPool Factory) {
	ctx := context.Background()
	p := newPool(t)
	ds := agentDS(t, p, "iso")
	img := openNew(t, p, ds, "vol", ImageSize)
	rng := rand.New(rand.NewPCG(3, 4))
	m := make(model, ImageSize)

	var sums [][32]byte
	var snaps []zfs.SnapshotName
	for i := 0; i < 3; i++ {
		m.scatter(t, rng, img, 20)
		info, err := p.Snapshot(ctx, ds, fmt.Sprintf("rp%d", i))
		must(t, err, "snapshot")
		snaps = append(snaps, info.Name)
		sums = append(sums, m.sum())
	}
	m.scatter(t, rng, img, 20) // written after the last snapshot

	for i, s := range snaps {
		if got := snapshotSum(t, p, s, "vol"); got != sums[i] {
			t.Fatalf("snapshot %s changed after later writes", s)
		}
		imgs, err := p.SnapshotImages(ctx, s)
		must(t, err, "snapshot images")
		if len(imgs) != 1 || imgs[0].Name != "vol" || imgs[0].Size != ImageSize {
			t.Fatalf("snapshot images = %v", imgs)
		}
	}
	if imageSum(t, img, ImageSize) != m.sum() {
		t.Fatal("live image wrong after snapshots")
	}
	// An image created after a snapshot is not in it.
	openNew(t, p, ds, "later", 4096)
	_, err := p.OpenSnapshotImage(ctx, snaps[0], "later")
	wantErr(t, err, zfs.ErrNotFound, "image created after the snapshot")

	// Snapshot readers are read-only views: reading past the end is io.EOF.
	r, err := p.OpenSnapshotImage(ctx, snaps[0], "vol")
	must(t, err, "open snapshot image")
	defer r.Close()
	if n, err := r.ReadAt(make([]byte, 10), ImageSize); n != 0 || err != io.EOF {
		t.Fatalf("snapshot read at end = %d, %v", n, err)
	}
}

func testSnapshotOrder(t *testing.T, newPool Factory) {
	ctx := context.Background()
	p := newPool(t)
	ds := agentDS(t, p, "order")
	img := openNew(t, p, ds, "vol", 1<<20)
	// Names out of alphabetical order: the list must follow creation.
	names := []string{"zeta", "alpha", "mid", "beta"}
	start := time.Now().Add(-time.Second)
	for i, n := range names {
		must(t, writeAll(img, []byte{byte(i + 1)}, int64(i)), "write")
		_, err := p.Snapshot(ctx, ds, n)
		must(t, err, "snapshot "+n)
	}
	end := time.Now().Add(time.Second)
	_, err := p.Snapshot(ctx, ds, "mid")
	wantErr(t, err, zfs.ErrExists, "duplicate snapshot")

	list, err := p.Snapshots(ctx, ds)
	must(t, err, "snapshots")
	var got []string
	for i, s := range list {
		got = append(got, s.Name.Snap())
		if s.Name.Dataset() != ds {
			t.Fatalf("snapshot %v of wrong dataset", s.Name)
		}
		if s.Created.Before(start) || s.Created.After(end) {
			t.Fatalf("snapshot %s created %v, outside [%v, %v]", s.Name, s.Created, start, end)
		}
		if i > 0 && (s.CreateTxg <= list[i-1].CreateTxg || s.Created.Before(list[i-1].Created)) {
			t.Fatalf("snapshot %s not after %s: %+v %+v", s.Name, list[i-1].Name, s, list[i-1])
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(names) {
		t.Fatalf("snapshots = %v, want %v", got, names)
	}

	mid := snapName(t, ds, "mid")
	must(t, p.DestroySnapshot(ctx, mid), "destroy mid")
	wantErr(t, p.DestroySnapshot(ctx, mid), zfs.ErrNotFound, "destroy missing snapshot")
	_, err = p.OpenSnapshotImage(ctx, mid, "vol")
	wantErr(t, err, zfs.ErrNotFound, "open destroyed snapshot")
	list, err = p.Snapshots(ctx, ds)
	must(t, err, "snapshots")
	if len(list) != 3 || list[0].Name.Snap() != "zeta" || list[1].Name.Snap() != "alpha" || list[2].Name.Snap() != "beta" {
		t.Fatalf("after destroy: %v", list)
	}
	// Each remaining snapshot still has its own bytes.
	for i, want := range map[string]int{"zeta": 1, "alpha": 2, "beta": 4} {
		r, err := p.OpenSnapshotImage(ctx, snapName(t, ds, i), "vol")
		must(t, err, "open")
		b := make([]byte, 5)
		_, err = r.ReadAt(b, 0)
		r.Close()
		must(t, err, "read")
		for j := 0; j < 5; j++ {
			exp := byte(0)
			if j < want {
				exp = byte(j + 1)
			}
			if b[j] != exp {
				t.Fatalf("snapshot %s byte %d = %d, want %d", i, j, b[j], exp)
			}
		}
	}
}

func testHolds(t *testing.T, newPool Factory) {
	ctx := context.Background()
	p := newPool(t)
	ds := agentDS(t, p, "holds")
	img := openNew(t, p, ds, "vol", 1<<20)
	must(t, writeAll(img, []byte("data"), 0), "write")
	must(t, img.Close(), "close")
	info, err := p.Snapshot(ctx, ds, "s1")
	must(t, err, "snapshot")
	s1 := info.Name

	holds, err := p.Holds(ctx, s1)
	must(t, err, "holds")
	if len(holds) != 0 {
		t.Fatalf("new snapshot has holds %v", holds)
	}
	must(t, p.Hold(ctx, s1, "offsite"), "hold offsite")
	must(t, p.Hold(ctx, s1, "cairn-restore"), "hold restore")
	wantErr(t, p.Hold(ctx, s1, "offsite"), zfs.ErrExists, "hold twice")
	wantErr(t, p.Hold(ctx, s1, "bad tag"), zfs.ErrInvalidName, "bad tag")
	wantErr(t, p.Hold(ctx, snapName(t, ds, "nope"), "x"), zfs.ErrNotFound, "hold missing snapshot")
	holds, err = p.Holds(ctx, s1)
	must(t, err, "holds")
	if fmt.Sprint(holds) != "[cairn-restore offsite]" {
		t.Fatalf("holds = %v", holds)
	}

	wantErr(t, p.DestroySnapshot(ctx, s1), zfs.ErrHeld, "destroy held snapshot")
	wantErr(t, p.DestroyDataset(ctx, ds), zfs.ErrHeld, "destroy dataset with held snapshot")
	snapshotSum(t, p, s1, "vol") // still readable
	_, err = p.Dataset(ctx, ds)
	must(t, err, "dataset still there")

	must(t, p.Release(ctx, s1, "offsite"), "release offsite")
	wantErr(t, p.Release(ctx, s1, "offsite"), zfs.ErrNotFound, "release twice")
	wantErr(t, p.DestroySnapshot(ctx, s1), zfs.ErrHeld, "destroy with one hold left")
	must(t, p.Release(ctx, s1, "cairn-restore"), "release restore")
	must(t, p.DestroySnapshot(ctx, s1), "destroy released snapshot")
	must(t, p.DestroyDataset(ctx, ds), "destroy dataset")
}

func testSendReceive(t *testing.T, newPool Factory) {
	ctx := context.Background()
	src, dst := newPool(t), newPool(t)
	ds := agentDS(t, src, "rep")
	img := openNew(t, src, ds, "vol", ImageSize)
	small := openNew(t, src, ds, "efi", 1<<20)
	rng := rand.New(rand.NewPCG(5, 6))
	m := make(model, ImageSize)
	ms := make(model, 1<<20)

	m.scatter(t, rng, img, 40)
	ms.write(t, rng, small, 1000, 5000)
	sums := [][32]byte{m.sum()}
	_, err := src.Snapshot(ctx, ds, "s1")
	must(t, err, "s1")
	for i := 2; i <= 3; i++ {
		m.write(t, rng, img, rng.Int64N(ImageSize-300000), 300000)
		sums = append(sums, m.sum())
		_, err := src.Snapshot(ctx, ds, fmt.Sprintf("s%d", i))
		must(t, err, "snapshot")
	}

	target, err := zfs.AgentDataset(dst.Root(), "rep")
	must(t, err, "target name")
	agents, _ := dst.Root().Child(zfs.AgentsComponent)
	must(t, dst.CreateDataset(ctx, agents), "create target parent")

	var full bytes.Buffer
	must(t, src.Send(ctx, snapName(t, ds, "s1"), "", &full), "send s1")
	info, err := dst.Receive(ctx, target, &full)
	must(t, err, "receive s1")
	if info.Name.Snap() != "s1" || info.Name.Dataset() != target {
		t.Fatalf("received %v", info.Name)
	}
	fullSize := int64(0)
	for i := 2; i <= 3; i++ {
		var inc bytes.Buffer
		must(t, src.Send(ctx, snapName(t, ds, fmt.Sprintf("s%d", i)), fmt.Sprintf("s%d", i-1), &inc), "send incremental")
		if fullSize == 0 {
			var again bytes.Buffer
			must(t, src.Send(ctx, snapName(t, ds, "s2"), "", &again), "send s2 full")
			fullSize = int64(again.Len())
		}
		if int64(inc.Len()) > fullSize/2 {
			t.Fatalf("incremental stream %d bytes, full %d: not incremental", inc.Len(), fullSize)
		}
		_, err := dst.Receive(ctx, target, &inc)
		must(t, err, "receive incremental")
	}

	list, err := dst.Snapshots(ctx, target)
	must(t, err, "received snapshots")
	if len(list) != 3 {
		t.Fatalf("received snapshots %v", list)
	}
	for i, s := range list {
		if s.Name.Snap() != fmt.Sprintf("s%d", i+1) {
			t.Fatalf("received snapshot %d is %v", i, s.Name)
		}
		if got := snapshotSum(t, dst, s.Name, "vol"); got != sums[i] {
			t.Fatalf("received %s differs from the source", s.Name)
		}
		if got := snapshotSum(t, dst, s.Name, "efi"); got != ms.sum() {
			t.Fatalf("received %s efi differs from the source", s.Name)
		}
		rep, err := dst.Verify(ctx, s.Name)
		must(t, err, "verify received")
		if !rep.OK() {
			t.Fatalf("received %s does not verify: %v", s.Name, rep.Problems)
		}
	}
}

func testReceiveBadStreams(t *testing.T, newPool Factory) {
	ctx := context.Background()
	src, dst := newPool(t), newPool(t)
	ds := agentDS(t, src, "bad")
	img := openNew(t, src, ds, "vol", 4<<20)
	rng := rand.New(rand.NewPCG(7, 8))
	m := make(model, 4<<20)
	m.scatter(t, rng, img, 10)
	for _, s := range []string{"s1", "s2", "s3"} {
		m.write(t, rng, img, rng.Int64N(3<<20), 100000)
		_, err := src.Snapshot(ctx, ds, s)
		must(t, err, "snapshot "+s)
	}
	send := func(snap, base string) []byte {
		var b bytes.Buffer
		must(t, src.Send(ctx, snapName(t, ds, snap), base, &b), "send")
		return b.Bytes()
	}
	target, _ := zfs.AgentDataset(dst.Root(), "bad")
	agents, _ := dst.Root().Child(zfs.AgentsComponent)
	must(t, dst.CreateDataset(ctx, agents), "parent")

	full := send("s1", "")
	_, err := dst.Receive(ctx, agents, bytes.NewReader(full))
	wantErr(t, err, zfs.ErrExists, "full receive onto an existing dataset")
	garbage := bytes.Repeat([]byte("not a stream "), 1000)
	for name, stream := range map[string][]byte{
		"garbage":   garbage,
		"empty":     nil,
		"truncated": full[:len(full)*2/3],
	} {
		_, err := dst.Receive(ctx, target, bytes.NewReader(stream))
		wantErr(t, err, zfs.ErrStream, "receive "+name+" stream")
		if _, err := dst.Dataset(ctx, target); !errors.Is(err, zfs.ErrNotFound) {
			t.Fatalf("a failed %s receive left dataset %s behind (%v)", name, target, err)
		}
	}

	_, err = dst.Receive(ctx, target, bytes.NewReader(full))
	must(t, err, "receive s1")
	// s2→s3 does not apply on top of s1.
	_, err = dst.Receive(ctx, target, bytes.NewReader(send("s3", "s2")))
	wantErr(t, err, zfs.ErrStream, "incremental on the wrong base")
	inc := send("s2", "s1")
	_, err = dst.Receive(ctx, target, bytes.NewReader(inc[:len(inc)/2]))
	wantErr(t, err, zfs.ErrStream, "truncated incremental")
	list, err := dst.Snapshots(ctx, target)
	must(t, err, "snapshots")
	if len(list) != 1 || list[0].Name.Snap() != "s1" {
		t.Fatalf("failed receives changed the target: %v", list)
	}
	// The right stream still applies afterwards.
	_, err = dst.Receive(ctx, target, bytes.NewReader(inc))
	must(t, err, "receive s2 after failures")

	wantErr(t, src.Send(ctx, snapName(t, ds, "s2"), "nope", io.Discard), zfs.ErrNotFound, "send from missing base")
	wantErr(t, src.Send(ctx, snapName(t, ds, "nope"), "", io.Discard), zfs.ErrNotFound, "send missing snapshot")
}

func testConcurrentWriters(t *testing.T, newPool Factory) {
	ctx := context.Background()
	p := newPool(t)
	const writers = 3
	type result struct {
		ds   zfs.DatasetName
		sums [][32]byte
		err  error
	}
	results := make([]result, writers)
	imgs := make([]zfs.Image, writers)
	for i := range results {
		results[i].ds = agentDS(t, p, fmt.Sprintf("c%d", i))
		imgs[i] = openNew(t, p, results[i].ds, "vol", 4<<20)
	}
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := &results[i]
			rng := rand.New(rand.NewPCG(uint64(i), 99))
			m := make(model, 4<<20)
			for round := 0; round < 3; round++ {
				for k := 0; k < 20; k++ {
					n := 1 + rng.IntN(64<<10)
					off := rng.Int64N(int64(len(m) - n))
					p := make([]byte, n)
					for j := range p {
						p[j] = byte(rng.Uint32())
					}
					if err := writeAll(imgs[i], p, off); err != nil {
						r.err = err
						return
					}
					copy(m[off:], p)
				}
				if _, err := p.Snapshot(ctx, r.ds, fmt.Sprintf("r%d", round)); err != nil {
					r.err = err
					return
				}
				r.sums = append(r.sums, m.sum())
			}
		}(i)
	}
	wg.Wait()
	for _, r := range results {
		must(t, r.err, "writer "+r.ds.String())
		for round, want := range r.sums {
			if got := snapshotSum(t, p, snapName(t, r.ds, fmt.Sprintf("r%d", round)), "vol"); got != want {
				t.Fatalf("%s round %d: snapshot differs", r.ds, round)
			}
		}
	}
}

func testVerify(t *testing.T, newPool Factory) {
	ctx := context.Background()
	p := newPool(t)
	ds := agentDS(t, p, "verify")
	img := openNew(t, p, ds, "vol", ImageSize)
	openNew(t, p, ds, "small", 5000)
	make(model, ImageSize).scatter(t, rand.New(rand.NewPCG(9, 9)), img, 10)
	info, err := p.Snapshot(ctx, ds, "v1")
	must(t, err, "snapshot")
	rep, err := p.Verify(ctx, info.Name)
	must(t, err, "verify")
	if !rep.OK() || rep.Images != 2 || rep.Bytes != ImageSize+5000 || rep.Snapshot != info.Name {
		t.Fatalf("verify report = %+v", rep)
	}
	_, err = p.Verify(ctx, snapName(t, ds, "nope"))
	wantErr(t, err, zfs.ErrNotFound, "verify missing snapshot")
}

func testSpace(t *testing.T, newPool Factory) {
	p := newPool(t)
	sp, err := p.Space(context.Background())
	must(t, err, "space")
	if sp.Used < 0 || sp.Available <= 0 {
		t.Fatalf("space = %+v", sp)
	}
}

func testCanceled(t *testing.T, newPool Factory) {
	p := newPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ds, _ := zfs.AgentDataset(p.Root(), "ctx")
	wantErr(t, p.CreateDataset(ctx, ds), context.Canceled, "create with canceled context")
	_, err := p.Dataset(context.Background(), ds)
	wantErr(t, err, zfs.ErrNotFound, "dataset created despite canceled context")
	wantErr(t, p.Send(ctx, snapName(t, ds, "x"), "", io.Discard), context.Canceled, "send with canceled context")
}
