package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/zfs"
)

// TestGCRemovesUnreferenced destroys snapshots and a dataset and checks
// that GC removes the chunks that no index names: packs with nothing live
// are deleted, packs less than half live are compacted (their live chunks
// moved, the pack deleted), mostly live packs are kept whole; referenced
// chunks all stay. A second GC removes nothing.
func TestGCRemovesUnreferenced(t *testing.T) {
	ctx := context.Background()
	// With the default MaxDirty, chunks are stored when the snapshot is
	// taken, and each snapshot's barrier seals them: one pack per snapshot.
	p, dir := newTestPool(t, 0)
	cs := p.ChunkSize()
	size := 16*cs + 777
	a := agentDataset(t, p, "a")
	img := createOpen(t, p, a, "vol", size)
	m := make([]byte, size)
	sums := make(map[string][32]byte)
	put := func(img zfs.Image, m []byte, first int64, seeds ...uint64) {
		for i, seed := range seeds {
			writeModel(t, img, m, randBytes(seed, int(cs)), (first+int64(i))*cs)
		}
	}
	snap := func(name string) {
		_, err := p.Snapshot(ctx, a, name)
		check(t, err, "snapshot "+name)
		sums[name] = sha256.Sum256(m)
	}
	put(img, m, 0, 1, 2, 3, 4, 5)
	snap("s0") // its pack dies whole
	put(img, m, 0, 11, 12, 13, 14, 15)
	snap("s1") // its pack keeps one chunk of five: compacted
	put(img, m, 0, 21, 22, 23, 24)
	snap("s2") // its pack stays live
	put(img, m, 5, 31, 32, 33, 34, 35)
	snap("s3") // its pack loses one chunk of five: kept
	put(img, m, 9, 41)
	snap("s4")
	// Another dataset: chunks of its own, and a copy of one of a's (dedup:
	// destroying b must not take it from a).
	b := agentDataset(t, p, "b")
	imgB := createOpen(t, p, b, "vol", size)
	mb := make([]byte, size)
	put(imgB, mb, 0, 51, 52, 53)
	put(imgB, mb, 7, 21)
	_, err := p.Snapshot(ctx, b, "t0")
	check(t, err, "snapshot b")
	check(t, imgB.Close(), "close b")

	for _, s := range []string{"s0", "s1", "s2", "s3"} {
		check(t, p.DestroySnapshot(ctx, snapOf(t, a, s)), "destroy a@"+s)
		delete(sums, s)
	}
	check(t, p.DestroyDataset(ctx, b), "destroy b")

	// What GC should do, from the files alone.
	packs := sealedPacksOnDisk(t, dir)
	ref := referencedChunks(t, dir)
	var want GCStats
	want.Marked = len(ref)
	wantStored := make(map[digest]bool)
	for d := range ref {
		wantStored[d] = true
	}
	keptWithDead := 0
	for _, pk := range packs {
		var live, dead int64
		deadN := 0
		for _, r := range pk.recs {
			if _, ok := ref[r.sum]; ok {
				live += recordHeader + int64(r.n)
			} else {
				dead += recordHeader + int64(r.n)
				deadN++
			}
		}
		switch {
		case dead == 0:
		case live >= pk.size/2:
			keptWithDead++
			for _, r := range pk.recs {
				wantStored[r.sum] = true
			}
		default:
			want.Removed += deadN
			want.PacksRemoved++
			want.BytesRemoved += pk.size
			if live > 0 {
				want.PacksCompacted++
				want.BytesMoved += live
			}
		}
	}
	if want.PacksRemoved != 3 || want.PacksCompacted != 1 || keptWithDead != 1 {
		t.Fatalf("the test did not lay out the packs it meant to: %+v, %d kept with dead chunks", want, keptWithDead)
	}
	for d := range ref {
		if _, ok := storedChunks(t, dir)[d]; !ok {
			t.Fatalf("chunk %s is referenced and not stored before GC", d)
		}
	}

	st, err := p.GC(ctx)
	check(t, err, "gc")
	if st != want {
		t.Fatalf("gc stats %+v; want %+v", st, want)
	}
	stored := storedChunks(t, dir)
	for d := range wantStored {
		if _, ok := stored[d]; !ok {
			_, referenced := ref[d]
			t.Fatalf("GC removed chunk %s (referenced: %v)", d, referenced)
		}
	}
	if len(stored) != len(wantStored) {
		t.Fatalf("%d chunks stored after GC, want %d", len(stored), len(wantStored))
	}

	st, err = p.GC(ctx)
	check(t, err, "second gc")
	if st != (GCStats{Marked: len(ref)}) {
		t.Fatalf("second gc stats %+v; want nothing done, %d marked", st, len(ref))
	}
	check(t, img.Close(), "close a")
	// As seen by the pool now and after reopening it.
	for pass := 0; pass < 2; pass++ {
		for name, want := range sums {
			s := snapOf(t, a, name)
			if snapSum(t, p, s, "vol") != want {
				t.Fatalf("%s reads differently after GC", s)
			}
			verifyClean(t, p, s)
		}
		img, err := p.OpenImage(ctx, a, "vol")
		check(t, err, "open a")
		if imageSum(t, img, size) != sha256.Sum256(m) {
			t.Fatal("live image reads differently after GC")
		}
		check(t, img.Close(), "close a")
		check(t, p.Close(), "close pool")
		p = openTestPool(t, dir, 0)
	}
	check(t, p.Close(), "close pool")
}

