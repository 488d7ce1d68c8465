package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cairnbackup/cairn/zfs"
)

// head is the live state of one image while it is open: its index and the
// chunks changed since they were last stored. All handles on an image share
// one head.
type head struct {
	p    *Pool
	path string // index file

	mu    sync.RWMutex
	ix    *index
	dirty map[int64][]byte // chunk number → its new full content
	// known says what the writer knew of dirty chunks written whole by
	// writeHashed or writeEncoded (their SHA-256, how they were encoded),
	// so that flushing does not hash or compress them again.
	known      map[int64]*known
	dirtyBytes int64 // of dirty chunks and the frames in known
	changed    bool  // ix differs from the index file
	refs       int   // open handles; guarded by p.mu
}

// CreateImage creates an all-zero image.
func (p *Pool) CreateImage(ctx context.Context, ds zfs.DatasetName, image string, size int64) error {
	what := imageName(ds, image)
	if err := zfs.ValidComponent(image); err != nil {
		return &zfs.Error{Op: "create image", Name: what, Err: err}
	}
	if size < 0 || size > maxImageSize {
		return &zfs.Error{Op: "create image", Name: what, Err: fmt.Errorf("size %d: %w", size, zfs.ErrOutOfRange)}
	}
	done, err := p.begin(ctx)
	if err != nil {
		return &zfs.Error{Op: "create image", Name: what, Err: err}
	}
	defer done()
	defer p.lockDS(ds)()
	dir, err := p.existingDS(ds)
	if err != nil {
		return &zfs.Error{Op: "create image", Name: what, Err: err}
	}
	path := filepath.Join(dir, imagesDir, image+indexExt)
	if _, err := os.Stat(path); err == nil {
		return &zfs.Error{Op: "create image", Name: what, Err: zfs.ErrExists}
	}
	if err := p.writeFileDurable(path, newIndex(p.chunkSize, size).marshal()); err != nil {
		return &zfs.Error{Op: "create image", Name: what, Err: err}
	}
	return nil
}

func imageName(ds zfs.DatasetName, image string) string { return ds.String() + ":" + image }

// OpenImage opens a live image.
func (p *Pool) OpenImage(ctx context.Context, ds zfs.DatasetName, image string) (zfs.Image, error) {
	what := imageName(ds, image)
	if err := zfs.ValidComponent(image); err != nil {
		return nil, &zfs.Error{Op: "open image", Name: what, Err: err}
	}
	done, err := p.begin(ctx)
	if err != nil {
		return nil, &zfs.Error{Op: "open image", Name: what, Err: err}
	}
	defer done()
	dir, err := p.existingDS(ds)
	if err != nil {
		return nil, &zfs.Error{Op: "open image", Name: what, Err: err}
	}
	path := filepath.Join(dir, imagesDir, image+indexExt)
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.heads[path]
	if h == nil {
		ix, err := p.readIndex(path)
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("image %w", zfs.ErrNotFound)
		}
		if err != nil {
			return nil, &zfs.Error{Op: "open image", Name: what, Err: err}
		}
		h = &head{p: p, path: path, ix: ix, dirty: make(map[int64][]byte), known: make(map[int64]*known)}
		p.heads[path] = h
	}
	h.refs++
	return &liveImage{h: h, name: what}, nil
}

// Images lists the live images of ds.
func (p *Pool) Images(ctx context.Context, ds zfs.DatasetName) ([]zfs.ImageInfo, error) {
	done, err := p.begin(ctx)
	if err != nil {
		return nil, opErr("list images", ds, err)
	}
	defer done()
	dir, err := p.existingDS(ds)
	if err != nil {
		return nil, opErr("list images", ds, err)
	}
	out, err := p.listImages(filepath.Join(dir, imagesDir))
	if err != nil {
		return nil, opErr("list images", ds, err)
	}
	return out, nil
}

