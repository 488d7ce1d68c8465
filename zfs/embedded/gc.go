package embedded

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// gcState records the chunks stored or referenced while a GC runs.
type gcState struct {
	used map[digest]struct{}
}

// GCStats is what a GC did.
type GCStats struct {
	Marked         int   // distinct chunks referenced by some index
	Removed        int   // chunks no index references, removed
	PacksRemoved   int   // pack files deleted
	PacksCompacted int   // packs whose live chunks were moved so the pack could go
	BytesRemoved   int64 // size of the deleted pack files
	BytesMoved     int64 // live chunk bytes rewritten by compaction
}

// GC removes the chunks that no live image or snapshot references (mark and
// sweep): a pack with no live chunk is deleted, and a pack less than half
// live is compacted (its live chunks are written again elsewhere and the
// pack deleted). It is safe to run while images are written, snapshots
// taken and streams received:
//
//   - From its start until it ends, every chunk stored or referenced is
//     recorded as used (chunkStore.gc) and counts as live.
//   - Writers hold flushMu (shared) from storing a chunk until its entry is in
//     an open image's index or a receive's root set; a snapshot holds it from
//     referencing the chunks of the indexes it copies (chunkStore.refAll)
//     until the snapshot is published. GC takes flushMu once, after it
//     started recording, so that every chunk stored or referenced before GC
//     started is reachable before marking.
//   - Marking reads open images' indexes in memory, then the root sets of
//     receives, then the index files: an image closed or a receive committed
//     meanwhile is seen in one or the other.
//   - A snapshot that copied an index whose chunk was swept since (the image
//     was rewritten meanwhile) finds the chunk missing when it references it,
//     and reads the indexes again.
//   - A pack is deleted under the store's lock, after checking again that
//     nothing in it is live; storing a chunk takes the same lock.
func (p *Pool) GC(ctx context.Context) (GCStats, error) {
	var st GCStats
	if err := p.checkOpen(); err != nil {
		return st, err
	}
	p.gcMu.Lock()
	defer p.gcMu.Unlock()

	cs := p.chunks
	cs.mu.Lock()
	cs.gc = &gcState{used: make(map[digest]struct{})}
	cs.mu.Unlock()
	defer func() {
		cs.mu.Lock()
		cs.gc = nil
		cs.mu.Unlock()
	}()
	// The empty critical section waits for earlier flushes.
	p.flushMu.Lock()
	//lint:ignore SA2001 see above
	p.flushMu.Unlock()

	marked, err := p.mark(ctx)
	if err != nil {
		return st, fmt.Errorf("gc mark: %w", err)
	}
	st.Marked = len(marked)
	// Seal what is pending so that every chunk is in a sealed pack.
	if err := cs.barrier(); err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	for _, id := range cs.sealedPacks() {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		live, dead, size := cs.liveness(id, marked)
		switch {
		case dead == 0:
			continue
		case live > 0 && live >= size/2:
			continue // mostly live: not worth rewriting yet
		case live > 0:
			moved, err := cs.compact(id, marked)
			if err != nil {
				return st, fmt.Errorf("gc compact: %w", err)
			}
			st.BytesMoved += moved
			st.PacksCompacted++
		}
		removed, ok, err := cs.dropPack(id, marked)
		if err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
		if ok {
			st.Removed += removed
			st.PacksRemoved++
			st.BytesRemoved += size
		}
	}
	p.log.Info("gc done", "marked", st.Marked, "removed", st.Removed, "packs_removed", st.PacksRemoved,
		"packs_compacted", st.PacksCompacted, "bytes_removed", st.BytesRemoved, "bytes_moved", st.BytesMoved)
	return st, nil
}

// mark returns every chunk that an open image or an index file references.
func (p *Pool) mark(ctx context.Context) (map[digest]struct{}, error) {
	marked := make(map[digest]struct{})
	add := func(ix *index) {
		for _, e := range ix.entries {
			if !e.sum.isHole() {
				marked[e.sum] = struct{}{}
			}
		}
	}
	p.mu.Lock()
	heads := make([]*head, 0, len(p.heads))
	for _, h := range p.heads {
		heads = append(heads, h)
	}
	p.mu.Unlock()
	for _, h := range heads {
		h.mu.RLock()
		add(h.ix)
		h.mu.RUnlock()
	}
	p.mu.Lock()
	roots := make([]*rootSet, 0, len(p.roots))
	for r := range p.roots {
		roots = append(roots, r)
	}
	p.mu.Unlock()
	for _, r := range roots {
		r.mu.Lock()
		for d := range r.sums {
			marked[d] = struct{}{}
		}
		r.mu.Unlock()
	}
	err := filepath.WalkDir(filepath.Join(p.dir, "datasets"), func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // destroyed while we walk
		}
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, indexExt) {
			return ctx.Err()
		}
		ix, err := p.readIndex(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err // never sweep on a partial mark
		}
		add(ix)
		return nil
	})
	return marked, err
}

