package agentv1_test

import (
	"bytes"
	"crypto/sha256"
	"testing"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

func TestBlockSize(t *testing.T) {
	for _, tc := range []struct {
		in   uint32
		want int
		ok   bool
	}{
		{0, 64 << 10, true}, {4 << 10, 4 << 10, true}, {4 << 20, 4 << 20, true}, {1 << 20, 1 << 20, true},
		{2 << 10, 0, false}, {8 << 20, 0, false}, {96 << 10, 0, false}, {1, 0, false},
	} {
		got, err := agentv1.BlockSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("BlockSize(%d) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestBlocksAndLengths(t *testing.T) {
	const bs = 4096
	if n := agentv1.Blocks(0, bs); n != 0 {
		t.Errorf("Blocks(0) = %d", n)
	}
	if n := agentv1.Blocks(3*bs+1, bs); n != 4 {
		t.Errorf("Blocks(3 blocks + 1) = %d, want 4", n)
	}
	if l := agentv1.BlockLength(3*bs+1, bs, 3); l != 1 {
		t.Errorf("last block length %d, want 1", l)
	}
	if l := agentv1.BlockLength(3*bs+1, bs, 2); l != bs {
		t.Errorf("block 2 length %d, want %d", l, bs)
	}
}

func TestZeroHashAndIsZero(t *testing.T) {
	for _, n := range []int{1, 7, 8, 9, 4096, 65536} {
		z := make([]byte, n)
		if agentv1.ZeroHash(n) != sha256.Sum256(z) || agentv1.ZeroHash(n) != agentv1.HashBlock(z) {
			t.Errorf("ZeroHash(%d) is not the hash of %d zeros", n, n)
		}
		if !agentv1.IsZero(z) {
			t.Errorf("IsZero(%d zeros) = false", n)
		}
		for _, i := range []int{0, n / 2, n - 1} {
			z[i] = 1
			if agentv1.IsZero(z) {
				t.Errorf("IsZero with byte %d of %d set = true", i, n)
			}
			z[i] = 0
		}
	}
}

func TestManifestIsHashOfHashes(t *testing.T) {
	var m agentv1.Manifest
	var all []byte
	for i := range 5 {
		h := agentv1.HashBlock(bytes.Repeat([]byte{byte(i)}, 100))
		m.Add(h[:])
		all = append(all, h[:]...)
	}
	want := sha256.Sum256(all)
	if !bytes.Equal(m.Sum(), want[:]) || m.Blocks() != 5 {
		t.Errorf("manifest %x of %d blocks, want %x of 5", m.Sum(), m.Blocks(), want)
	}
	var empty agentv1.Manifest
	if e := sha256.Sum256(nil); !bytes.Equal(empty.Sum(), e[:]) {
		t.Errorf("empty manifest %x, want %x", empty.Sum(), e)
	}
}

func TestIsZeroLargerThanItsBuffer(t *testing.T) {
	b := make([]byte, 200<<10+3)
	if !agentv1.IsZero(b) {
		t.Fatal("zeros not zero")
	}
	b[len(b)-1] = 1
	if agentv1.IsZero(b) {
		t.Fatal("last byte set, still zero")
	}
}

func BenchmarkIsZero(b *testing.B) {
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if !agentv1.IsZero(buf) {
			b.Fatal("not zero")
		}
	}
}
