package embedded

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// Chunk files start with one byte that says how the rest is encoded.
const (
	chunkRaw  = 0 // the chunk's bytes as they are (incompressible data)
	chunkZstd = 1 // one zstd frame
)

const (
	minChunkSize = 4 << 10
	maxChunkSize = 16 << 20
	prefixDirs   = 4096 // chunks/000 … chunks/fff
)

// chunkStore keeps content-addressed chunks under dir/chunks. A new chunk is
// first written to dir/tmp and only renamed into chunks/ by barrier, after
// its bytes are durable, so a chunk file that exists is always complete.
type chunkStore struct {
	dir    string // pool directory
	tmpDir string
	enc    *zstd.Encoder
	dec    *zstd.Decoder

	mu      sync.Mutex
	pending map[digest]string // chunks written to tmp, not yet renamed into place
	tmpSeq  uint64
	gc      *gcState // non-nil while a GC runs: chunks used since it started

	bytesWritten atomic.Int64 // chunk bytes written to disk, for measurement
}

func newChunkStore(dir string) (*chunkStore, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxChunkSize), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, err
	}
	return &chunkStore{
		dir: dir, tmpDir: filepath.Join(dir, "tmp"),
		enc: enc, dec: dec,
		pending: make(map[digest]string),
	}, nil
}

func (s *chunkStore) close() {
	s.enc.Close()
	s.dec.Close()
}

// path is where chunk d lives once durable: chunks/<first 3 hex digits>/<hex>.
func (s *chunkStore) path(d digest) string {
	h := hex.EncodeToString(d[:])
	return filepath.Join(s.dir, "chunks", h[:3], h)
}

// moveIntoPlace renames a durable temporary chunk file to path, creating
// its prefix directory on first use.
func moveIntoPlace(tmp, path string) error {
	err := os.Rename(tmp, path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		err = os.Rename(tmp, path)
	}
	return err
}

func isZero(b []byte) bool {
	for len(b) >= len(zeroBlock) {
		if !bytes.Equal(b[:len(zeroBlock)], zeroBlock[:]) {
			return false
		}
		b = b[len(zeroBlock):]
	}
	return bytes.Equal(b, zeroBlock[:len(b)])
}

var zeroBlock [64 << 10]byte

// encode hashes and encodes one chunk. An all-zero chunk is a hole.
func (s *chunkStore) encode(data []byte) (digest, []byte) {
	if isZero(data) {
		return digest{}, nil
	}
	sum := sha256.Sum256(data)
	out := make([]byte, 1, len(data)/2+16)
	out[0] = chunkZstd
	out = s.enc.EncodeAll(data, out)
	if len(out) >= len(data)+1 {
		out = append(append(out[:0], chunkRaw), data...)
	}
	return sum, out
}

// put stores a chunk and returns its entry. The chunk is not durable until
// the next barrier.
func (s *chunkStore) put(data []byte) (entry, error) {
	sum, enc := s.encode(data)
	if sum.isHole() {
		return entry{}, nil
	}
	return s.putEncoded(sum, enc)
}

// putEncoded stores an already encoded chunk whose digest the caller checked.
func (s *chunkStore) putEncoded(sum digest, enc []byte) (entry, error) {
	e := entry{sum: sum, stored: uint32(len(enc))}
	s.mu.Lock()
	if s.gc != nil {
		s.gc.used[sum] = struct{}{}
	}
	if _, ok := s.pending[sum]; ok {
		s.mu.Unlock()
		return e, nil
	}
	s.tmpSeq++
	tmp := filepath.Join(s.tmpDir, fmt.Sprintf("chunk-%d", s.tmpSeq))
	s.mu.Unlock()

	// A chunk that is already stored is not written again (dedup). A GC
	// that runs now cannot remove it: either it saw the chunk used (recorded
	// above), or it started later and waits for the caller, who holds
	// Pool.flushMu, to install the entry in an index (see gc.go).
	if _, err := os.Stat(s.path(sum)); err == nil {
		return e, nil
	}
	if err := os.WriteFile(tmp, enc, 0o600); err != nil {
		return entry{}, fmt.Errorf("write chunk: %w", err)
	}
	s.bytesWritten.Add(int64(len(enc)))
	s.mu.Lock()
	if _, ok := s.pending[sum]; ok { // another writer stored it meanwhile
		s.mu.Unlock()
		os.Remove(tmp)
		return e, nil
	}
	s.pending[sum] = tmp
	s.mu.Unlock()
	return e, nil
}

