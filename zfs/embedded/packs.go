package embedded

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/klauspost/compress/zstd"
)

// The chunk store appends chunks to pack files, packs/<id>.pack:
//
//	record   digest [32]byte, n uint32, then n bytes: an encoding byte
//	         (chunkRaw or chunkZstd) and the chunk
//
// A pack is sealed by the next barrier: the pack is fsynced, then its table of
// contents, packs/<id>.toc, is written to a temporary file, fsynced and
// renamed into place:
//
//	toc      magic "CAIRNTOC", count uint64,
//	         count × (digest [32]byte, offset uint64, n uint32),
//	         SHA-256 of everything before
//
// Indexes are published only after a barrier, so every chunk an index names
// is in a sealed pack. A pack without a TOC after a crash was never
// referenced and is deleted at open. One file per pack, not per chunk: on
// ext4, creating a file per 64 KiB chunk costs more than writing the data.
const (
	chunkRaw  = 0 // the chunk's bytes as they are (incompressible data)
	chunkZstd = 1 // one zstd frame

	minChunkSize = 4 << 10
	maxChunkSize = 16 << 20

	recordHeader = sha256.Size + 4
	tocMagic     = "CAIRNTOC"
	tocEntry     = sha256.Size + 8 + 4
	maxPackSize  = 64 << 20 // a pack is rolled over after this many bytes
	maxOpenPacks = 256      // read handles kept open
)

// loc is where a chunk's record is. Fields are ordered to keep it at 16
// bytes: the store keeps one per chunk in memory.
type loc struct {
	off  int64 // of the record
	pack uint32
	n    uint32 // stored bytes after the header
}

type pack struct {
	id      uint32
	f       *os.File // open for writing while unsealed
	d       *os.File // f opened with O_DIRECT, or nil (see segments.go)
	size    int64    // bytes reserved
	toc     []tocRec // records that the locs map points at
	writers sync.WaitGroup

	// Staged segments, when written with O_DIRECT (segs not nil).
	flushMu  sync.Mutex // one flushSegs at a time
	mu       sync.Mutex
	cond     sync.Cond          // on mu: a segment write ended
	segs     map[int64]*segment // by number (offset / segSize), until written
	closed   bool               // takes no more reservations
	inflight int                // segment writes
	padded   bool               // the file extends past size
}

type tocRec struct {
	sum digest
	off int64
	n   uint32
}

// chunkStore is the pool's content-addressed chunk store.
type chunkStore struct {
	dir string // pool directory; packs in dir/packs
	enc *zstd.Encoder
	dec *zstd.Decoder

	mu       sync.Mutex
	locs     map[digest]loc
	sealed   map[uint32][]tocRec // sealed packs' records
	cur      *pack               // pack being appended to
	unsealed []*pack             // full packs not yet sealed
	nextID   uint32
	gc       *gcState // non-nil while a GC runs: chunks used since it started

	barrierMu sync.Mutex // one barrier at a time, so a barrier returns only when all is sealed

	fdMu sync.RWMutex
	fds  map[uint32]*os.File // read handles

	writing    map[uint32]*pack // packs not sealed yet, by id; guarded by mu
	noDirect   atomic.Bool      // O_DIRECT was refused: write through the page cache
	failedSegs atomic.Int64     // staged segments whose last write failed
	segSem     chan struct{}    // segment writes in flight
	segMu      sync.Mutex
	segFree    [][]byte // segment buffers for reuse

	bytesWritten atomic.Int64 // bytes written to disk, for measurement
}

func (s *chunkStore) packPath(id uint32, ext string) string {
	return filepath.Join(s.dir, "packs", fmt.Sprintf("%08x%s", id, ext))
}

