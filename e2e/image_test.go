package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"testing"
)

// The test images: sparse files whose blocks are random or zero, made
// from a seed so that a test can say exactly what it changed.

const imageBlock = 64 << 10

// makeImage creates a sparse image of size bytes at path in which each
// 64 KiB block is random with probability dense (0..1), zero otherwise.
func makeImage(t testing.TB, path string, size int64, dense float64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewChaCha8(seedBytes(seed)))
	// Write runs of random blocks at once: fewer, larger writes.
	buf := make([]byte, 0, 4<<20)
	var runStart int64 = -1
	flush := func() {
		if len(buf) > 0 {
			if _, err := f.WriteAt(buf, runStart); err != nil {
				t.Fatal(err)
			}
		}
		buf, runStart = buf[:0], -1
	}
	for off := int64(0); off < size; off += imageBlock {
		n := min(int64(imageBlock), size-off)
		if rng.Float64() >= dense {
			flush()
			continue
		}
		if runStart < 0 {
			runStart = off
		}
		start := len(buf)
		buf = buf[:start+int(n)]
		fillRandom(rng, buf[start:])
		if len(buf) >= cap(buf)-imageBlock {
			flush()
		}
	}
	flush()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// changeImage overwrites n random 64 KiB blocks of the image with new
// random data (or zeros, for every fourth one when zeros is set) and
// returns the bytes changed.
func changeImage(t testing.TB, path string, n int, zeros bool, seed uint64) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	blocks := st.Size() / imageBlock
	rng := rand.New(rand.NewChaCha8(seedBytes(seed)))
	picked := make(map[int64]bool, n)
	buf := make([]byte, imageBlock)
	for len(picked) < n && len(picked) < int(blocks) {
		b := rng.Int64N(blocks)
		if picked[b] {
			continue
		}
		picked[b] = true
		if zeros && len(picked)%4 == 0 {
			clear(buf)
		} else {
			fillRandom(rng, buf)
		}
		if _, err := f.WriteAt(buf, b*imageBlock); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return int64(len(picked)) * imageBlock
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		b[i], b[i+1], b[i+2], b[i+3], b[i+4], b[i+5], b[i+6], b[i+7] =
			byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
	}
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return s
}

// fileHash is the SHA-256 of a file, hex.
func fileHash(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