func (s *chunkStore) isLive(d digest, marked map[digest]struct{}) bool {
	if _, ok := marked[d]; ok {
		return true
	}
	_, ok := s.gc.used[d]
	return ok
}

// liveness returns the live and dead bytes of a sealed pack and its size.
func (s *chunkStore) liveness(id uint32, marked map[digest]struct{}) (live, dead, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.sealed[id] {
		n := int64(recordHeader + r.n)
		if l, ok := s.locs[r.sum]; ok && l.pack == id && s.isLive(r.sum, marked) {
			live += n
		} else {
			dead += n
		}
	}
	if info, err := os.Stat(s.packPath(id, ".pack")); err == nil {
		size = info.Size()
	}
	dead = max(dead, size-live) // records written twice are dead too
	return live, dead, size
}

// compact writes the live chunks of pack id again (into the current pack)
// and seals them, so that dropPack can delete pack id.
func (s *chunkStore) compact(id uint32, marked map[digest]struct{}) (int64, error) {
	s.mu.Lock()
	var move []tocRec
	for _, r := range s.sealed[id] {
		if l, ok := s.locs[r.sum]; ok && l.pack == id && s.isLive(r.sum, marked) {
			move = append(move, r)
		}
	}
	s.mu.Unlock()
	var moved int64
	for _, r := range move {
		raw, err := s.pread(loc{pack: id, off: r.off, n: r.n})
		if err != nil {
			return moved, err
		}
		hdr := make([]byte, recordHeader)
		copy(hdr, r.sum[:])
		binary.BigEndian.PutUint32(hdr[sha256.Size:], r.n)
		n := int64(len(hdr) + len(raw))
		s.mu.Lock()
		p, off, err := s.reserve(n)
		s.mu.Unlock()
		if err != nil {
			return moved, err
		}
		err = s.writeRecord(p, off, hdr, raw)
		if err == nil {
			s.mu.Lock()
			if l, ok := s.locs[r.sum]; ok && l.pack == id {
				s.locs[r.sum] = loc{pack: p.id, off: off, n: r.n}
				p.toc = append(p.toc, tocRec{sum: r.sum, off: off, n: r.n})
			}
			s.mu.Unlock()
			s.bytesWritten.Add(n)
			moved += n
		}
		p.writers.Done()
		if err != nil {
			return moved, err
		}
	}
	return moved, s.barrier()
}

// dropPack deletes pack id if nothing in it is live any more; it reports the
// chunks that went with it.
func (s *chunkStore) dropPack(id uint32, marked map[digest]struct{}) (int, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := s.sealed[id]
	for _, r := range recs {
		if l, ok := s.locs[r.sum]; ok && l.pack == id && s.isLive(r.sum, marked) {
			return 0, false, nil // used again since liveness; a later GC may take it
		}
	}
	// The TOC goes first: a pack without one is deleted at open.
	if err := os.Remove(s.packPath(id, ".toc")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, false, err
	}
	removed := 0
	for _, r := range recs {
		if l, ok := s.locs[r.sum]; ok && l.pack == id {
			delete(s.locs, r.sum)
			removed++
		}
	}
	delete(s.sealed, id)
	s.fdMu.Lock()
	if f := s.fds[id]; f != nil {
		f.Close()
		delete(s.fds, id)
	}
	s.fdMu.Unlock()
	if err := os.Remove(s.packPath(id, ".pack")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return removed, true, err
	}
	return removed, true, nil
}

// rootSet holds the chunks a receive stored or referenced for indexes it has
// not committed yet; GC's mark counts them as live.
type rootSet struct {
	mu   sync.Mutex
	sums map[digest]struct{}
}

func (r *rootSet) add(d digest) {
	if d.isHole() {
		return
	}
	r.mu.Lock()
	r.sums[d] = struct{}{}
	r.mu.Unlock()
}

// addRoots registers a root set; the caller drops it once what it protects
// is in index files.
func (p *Pool) addRoots() *rootSet {
	r := &rootSet{sums: make(map[digest]struct{})}
	p.mu.Lock()
	p.roots[r] = struct{}{}
	p.mu.Unlock()
	return r
}

func (p *Pool) dropRoots(r *rootSet) {
	p.mu.Lock()
	delete(p.roots, r)
	p.mu.Unlock()
}