// listImages lists the index files in dir with the sizes they record.
func (p *Pool) listImages(dir string) ([]zfs.ImageInfo, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*"+indexExt))
	if err != nil {
		return nil, err
	}
	out := make([]zfs.ImageInfo, 0, len(paths))
	for _, path := range paths {
		p.mu.Lock()
		h := p.heads[path]
		p.mu.Unlock()
		var size int64
		if h != nil {
			size = h.size()
		} else {
			ix, err := p.readIndex(path)
			if err != nil {
				return nil, err
			}
			size = ix.size
		}
		out = append(out, zfs.ImageInfo{Name: strings.TrimSuffix(filepath.Base(path), indexExt), Size: size})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (h *head) size() int64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.ix.size
}

var chunkBufs sync.Pool

func (h *head) getBuf(n int64) []byte {
	if b, ok := chunkBufs.Get().(*[]byte); ok && int64(cap(*b)) >= n {
		return (*b)[:n]
	}
	return make([]byte, n, h.ix.chunkSize)
}

func putBuf(b []byte) { chunkBufs.Put(&b) }

func (h *head) writeAt(b []byte, off int64) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, err := h.writeLocked(b, off)
	if err != nil {
		return n, err
	}
	h.flushIfFull()
	return n, nil
}

// writeHashed is writeAt for a caller that knows what b is (k: its
// SHA-256, and maybe its encoding): when b is exactly one chunk, flushing
// uses k rather than hashing and compressing the chunk again. The caller
// must be sure of k: a chunk is stored under k.sum, as k says.
func (h *head) writeHashed(b []byte, off int64, k *known) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, err := h.writeLocked(b, off)
	if err != nil {
		return n, err
	}
	if cs := h.ix.chunkSize; off%cs == 0 && int64(len(b)) == h.ix.chunkLen(off/cs) {
		if k.frame != nil {
			k.frame = bytes.Clone(k.frame) // the caller's buffer is reused
			h.dirtyBytes += int64(len(k.frame))
		}
		h.known[off/cs] = k
	}
	h.flushIfFull()
	return n, nil
}

// writeLocked copies b into the dirty chunks it covers. The caller holds
// h.mu.
func (h *head) writeLocked(b []byte, off int64) (int, error) {
	ix := h.ix
	if off < 0 || off > ix.size || int64(len(b)) > ix.size-off {
		return 0, fmt.Errorf("write %d bytes at %d of %d: %w", len(b), off, ix.size, zfs.ErrOutOfRange)
	}
	cs := ix.chunkSize
	for n := 0; n < len(b); {
		pos := off + int64(n)
		i, within := pos/cs, pos%cs
		clen := ix.chunkLen(i)
		buf := h.dirty[i]
		if buf == nil {
			buf = h.getBuf(clen)
			if within != 0 || int64(len(b)-n) < clen {
				// A partial write: start from what the chunk holds now.
				if err := h.p.chunks.get(ix.entries[i], buf); err != nil {
					putBuf(buf)
					return n, fmt.Errorf("read chunk %d for a partial write: %w", i, err)
				}
			}
			h.dirty[i] = buf
			h.dirtyBytes += clen
		}
		n += copy(buf[within:], b[n:])
		h.forget(i) // the chunk's content is no longer what was known
	}
	return len(b), nil
}

// forget drops what was known of dirty chunk i. The caller holds h.mu.
func (h *head) forget(i int64) {
	if k := h.known[i]; k != nil {
		h.dirtyBytes -= int64(len(k.frame))
		delete(h.known, i)
	}
}

// flushIfFull stores the dirty chunks once they take maxDirty. On failure
// they stay in memory and the next flush, at the latest Sync, tries again
// and reports the error. The caller holds h.mu.
func (h *head) flushIfFull() {
	if h.dirtyBytes >= h.p.maxDirty {
		_ = h.flushLocked()
	}
}

// flushLocked stores the dirty chunks (hash, compress, write) on all CPUs
// and points the index at them. The caller holds h.mu.
func (h *head) flushLocked() error {
	if len(h.dirty) == 0 {
		return nil
	}
	h.p.flushMu.RLock()
	defer h.p.flushMu.RUnlock()
	nums := make([]int64, 0, len(h.dirty))
	for i := range h.dirty {
		nums = append(nums, i)
	}
	sort.Slice(nums, func(a, b int) bool { return nums[a] < nums[b] })
	entries := make([]entry, len(nums))
	errs := make([]error, len(nums))
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := next.Add(1) - 1; k < int64(len(nums)); k = next.Add(1) - 1 {
				entries[k], errs[k] = h.p.chunks.put(h.dirty[nums[k]], h.known[nums[k]])
			}
		}()
	}
	wg.Wait()
	var first error
	for k, i := range nums {
		if errs[k] != nil {
			first = cmpErr(first, errs[k])
			continue
		}
		h.ix.entries[i] = entries[k]
		h.dirtyBytes -= int64(len(h.dirty[i]))
		putBuf(h.dirty[i])
		delete(h.dirty, i)
		h.forget(i)
		h.changed = true
	}
	return first
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// syncedIndex stores dirty chunks, makes them and the index durable, and
// returns a copy of the index.
func (h *head) syncedIndex() (*index, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.syncLocked(); err != nil {
		return nil, err
	}
	return h.ix.clone(), nil
}