// TestGCConcurrentWriters runs GC over and over while two datasets are
// written, snapshotted and pruned, with chunk contents that recur in both
// datasets and over time, so that dedup (a chunk that is stored, possibly as
// garbage, is not written again) races with the sweep. A third writer writes
// another image of the first dataset while its snapshots are taken.
func TestGCConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	// A small MaxDirty stores chunks while writing, not only at Sync.
	p, _ := newTestPool(t, 2*DefaultChunkSize)
	cs := int(p.ChunkSize())
	const size = 2<<20 + 4321
	const auxSize = 1 << 20
	const rounds = 10
	palette := make([][]byte, 8)
	for i := range palette {
		palette[i] = randBytes(uint64(500+i), cs)
	}
	type writer struct {
		ds   zfs.DatasetName
		img  zfs.Image
		m    []byte
		sums map[string][32]byte // snapshots not destroyed
		err  error
	}
	ws := make([]*writer, 2)
	for i := range ws {
		ds := agentDataset(t, p, fmt.Sprintf("g%d", i))
		ws[i] = &writer{ds: ds, img: createOpen(t, p, ds, "vol", size), m: make([]byte, size), sums: make(map[string][32]byte)}
	}
	aux := createOpen(t, p, ws[0].ds, "aux", auxSize)
	maux := make([]byte, auxSize)
	auxStates := map[[32]byte]bool{sha256.Sum256(maux): true}
	var auxErr error

	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			w.err = func() error {
				for r := 0; r < rounds; r++ {
					for k := 0; k < 8; k++ {
						var b []byte
						var off int64
						if rng.IntN(3) > 0 {
							b = palette[rng.IntN(len(palette))]
							off = int64(rng.IntN(size/cs)) * int64(cs)
						} else {
							b = randBytes(rng.Uint64(), 1+rng.IntN(3*cs))
							off = rng.Int64N(int64(size - len(b)))
						}
						if _, err := w.img.WriteAt(b, off); err != nil {
							return err
						}
						copy(w.m[off:], b)
					}
					if rng.IntN(3) == 0 {
						if err := w.img.Sync(); err != nil {
							return err
						}
					}
					name := fmt.Sprintf("s%d", r)
					if _, err := p.Snapshot(ctx, w.ds, name); err != nil {
						return err
					}
					w.sums[name] = sha256.Sum256(w.m)
					if old := fmt.Sprintf("s%d", r-2); r >= 2 && rng.IntN(2) == 0 {
						if err := p.DestroySnapshot(ctx, snapOfName(w.ds, old)); err != nil {
							return err
						}
						delete(w.sums, old)
					}
				}
				return nil
			}()
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(3, 7))
		auxErr = func() error {
			for k := 0; k < 60; k++ {
				b := palette[rng.IntN(len(palette))]
				off := int64(rng.IntN(auxSize/cs)) * int64(cs)
				if _, err := aux.WriteAt(b, off); err != nil {
					return err
				}
				copy(maux[off:], b)
				auxStates[sha256.Sum256(maux)] = true
				if k%7 == 0 {
					if err := aux.Sync(); err != nil {
						return err
					}
				}
			}
			return nil
		}()
	}()
	stop := make(chan struct{})
	gcs := 0
	var gcErr error
	var gcWG sync.WaitGroup
	gcWG.Add(1)
	go func() {
		defer gcWG.Done()
		for ; gcs < 500; gcs++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := p.GC(ctx); err != nil {
				gcErr = err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	gcWG.Wait()
	check(t, gcErr, "gc")
	check(t, auxErr, "aux writer")
	t.Logf("%d GCs ran during the writes", gcs)
	if gcs == 0 {
		t.Fatal("no GC ran during the writes")
	}

	checkAll := func(when string) {
		t.Helper()
		for _, w := range ws {
			check(t, w.err, "writer "+w.ds.String())
			for name, want := range w.sums {
				s := snapOfName(w.ds, name)
				if got := snapSum(t, p, s, "vol"); got != want {
					t.Fatalf("%s: %s reads differently from when it was taken", when, s)
				}
				verifyClean(t, p, s)
				if w == ws[0] && !auxStates[snapSum(t, p, s, "aux")] {
					t.Fatalf("%s: %s:aux is no state the image was in", when, s)
				}
			}
			if imageSum(t, w.img, size) != sha256.Sum256(w.m) {
				t.Fatalf("%s: live image of %s reads wrong", when, w.ds)
			}
		}
		if imageSum(t, aux, auxSize) != sha256.Sum256(maux) {
			t.Fatalf("%s: live aux image reads wrong", when)
		}
	}
	checkAll("after concurrent GC")
	_, err := p.GC(ctx)
	check(t, err, "final gc")
	checkAll("after a final GC")
	for _, w := range ws {
		check(t, w.img.Close(), "close")
	}
	check(t, aux.Close(), "close aux")
}

// pauseCtx is a context whose Err blocks, the first time it is called,
// until release is closed. GC calls Err while it walks the index files, so
// this stops GC after it marked the open images and before it reads the
// index files.
type pauseCtx struct {
	context.Context
	once    sync.Once
	reached chan struct{}
	release chan struct{}
}

func newPauseCtx() *pauseCtx {
	return &pauseCtx{Context: context.Background(), reached: make(chan struct{}), release: make(chan struct{})}
}

func (c *pauseCtx) Err() error {
	c.once.Do(func() {
		close(c.reached)
		<-c.release
	})
	return c.Context.Err()
}

// waitChan waits up to 10 s for c.
func waitChan[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not done within 10 s; goroutines:\n%s", what, allStacks())
		panic("unreachable")
	}
}