// ref records that an index about to be written references chunk d that the
// caller did not put, and checks that it exists.
func (s *chunkStore) ref(d digest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gc != nil {
		s.gc.used[d] = struct{}{}
	}
	if _, ok := s.pending[d]; ok {
		return nil
	}
	if _, err := os.Stat(s.path(d)); err != nil {
		return fmt.Errorf("chunk %s: %w", d, err)
	}
	return nil
}

// barrier makes every pending chunk durable and moves it into place: flush
// the file system, rename, flush again (so that the renames are durable
// before anything that references the chunks is published).
func (s *chunkStore) barrier() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return nil
	}
	if err := syncFS(s.dir); err != nil {
		return fmt.Errorf("sync chunks: %w", err)
	}
	for d, tmp := range s.pending {
		if err := moveIntoPlace(tmp, s.path(d)); err != nil {
			return fmt.Errorf("store chunk: %w", err)
		}
		delete(s.pending, d)
	}
	if err := syncFS(s.dir); err != nil {
		return fmt.Errorf("sync chunk directories: %w", err)
	}
	return nil
}

// errChunk wraps chunk read failures that mean the data is damaged or gone.
var errChunk = errors.New("chunk damaged or missing")

// get reads chunk e into buf (which has the chunk's length) and checks its
// digest.
func (s *chunkStore) get(e entry, buf []byte) error {
	if e.sum.isHole() {
		clear(buf)
		return nil
	}
	s.mu.Lock()
	path, ok := s.pending[e.sum]
	s.mu.Unlock()
	if !ok {
		path = s.path(e.sum)
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		// It may have been renamed into place since we looked.
		raw, err = os.ReadFile(s.path(e.sum))
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s: missing", errChunk, e.sum)
		}
		return fmt.Errorf("read chunk %s: %w", e.sum, err)
	}
	return s.decode(e.sum, raw, buf)
}

// decode decodes a stored chunk into buf and checks it against sum.
func (s *chunkStore) decode(sum digest, raw, buf []byte) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: %s: empty", errChunk, sum)
	}
	switch raw[0] {
	case chunkRaw:
		if len(raw)-1 != len(buf) {
			return fmt.Errorf("%w: %s: %d bytes, want %d", errChunk, sum, len(raw)-1, len(buf))
		}
		copy(buf, raw[1:])
	case chunkZstd:
		out, err := s.dec.DecodeAll(raw[1:], buf[:0])
		if err != nil || len(out) != len(buf) || &out[0] != &buf[0] {
			return fmt.Errorf("%w: %s: decode: %d bytes, %v", errChunk, sum, len(out), err)
		}
	default:
		return fmt.Errorf("%w: %s: unknown encoding %d", errChunk, sum, raw[0])
	}
	if sha256.Sum256(buf) != sum {
		return fmt.Errorf("%w: %s: checksum mismatch", errChunk, sum)
	}
	return nil
}

// readRaw returns a chunk's stored bytes, for send.
func (s *chunkStore) readRaw(d digest) ([]byte, error) {
	s.mu.Lock()
	path, ok := s.pending[d]
	s.mu.Unlock()
	if !ok {
		path = s.path(d)
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && ok {
		raw, err = os.ReadFile(s.path(d))
	}
	return raw, err
}