func (h *head) sync() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.syncLocked()
}

func (h *head) syncLocked() error {
	if err := h.flushLocked(); err != nil {
		return err
	}
	if !h.changed {
		return nil
	}
	if err := h.p.chunks.barrier(); err != nil {
		return err
	}
	if err := h.p.writeFileDurable(h.path, h.ix.marshal()); err != nil {
		return err
	}
	h.changed = false
	return nil
}

func (h *head) readAt(b []byte, off int64) (int, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return readIndexAt(h.p.chunks, h.ix, h.dirty, b, off)
}

// readIndexAt reads an image through its index (and, for a live image, the
// chunks changed in memory).
func readIndexAt(cs *chunkStore, ix *index, dirty map[int64][]byte, b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, zfs.ErrOutOfRange)
	}
	if off >= ix.size {
		return 0, io.EOF
	}
	want := len(b)
	if rest := ix.size - off; int64(want) > rest {
		b = b[:rest]
	}
	var tmp []byte
	for n := 0; n < len(b); {
		pos := off + int64(n)
		i, within := pos/ix.chunkSize, pos%ix.chunkSize
		clen := ix.chunkLen(i)
		if buf := dirty[i]; buf != nil {
			n += copy(b[n:], buf[within:])
			continue
		}
		if within == 0 && int64(len(b)-n) >= clen {
			if err := cs.get(ix.entries[i], b[n:n+int(clen)]); err != nil {
				return n, fmt.Errorf("read at %d: %w: %w", pos, zfs.ErrCorrupt, err)
			}
			n += int(clen)
			continue
		}
		if tmp == nil {
			tmp = make([]byte, ix.chunkSize)
		}
		if err := cs.get(ix.entries[i], tmp[:clen]); err != nil {
			return n, fmt.Errorf("read at %d: %w: %w", pos, zfs.ErrCorrupt, err)
		}
		n += copy(b[n:], tmp[within:clen])
	}
	if len(b) < want {
		return len(b), io.EOF
	}
	return len(b), nil
}

// liveImage is one handle on a head.
type liveImage struct {
	h      *head
	name   string
	closed atomic.Bool
}

func (im *liveImage) ReadAt(b []byte, off int64) (int, error) {
	if im.closed.Load() {
		return 0, &zfs.Error{Op: "read", Name: im.name, Err: zfs.ErrClosed}
	}
	n, err := im.h.readAt(b, off)
	if err != nil && err != io.EOF {
		err = &zfs.Error{Op: "read", Name: im.name, Err: err}
	}
	return n, err
}

func (im *liveImage) WriteAt(b []byte, off int64) (int, error) {
	if im.closed.Load() {
		return 0, &zfs.Error{Op: "write", Name: im.name, Err: zfs.ErrClosed}
	}
	n, err := im.h.writeAt(b, off)
	if err != nil {
		err = &zfs.Error{Op: "write", Name: im.name, Err: err}
	}
	return n, err
}

// WriteAtHashed is WriteAt for a caller that has computed the SHA-256 of
// b (zfs.HashedWriter): a write of exactly one chunk (64 KiB, aligned) is
// stored without hashing it again.
func (im *liveImage) WriteAtHashed(b []byte, off int64, sum [32]byte) (int, error) {
	return im.writeKnown(b, off, &known{sum: digest(sum)})
}

// WriteAtEncoded is WriteAtHashed for a caller that has b encoded too
// (zfs.EncodedWriter): a write of exactly one chunk is stored as frame (a
// zstd frame that decodes to b) when it is smaller than b, else raw,
// without hashing or compressing it again.
func (im *liveImage) WriteAtEncoded(b []byte, off int64, sum [32]byte, frame []byte) (int, error) {
	return im.writeKnown(b, off, &known{sum: digest(sum), raw: frame == nil, frame: frame})
}

func (im *liveImage) writeKnown(b []byte, off int64, k *known) (int, error) {
	if im.closed.Load() {
		return 0, &zfs.Error{Op: "write", Name: im.name, Err: zfs.ErrClosed}
	}
	n, err := im.h.writeHashed(b, off, k)
	if err != nil {
		err = &zfs.Error{Op: "write", Name: im.name, Err: err}
	}
	return n, err
}