func openChunkStore(dir string) (*chunkStore, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxChunkSize), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, err
	}
	s := &chunkStore{
		dir: dir, enc: enc, dec: dec,
		locs: make(map[digest]loc), sealed: make(map[uint32][]tocRec), fds: make(map[uint32]*os.File),
		writing: make(map[uint32]*pack), segSem: make(chan struct{}, maxSegWrites),
	}
	if err := s.load(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// load reads every sealed pack's TOC and deletes unsealed packs, which no
// index can reference (see above).
func (s *chunkStore) load() error {
	pdir := filepath.Join(s.dir, "packs")
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(pdir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		base, ext, _ := strings.Cut(name, ".")
		id, err := strconv.ParseUint(base, 16, 32)
		if err != nil {
			continue
		}
		s.nextID = max(s.nextID, uint32(id)+1)
		switch ext {
		case "pack":
			if _, err := os.Stat(s.packPath(uint32(id), ".toc")); errors.Is(err, fs.ErrNotExist) {
				if err := os.Remove(filepath.Join(pdir, name)); err != nil {
					return err
				}
			}
		case "toc":
			b, err := os.ReadFile(filepath.Join(pdir, name))
			if err != nil {
				return err
			}
			recs, err := parseTOC(b)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			for _, r := range recs {
				s.locs[r.sum] = loc{pack: uint32(id), off: r.off, n: r.n}
			}
			s.sealed[uint32(id)] = recs
		default: // a TOC being written when the pool stopped
			if err := os.Remove(filepath.Join(pdir, name)); err != nil {
				return err
			}
		}
	}
	return nil
}

func marshalTOC(recs []tocRec) []byte {
	b := make([]byte, 0, len(tocMagic)+8+len(recs)*tocEntry+sha256.Size)
	b = append(b, tocMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(recs)))
	for _, r := range recs {
		b = append(b, r.sum[:]...)
		b = binary.BigEndian.AppendUint64(b, uint64(r.off))
		b = binary.BigEndian.AppendUint32(b, r.n)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

var errBadTOC = errors.New("bad pack table of contents")

func parseTOC(b []byte) ([]tocRec, error) {
	if len(b) < len(tocMagic)+8+sha256.Size || string(b[:len(tocMagic)]) != tocMagic {
		return nil, fmt.Errorf("%w: no header", errBadTOC)
	}
	body, trailer := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], trailer) {
		return nil, fmt.Errorf("%w: checksum mismatch", errBadTOC)
	}
	count := binary.BigEndian.Uint64(body[len(tocMagic):])
	p := body[len(tocMagic)+8:]
	if uint64(len(p)) != count*tocEntry {
		return nil, fmt.Errorf("%w: %d entries in %d bytes", errBadTOC, count, len(p))
	}
	recs := make([]tocRec, count)
	for i := range recs {
		copy(recs[i].sum[:], p)
		recs[i].off = int64(binary.BigEndian.Uint64(p[sha256.Size:]))
		recs[i].n = binary.BigEndian.Uint32(p[sha256.Size+8:])
		if recs[i].off < 0 || recs[i].n == 0 || recs[i].n > maxChunkSize+1 {
			return nil, fmt.Errorf("%w: entry %d", errBadTOC, i)
		}
		p = p[tocEntry:]
	}
	return recs, nil
}

