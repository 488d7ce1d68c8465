package embedded

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// gcState records the chunks stored or referenced while a GC runs.
type gcState struct {
	used map[digest]struct{}
}

// GCStats is what a GC did.
type GCStats struct {
	Marked       int   // distinct chunks referenced by some index
	Removed      int   // chunk files removed
	BytesRemoved int64 // their stored size
}

// GC removes the chunks that no live image or snapshot references
// (mark and sweep). It is safe to run while images are written, snapshots
// taken and streams received:
//
//   - From its start until it ends, every chunk stored or referenced is
//     recorded as used (chunkStore.gc) and is not swept.
//   - Writers hold flushMu (shared) from storing a chunk until its entry is in
//     an index; GC takes flushMu once, after it started recording, so that
//     every chunk stored before GC started is in an index before marking.
//   - Marking reads open images' indexes in memory before the index files,
//     so an image closed meanwhile is seen in one or the other.
//   - Sweeping decides and removes each chunk under the store's lock, which
//     storing also takes.
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
	//lint:ignore SA2001 the empty critical section waits for earlier flushes
	p.flushMu.Lock()
	p.flushMu.Unlock()

	marked := make(map[digest]struct{})
	mark := func(ix *index) {
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
		mark(h.ix)
		h.mu.RUnlock()
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
		mark(ix)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("gc mark: %w", err)
	}
	st.Marked = len(marked)

	for i := 0; i < prefixDirs; i++ {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		dir := filepath.Join(p.dir, "chunks", fmt.Sprintf("%03x", i))
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("gc sweep: %w", err)
		}
		for _, e := range ents {
			var d digest
			if len(e.Name()) != 2*len(d) {
				continue
			}
			if _, err := hex.Decode(d[:], []byte(e.Name())); err != nil {
				continue // not a chunk
			}
			if _, ok := marked[d]; ok {
				continue
			}
			size, removed, err := cs.sweep(d, filepath.Join(dir, e.Name()))
			if err != nil {
				return st, fmt.Errorf("gc sweep: %w", err)
			}
			if removed {
				st.Removed++
				st.BytesRemoved += size
			}
		}
	}
	p.log.Info("gc done", "marked", st.Marked, "removed", st.Removed, "bytes_removed", st.BytesRemoved)
	return st, nil
}

// sweep removes an unmarked chunk unless it was used since the GC started.
func (s *chunkStore) sweep(d digest, path string) (size int64, removed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, used := s.gc.used[d]; used {
		return 0, false, nil
	}
	info, err := os.Stat(path)
	if err == nil {
		err = os.Remove(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return info.Size(), true, nil
}