func (im *liveImage) Size() int64 { return im.h.size() }

func (im *liveImage) Sync() error {
	if im.closed.Load() {
		return &zfs.Error{Op: "sync", Name: im.name, Err: zfs.ErrClosed}
	}
	if err := im.h.sync(); err != nil {
		return &zfs.Error{Op: "sync", Name: im.name, Err: err}
	}
	return nil
}

// Close closes the handle. When it is the image's last handle, the image's
// writes are stored and made durable first, so that they are never held
// only in memory by an image nobody has open.
func (im *liveImage) Close() error {
	if im.closed.Swap(true) {
		return nil
	}
	h := im.h
	err := h.sync()
	p := h.p
	p.mu.Lock()
	h.refs--
	if h.refs == 0 && err == nil {
		delete(p.heads, h.path)
	}
	p.mu.Unlock()
	if err != nil {
		return &zfs.Error{Op: "close", Name: im.name, Err: err}
	}
	return nil
}

// SnapshotImages lists the images of a snapshot.
func (p *Pool) SnapshotImages(ctx context.Context, snap zfs.SnapshotName) ([]zfs.ImageInfo, error) {
	done, err := p.begin(ctx)
	if err != nil {
		return nil, opErr("list snapshot images", snap, err)
	}
	defer done()
	dir, err := p.snapDir(snap)
	if err != nil {
		return nil, opErr("list snapshot images", snap, err)
	}
	out, err := p.listImages(dir)
	if err != nil {
		return nil, opErr("list snapshot images", snap, err)
	}
	return out, nil
}

// OpenSnapshotImage opens one image of a snapshot for reading.
func (p *Pool) OpenSnapshotImage(ctx context.Context, snap zfs.SnapshotName, image string) (zfs.ImageReader, error) {
	what := snap.String() + ":" + image
	ix, err := p.snapshotIndex(ctx, snap, image)
	if err != nil {
		return nil, &zfs.Error{Op: "open snapshot image", Name: what, Err: err}
	}
	return &snapImage{cs: p.chunks, ix: ix, name: what}, nil
}

func (p *Pool) snapshotIndex(ctx context.Context, snap zfs.SnapshotName, image string) (*index, error) {
	if err := zfs.ValidComponent(image); err != nil {
		return nil, err
	}
	done, err := p.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	dir, err := p.snapDir(snap)
	if err != nil {
		return nil, err
	}
	ix, err := p.readIndex(filepath.Join(dir, image+indexExt))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %w", zfs.ErrNotFound)
	}
	return ix, err
}

// snapImage reads a snapshot's image. Its index is loaded once: the
// snapshot cannot change, and its chunks stay until no index references
// them (a destroyed snapshot's chunks may go at the next GC, after which
// reads fail with ErrCorrupt).
type snapImage struct {
	cs   *chunkStore
	ix   *index
	name string
}

func (s *snapImage) ReadAt(b []byte, off int64) (int, error) {
	n, err := readIndexAt(s.cs, s.ix, nil, b, off)
	if err != nil && err != io.EOF {
		err = &zfs.Error{Op: "read", Name: s.name, Err: err}
	}
	return n, err
}

func (s *snapImage) Size() int64 { return s.ix.size }

func (s *snapImage) Close() error { return nil }

// Verify re-reads every chunk of every image of snap and checks its digest.
func (p *Pool) Verify(ctx context.Context, snap zfs.SnapshotName) (zfs.VerifyReport, error) {
	rep := zfs.VerifyReport{Snapshot: snap}
	images, err := p.SnapshotImages(ctx, snap)
	if err != nil {
		return rep, err
	}
	buf := make([]byte, p.chunkSize)
	for _, im := range images {
		ix, err := p.snapshotIndex(ctx, snap, im.Name)
		if err != nil {
			return rep, &zfs.Error{Op: "verify", Name: snap.String() + ":" + im.Name, Err: err}
		}
		rep.Images++
		for i, e := range ix.entries {
			if i%256 == 0 {
				if err := ctx.Err(); err != nil {
					return rep, err
				}
			}
			clen := ix.chunkLen(int64(i))
			if err := p.chunks.get(e, buf[:clen]); err != nil {
				rep.Problems = append(rep.Problems, zfs.VerifyProblem{
					Image: im.Name, Offset: int64(i) * ix.chunkSize, Length: clen, Err: err.Error(),
				})
			}
			rep.Bytes += clen
		}
	}
	return rep, nil
}