func (s *chunkStore) close() error {
	s.enc.Close()
	s.dec.Close()
	s.fdMu.Lock()
	defer s.fdMu.Unlock()
	var errs []error
	for id, f := range s.fds {
		errs = append(errs, f.Close())
		delete(s.fds, id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.writing {
		p.mu.Lock()
		for p.inflight > 0 {
			p.cond.Wait()
		}
		p.mu.Unlock()
		errs = append(errs, p.f.Close())
		if p.d != nil {
			errs = append(errs, p.d.Close())
		}
	}
	clear(s.writing)
	return errors.Join(errs...)
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

// known is what the caller of put knows about a chunk already.
type known struct {
	sum digest // the chunk's SHA-256
	// How it was received, when the caller has that: raw says the chunk
	// did not compress (it is stored raw without trying again); frame,
	// if not nil, is zstd data that decodes to the chunk.
	raw   bool
	frame []byte
}

// encode hashes and encodes one chunk: its record is hdr (the header and
// the encoding byte) then body. An all-zero chunk is a hole and has no
// record. k, if not nil, is what the caller knows: the chunk is then not
// hashed again, nor compressed again when k says how it is encoded.
func (s *chunkStore) encode(data []byte, k *known) (sum digest, hdr, body []byte) {
	if isZero(data) {
		return digest{}, nil, nil
	}
	hdr = make([]byte, recordHeader+1)
	switch {
	case k == nil:
		sum = sha256.Sum256(data)
	case !k.raw && k.frame == nil:
		sum = k.sum
	case k.frame != nil && len(k.frame) < len(data):
		sum, hdr[recordHeader], body = k.sum, chunkZstd, k.frame
	default:
		// Raw, or a frame no smaller than the data (stored raw, as this
		// store would have).
		sum, hdr[recordHeader], body = k.sum, chunkRaw, data
	}
	if body == nil {
		rec := make([]byte, recordHeader+1, recordHeader+1+len(data)+16)
		rec = s.enc.EncodeAll(data, rec)
		if len(rec) >= recordHeader+1+len(data) {
			hdr[recordHeader], body = chunkRaw, data
		} else {
			hdr, body = rec[:recordHeader+1], rec[recordHeader+1:]
			hdr[recordHeader] = chunkZstd
		}
	}
	copy(hdr, sum[:])
	binary.BigEndian.PutUint32(hdr[sha256.Size:], uint32(1+len(body)))
	return sum, hdr, body
}

// put stores a chunk and returns its entry. It is durable after the next
// barrier. k, if not nil, is what the caller knows of data (see known):
// its SHA-256, and how it is encoded.
func (s *chunkStore) put(data []byte, k *known) (entry, error) {
	sum, hdr, body := s.encode(data, k)
	if sum.isHole() {
		return entry{}, nil
	}
	return s.putRecord(sum, hdr, body)
}

// putEncoded stores a chunk already encoded (encoding byte and data) whose
// digest the caller has checked.
func (s *chunkStore) putEncoded(sum digest, enc []byte) (entry, error) {
	hdr := make([]byte, recordHeader)
	copy(hdr, sum[:])
	binary.BigEndian.PutUint32(hdr[sha256.Size:], uint32(len(enc)))
	return s.putRecord(sum, hdr, enc)
}

// putRecord stores the record hdr+body of chunk sum, unless the chunk is
// stored already.
func (s *chunkStore) putRecord(sum digest, hdr, body []byte) (entry, error) {
	n := len(hdr) + len(body)
	e := entry{sum: sum, stored: uint32(n - recordHeader)}
	if s.failedSegs.Load() > 0 {
		if err := s.retrySegs(); err != nil {
			return entry{}, fmt.Errorf("write chunk: %w", err)
		}
	}
	s.mu.Lock()
	if s.gc != nil {
		s.gc.used[sum] = struct{}{}
	}
	if _, ok := s.locs[sum]; ok { // dedup
		s.mu.Unlock()
		return e, nil
	}
	p, off, err := s.reserve(int64(n))
	s.mu.Unlock()
	if err != nil {
		return entry{}, err
	}
	defer p.writers.Done() // after the record is in p.toc, which seal reads after waiting
	if err := s.writeRecord(p, off, hdr, body); err != nil {
		return entry{}, fmt.Errorf("write chunk: %w", err)
	}
	s.bytesWritten.Add(int64(n))
	s.mu.Lock()
	if _, ok := s.locs[sum]; !ok { // else another writer stored it first; ours is garbage
		s.locs[sum] = loc{pack: p.id, off: off, n: e.stored}
		p.toc = append(p.toc, tocRec{sum: sum, off: off, n: e.stored})
	}
	s.mu.Unlock()
	return e, nil
}

// reserve takes n bytes at the end of the current pack, rolling over to a
// new pack when it is full. The caller holds s.mu and calls p.writers.Done
// once it has written.
func (s *chunkStore) reserve(n int64) (*pack, int64, error) {
	if s.cur != nil && s.cur.size+n > maxPackSize {
		full := s.cur
		s.unsealed = append(s.unsealed, full)
		s.cur = nil
		// Start writing the full pack back now, while chunks are still being
		// hashed and compressed; the barrier that seals it has less to wait
		// for. Only a hint: sealing syncs again.
		go func() {
			full.writers.Wait()
			if s.flushSegs(full) == nil {
				_ = full.f.Sync()
			}
		}()
	}
	if s.cur == nil {
		id := s.nextID
		f, err := os.OpenFile(s.packPath(id, ".pack"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, 0, fmt.Errorf("new pack: %w", err)
		}
		s.nextID++
		p := &pack{id: id, f: f}
		if !s.noDirect.Load() {
			if d, err := openDirect(s.packPath(id, ".pack")); err == nil {
				p.d, p.segs = d, make(map[int64]*segment)
				p.cond.L = &p.mu
			} else if errors.Is(err, syscall.EINVAL) || errors.Is(err, errors.ErrUnsupported) {
				s.noDirect.Store(true) // refused for good (tmpfs on old kernels, FUSE…; not Linux)
			} // else (out of file descriptors, …): this pack through the page cache

		}
		s.cur = p
		s.writing[id] = p
	}
	p := s.cur
	off := p.size
	p.size += n
	p.writers.Add(1)
	if p.segs != nil {
		s.stage(p, off, n)
	}
	return p, off, nil
}

// ref records that an index about to be written references chunk d that the
// caller did not put, and checks that it exists.
func (s *chunkStore) ref(d digest) (uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gc != nil {
		s.gc.used[d] = struct{}{}
	}
	l, ok := s.locs[d]
	if !ok {
		return 0, fmt.Errorf("%w: %s: missing", errChunk, d)
	}
	return l.n, nil
}

// refAll references every chunk of indexes, as ref does, under one lock.
func (s *chunkStore) refAll(indexes map[string]*index) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ix := range indexes {
		for _, e := range ix.entries {
			if e.sum.isHole() {
				continue
			}
			if s.gc != nil {
				s.gc.used[e.sum] = struct{}{}
			}
			if _, ok := s.locs[e.sum]; !ok {
				return fmt.Errorf("%w: %s: missing", errChunk, e.sum)
			}
		}
	}
	return nil
}

// barrier seals every pack written to so far: when it returns, every chunk
// put before it is durable and will be found after a crash.
func (s *chunkStore) barrier() error {
	s.barrierMu.Lock()
	defer s.barrierMu.Unlock()
	s.mu.Lock()
	todo := s.unsealed
	if s.cur != nil {
		todo = append(todo, s.cur)
	}
	s.cur, s.unsealed = nil, nil
	s.mu.Unlock()
	for i, p := range todo {
		if err := s.seal(p); err != nil {
			// Keep what is not sealed for the next barrier to try again.
			s.mu.Lock()
			s.unsealed = append(s.unsealed, todo[i:]...)
			s.mu.Unlock()
			return err
		}
	}
	if len(todo) > 0 {
		return syncDir(filepath.Join(s.dir, "packs"))
	}
	return nil
}

func (s *chunkStore) seal(p *pack) error {
	p.writers.Wait()
	if err := s.flushSegs(p); err != nil {
		return err
	}
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("sync pack: %w", err)
	}
	s.mu.Lock()
	recs := append([]tocRec(nil), p.toc...)
	s.mu.Unlock()
	b := marshalTOC(recs)
	tmp := s.packPath(p.id, ".toc.tmp")
	if err := writeSynced(tmp, b); err != nil {
		return fmt.Errorf("write pack toc: %w", err)
	}
	if err := os.Rename(tmp, s.packPath(p.id, ".toc")); err != nil {
		return fmt.Errorf("write pack toc: %w", err)
	}
	s.bytesWritten.Add(int64(len(b)))
	s.mu.Lock()
	s.sealed[p.id] = recs
	delete(s.writing, p.id)
	s.mu.Unlock()
	err := p.f.Close()
	if p.d != nil {
		err = errors.Join(err, p.d.Close())
	}
	return err
}

// writeSynced writes a new file and fsyncs it.
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// errChunk wraps chunk read failures that mean the data is damaged or gone.
var errChunk = errors.New("chunk damaged or missing")

// readRaw returns a chunk's stored bytes (encoding byte and data).
func (s *chunkStore) readRaw(d digest) ([]byte, error) {
	for try := 0; ; try++ {
		s.mu.Lock()
		l, ok := s.locs[d]
		s.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("%w: %s: missing", errChunk, d)
		}
		raw, err := s.pread(l)
		if err == nil || try == 1 || !errors.Is(err, fs.ErrNotExist) {
			return raw, err
		}
		// The pack was compacted away after we looked: look again.
	}
}

// pread reads a record's stored bytes and checks its header.
func (s *chunkStore) pread(l loc) ([]byte, error) {
	buf := make([]byte, recordHeader+int(l.n))
	s.mu.Lock()
	p := s.writing[l.pack]
	s.mu.Unlock()
	if p != nil && p.segs != nil {
		// Not sealed: what is not on disk yet is in memory.
		for _, r := range p.readStaged(buf, l.off) {
			if err := s.preadFile(l.pack, buf[r[0]-l.off:r[1]-l.off], r[0]); err != nil {
				return checkRecord(nil, err)
			}
		}
		return checkRecord(buf, nil)
	}
	return checkRecord(buf, s.preadFile(l.pack, buf, l.off))
}

// preadFile reads pack id's file at off into buf.
func (s *chunkStore) preadFile(id uint32, buf []byte, off int64) error {
	s.fdMu.RLock()
	f := s.fds[id]
	if f != nil {
		_, err := f.ReadAt(buf, off)
		s.fdMu.RUnlock()
		return err
	}
	s.fdMu.RUnlock()
	f, err := s.openPack(id)
	if err != nil {
		return err
	}
	s.fdMu.RLock()
	_, err = f.ReadAt(buf, off)
	s.fdMu.RUnlock()
	return err
}

func checkRecord(buf []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", errChunk, err)
	}
	if binary.BigEndian.Uint32(buf[sha256.Size:]) != uint32(len(buf)-recordHeader) {
		return nil, fmt.Errorf("%w: bad record header", errChunk)
	}
	return buf[recordHeader:], nil
}

func (s *chunkStore) openPack(id uint32) (*os.File, error) {
	s.fdMu.Lock()
	defer s.fdMu.Unlock()
	if f := s.fds[id]; f != nil {
		return f, nil
	}
	if len(s.fds) >= maxOpenPacks {
		for oid, f := range s.fds {
			f.Close()
			delete(s.fds, oid)
		}
	}
	f, err := os.Open(s.packPath(id, ".pack"))
	if err != nil {
		return nil, err
	}
	s.fds[id] = f
	return f, nil
}

// get reads chunk e into buf (which has the chunk's length) and checks its digest.
func (s *chunkStore) get(e entry, buf []byte) error {
	if e.sum.isHole() {
		clear(buf)
		return nil
	}
	raw, err := s.readRaw(e.sum)
	if err != nil {
		return err
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
		if err != nil || len(out) != len(buf) || (len(buf) > 0 && &out[0] != &buf[0]) {
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

// sealedPacks lists sealed pack ids in order.
func (s *chunkStore) sealedPacks() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]uint32, 0, len(s.sealed))
	for id := range s.sealed {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}