// TestGCSnapshotRace: a snapshot that has read an image's index, and not
// yet published it, holds references to chunks that no index file and no
// open image may name any more by the time GC marks. GC must not sweep them.
//
// The test stops GC after it marked open images (of which there are none)
// and stops the snapshot between reading image a's index and image b's
// (by holding b's lock); meanwhile a is rewritten, so that a's old chunk is
// only in the snapshot's copy of the index.
func TestGCSnapshotRace(t *testing.T) {
	ctx := context.Background()
	p, _ := newTestPool(t, 0)
	cs := int64(p.ChunkSize())
	ds := agentDataset(t, p, "race")
	oldData, newData := randBytes(1, int(cs)), randBytes(2, int(cs))
	m := make([]byte, 2*cs)
	a := createOpen(t, p, ds, "a", 2*cs)
	writeModel(t, a, m, oldData, 0)
	check(t, a.Close(), "close a")
	oldState := sha256.Sum256(m)
	check(t, p.CreateImage(ctx, ds, "b", 2*cs), "create b")

	gctx := newPauseCtx()
	gcDone := make(chan error, 1)
	go func() {
		_, err := p.GC(gctx)
		gcDone <- err
	}()
	waitChan(t, gctx.reached, "GC reaching its walk")

	// Opened after GC looked at the open images; its lock stops the
	// snapshot.
	b, err := p.OpenImage(ctx, ds, "b")
	check(t, err, "open b")
	defer b.Close()
	check(t, writeAllAt(b, []byte("dirty"), 100), "write b")
	p.mu.Lock()
	hb := p.heads[indexPath(t, p, ds, "b")]
	p.mu.Unlock()
	hb.mu.Lock()
	locked := true
	defer func() {
		if locked {
			hb.mu.Unlock()
		}
	}()

	snapErr := make(chan error, 1)
	snapDone := make(chan struct{})
	go func() {
		defer close(snapDone)
		_, err := p.Snapshot(ctx, ds, "s1")
		snapErr <- err
	}()
	waitBlocked(t, snapDone, "(*Pool).Snapshot")

	// Rewrite a: its old chunk is now in no index file and no open image.
	a, err = p.OpenImage(ctx, ds, "a")
	check(t, err, "reopen a")
	writeModel(t, a, m, newData, 0)
	check(t, a.Close(), "close a again")
	newState := sha256.Sum256(m)

	close(gctx.release)
	check(t, waitChan(t, gcDone, "GC"), "gc")
	hb.mu.Unlock()
	locked = false
	check(t, waitChan(t, snapErr, "snapshot"), "snapshot")

	s1 := snapOf(t, ds, "s1")
	verifyClean(t, p, s1)
	if got := snapSum(t, p, s1, "a"); got != oldState && got != newState {
		t.Fatal("snapshot of a reads neither before nor after the rewrite")
	}
}

