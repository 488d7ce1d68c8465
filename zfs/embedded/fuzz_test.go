package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/cairnbackup/cairn/zfs"
)

// FuzzParseIndex: parseIndex never panics, and an index it accepts
// marshals back to the same bytes (there is one encoding of an index). With
// fixTrailer the input gets a correct SHA-256 trailer appended, so that the
// fuzzer gets past the checksum to the fields behind it.
func FuzzParseIndex(f *testing.F) {
	holes := newIndex(minChunkSize, 5*minChunkSize+1)
	full := newIndex(DefaultChunkSize, 3*DefaultChunkSize)
	for i := range full.entries {
		full.entries[i] = entry{sum: sha256.Sum256([]byte{byte(i)}), stored: uint32(100 * (i + 1))}
	}
	mixed := full.clone()
	mixed.entries[1] = entry{}
	for _, ix := range []*index{newIndex(DefaultChunkSize, 0), newIndex(DefaultChunkSize, 1), holes, full, mixed} {
		b := ix.marshal()
		f.Add(b, false)
		f.Add(b[:len(b)-sha256.Size], true)
	}
	f.Add([]byte(indexMagic), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, fixTrailer bool) {
		if fixTrailer {
			sum := sha256.Sum256(b)
			b = append(b[:len(b):len(b)], sum[:]...)
		}
		ix, err := parseIndex(b)
		if err != nil {
			if !errors.Is(err, errBadIndex) {
				t.Fatalf("parseIndex error %v does not wrap errBadIndex", err)
			}
			return
		}
		if int64(len(ix.entries)) != chunkCount(ix.size, ix.chunkSize) {
			t.Fatalf("accepted %d entries for %d bytes in chunks of %d", len(ix.entries), ix.size, ix.chunkSize)
		}
		if got := ix.marshal(); !bytes.Equal(got, b) {
			t.Fatalf("accepted index marshals differently:\n in  %x\n out %x", b, got)
		}
	})
}

// FuzzReceive: Receive of any bytes never panics; it fails with ErrStream
// (or ErrExists/ErrNotFound for the target) and leaves the target as it
// was: absent for a new target (mode even), or with only its base snapshot
// and live image for an existing one (mode odd, the target first receives
// the full stream the seed incremental applies to).
func FuzzReceive(f *testing.F) {
	ctx := context.Background()
	// Small chunks keep the streams small for the fuzzer.
	p, err := Open(Config{Dir: f.TempDir(), Name: testPoolName, ChunkSize: minChunkSize})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { p.Close() })
	cs := p.ChunkSize()
	src := agentDataset(f, p, "src")
	size := 5*cs + 100
	img := createOpen(f, p, src, "vol", size)
	m := make([]byte, size)
	writeModel(f, img, m, randBytes(1, int(cs)), 0)
	writeModel(f, img, m, randBytes(1, int(cs)), 2*cs) // the same chunk twice: a ref record
	writeModel(f, img, m, bytes.Repeat([]byte("zstd "), 300), 3*cs+10)
	writeModel(f, img, m, []byte("tail"), size-4)
	check(f, img.Sync(), "sync")
	efi := createOpen(f, p, src, "efi", 100)
	writeModel(f, efi, make([]byte, 100), []byte("efi"), 0)
	check(f, efi.Close(), "close")
	_, err = p.Snapshot(ctx, src, "s1")
	check(f, err, "s1")
	writeModel(f, img, m, randBytes(2, 200), cs-100)
	check(f, img.Close(), "close")
	_, err = p.Snapshot(ctx, src, "s2")
	check(f, err, "s2")
	var fullStream, incStream bytes.Buffer
	check(f, p.Send(ctx, snapOf(f, src, "s1"), "", &fullStream), "send s1")
	check(f, p.Send(ctx, snapOf(f, src, "s2"), "s1", &incStream), "send s2 from s1")
	full, inc := fullStream.Bytes(), incStream.Bytes()
	agents, err := p.Root().Child(zfs.AgentsComponent)
	check(f, err, "agents")

	for _, s := range [][]byte{full, inc} {
		for mode := uint8(0); mode < 2; mode++ {
			f.Add(mode, s)
			f.Add(mode, s[:len(s)/2])
			f.Add(mode, s[:len(s)-1])
			f.Add(mode, s[:40])
			for _, at := range []int{9, 20, len(s) / 3, len(s) - 40, len(s) - 1} {
				flipped := slices.Clone(s)
				flipped[at] ^= 0x10
				f.Add(mode, flipped)
			}
		}
	}
	f.Add(uint8(0), []byte{})
	f.Add(uint8(0), []byte(streamMagic))

	var seq atomic.Int64
	f.Fuzz(func(t *testing.T, mode uint8, stream []byte) {
		n := seq.Add(1)
		target, err := agents.Child(fmt.Sprintf("fz%d", n))
		check(t, err, "target name")
		existing := mode%2 == 1
		if existing {
			_, err := p.Receive(ctx, target, bytes.NewReader(full))
			check(t, err, "receive the base")
			defer func() { check(t, p.DestroyDataset(ctx, target), "destroy target") }()
		}
		info, err := p.Receive(ctx, target, bytes.NewReader(stream))
		if err == nil {
			// Only a well-formed stream gets here (its trailer is a SHA-256).
			verifyClean(t, p, info.Name)
			if !existing {
				check(t, p.DestroyDataset(ctx, target), "destroy received")
			}
			return
		}
		if !isErr(err, zfs.ErrStream, zfs.ErrExists, zfs.ErrNotFound) {
			t.Fatalf("receive: %v; want ErrStream, ErrExists or ErrNotFound", err)
		}
		if !existing {
			if _, err := p.Dataset(ctx, target); !errors.Is(err, zfs.ErrNotFound) {
				t.Fatalf("failed receive (%v) left dataset %s behind: %v", err, target, err)
			}
			return
		}
		snaps, err := p.Snapshots(ctx, target)
		check(t, err, "snapshots")
		if len(snaps) != 1 || snaps[0].Name.Snap() != "s1" {
			t.Fatalf("failed receive changed the target's snapshots: %v", snaps)
		}
		live, err := p.OpenImage(ctx, target, "vol")
		check(t, err, "open live image")
		defer live.Close()
		if snapSum(t, p, snaps[0].Name, "vol") != imageSum(t, live, live.Size()) {
			t.Fatal("failed receive changed the target's live image")
		}
		if n%200 == 0 {
			_, err := p.GC(ctx)
			check(t, err, "gc")
		}
	})
}