func writeAllAt(img zfs.Image, b []byte, off int64) error {
	n, err := img.WriteAt(b, off)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	return err
}

// TestReceiveGCSnapshotNoDeadlock: a receive waiting for its stream, a GC
// and a snapshot of another dataset with unsynced writes must all finish
// once the stream arrives, whatever order they reach their locks in. The
// test makes them reach their locks in the worst order it can: the receive
// first, then GC, then the snapshot.
func TestReceiveGCSnapshotNoDeadlock(t *testing.T) {
	ctx := context.Background()
	// Not newTestPool: after a deadlock, Close would hang too.
	p := openTestPool(t, t.TempDir(), 0)
	cs := int64(p.ChunkSize())
	src := agentDataset(t, p, "src")
	img := createOpen(t, p, src, "vol", 4*cs)
	msrc := make([]byte, 4*cs)
	writeModel(t, img, msrc, randBytes(7, int(3*cs)), 100)
	check(t, img.Close(), "close")
	_, err := p.Snapshot(ctx, src, "s1")
	check(t, err, "snapshot src")
	var stream bytes.Buffer
	check(t, p.Send(ctx, snapOf(t, src, "s1"), "", &stream), "send")

	w := agentDataset(t, p, "w")
	wimg := createOpen(t, p, w, "vol", 4*cs)
	writeModel(t, wimg, make([]byte, 4*cs), randBytes(8, int(cs)), 0) // unsynced

	target, err := zfs.AgentDataset(p.Root(), "copy")
	check(t, err, "target name")
	pr, pw := io.Pipe()
	recvErr := make(chan error, 1)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		_, err := p.Receive(ctx, target, pr)
		recvErr <- err
	}()
	waitBlocked(t, recvDone, "(*Pool).receive")

	gcErr := make(chan error, 1)
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		_, err := p.GC(ctx)
		gcErr <- err
	}()
	waitBlocked(t, gcDone, "(*Pool).GC")

	snapErr := make(chan error, 1)
	snapDone := make(chan struct{})
	go func() {
		defer close(snapDone)
		_, err := p.Snapshot(ctx, w, "s1")
		snapErr <- err
	}()
	waitBlocked(t, snapDone, "(*Pool).Snapshot")

	go func() {
		pw.Write(stream.Bytes())
		pw.Close()
	}()
	check(t, waitChan(t, recvErr, "receive"), "receive")
	check(t, waitChan(t, gcErr, "gc"), "gc")
	check(t, waitChan(t, snapErr, "snapshot"), "snapshot")

	got := snapOf(t, target, "s1")
	verifyClean(t, p, got)
	if snapSum(t, p, got, "vol") != sha256.Sum256(msrc) {
		t.Fatal("received snapshot differs from the source")
	}
	verifyClean(t, p, snapOf(t, w, "s1"))
	check(t, wimg.Close(), "close w")
	check(t, p.Close(), "close pool")
}
