package embedded

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/cairnbackup/cairn/zfs"
)

// A send stream carries one snapshot:
//
//	magic    8 bytes "CAIRNSND"
//	header   uint32 length + JSON streamHeader
//	records  for each image in header order, one record per chunk:
//	           0                                   a hole
//	           1 digest[32]                        a chunk the receiver has (in the base)
//	           2 digest[32] uint32 n, n bytes      a stored chunk (encoding byte + data)
//	end      8 bytes "CAIRNEND", then SHA-256 of every byte before it
//
// A chunk is sent as data once per stream; a chunk that the base snapshot
// has is sent as a reference. The receiver checks every chunk's digest and
// the trailer before it makes anything visible.
const (
	streamMagic    = "CAIRNSND"
	streamEnd      = "CAIRNEND"
	maxHeaderBytes = 1 << 20
	maxImages      = 4096

	recHole = 0
	recRef  = 1
	recData = 2
)

type streamHeader struct {
	Version   int           `json:"version"`
	ChunkSize int64         `json:"chunk_size"`
	Snapshot  string        `json:"snapshot"` // name after '@'
	GUID      string        `json:"guid"`
	Created   time.Time     `json:"created"`
	Base      string        `json:"base,omitempty"` // "" for a full stream
	BaseGUID  string        `json:"base_guid,omitempty"`
	Images    []streamImage `json:"images"`
}

type streamImage struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Send writes snap (or what changed since base) to w.
func (p *Pool) Send(ctx context.Context, snap zfs.SnapshotName, base string, w io.Writer) error {
	if err := p.send(ctx, snap, base, w); err != nil {
		return opErr("send", snap, err)
	}
	return nil
}

func (p *Pool) send(ctx context.Context, snap zfs.SnapshotName, base string, w io.Writer) error {
	done, err := p.begin(ctx)
	if err != nil {
		return err
	}
	dir, err := p.snapDir(snap)
	var meta snapMeta
	if err == nil {
		meta, err = readSnapMeta(dir)
	}
	hdr := streamHeader{Version: 1, ChunkSize: p.chunkSize, Snapshot: snap.Snap(), GUID: meta.GUID, Created: meta.Created}
	indexes := make(map[string]*index)
	if err == nil {
		indexes, err = p.readSnapshotIndexes(dir)
	}
	have := make(map[digest]struct{}) // chunks the receiver has
	if err == nil && base != "" {
		var bs zfs.SnapshotName
		var bdir string
		var bmeta snapMeta
		var bix map[string]*index
		bs, err = snap.Dataset().Snapshot(base)
		if err == nil {
			bdir, err = p.snapDir(bs)
		}
		if err == nil {
			bmeta, err = readSnapMeta(bdir)
		}
		if err == nil {
			bix, err = p.readSnapshotIndexes(bdir)
		}
		if err != nil {
			err = fmt.Errorf("base %s: %w", base, err)
		}
		for _, ix := range bix {
			for _, e := range ix.entries {
				have[e.sum] = struct{}{}
			}
		}
		hdr.Base, hdr.BaseGUID = base, bmeta.GUID
	}
	// The indexes are read: the snapshot may be destroyed from here on and
	// its chunks stay until a GC, which a long send must not race with.
	done()
	if err != nil {
		return err
	}
	for name, ix := range indexes {
		hdr.Images = append(hdr.Images, streamImage{Name: name, Size: ix.size})
	}
	sort.Slice(hdr.Images, func(i, j int) bool { return hdr.Images[i].Name < hdr.Images[j].Name })

	sw := &streamWriter{w: bufio.NewWriterSize(w, 1<<20), h: sha256.New()}
	sw.write([]byte(streamMagic))
	hb, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	sw.write(binary.BigEndian.AppendUint32(nil, uint32(len(hb))))
	sw.write(hb)
	for _, im := range hdr.Images {
		for i, e := range indexes[im.Name].entries {
			if i%256 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if sw.err != nil {
				return sw.err
			}
			switch _, ok := have[e.sum]; {
			case e.sum.isHole():
				sw.write([]byte{recHole})
			case ok:
				sw.write(append([]byte{recRef}, e.sum[:]...))
			default:
				raw, err := p.chunks.readRaw(e.sum)
				if err != nil {
					return fmt.Errorf("image %s chunk %d: %w: %w", im.Name, i, zfs.ErrCorrupt, err)
				}
				rec := append([]byte{recData}, e.sum[:]...)
				sw.write(binary.BigEndian.AppendUint32(rec, uint32(len(raw))))
				sw.write(raw)
				have[e.sum] = struct{}{}
			}
		}
	}
	sw.write([]byte(streamEnd))
	if sw.err == nil {
		_, sw.err = sw.w.Write(sw.h.Sum(nil))
	}
	if sw.err == nil {
		sw.err = sw.w.Flush()
	}
	return sw.err
}

func (p *Pool) readSnapshotIndexes(dir string) (map[string]*index, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*"+indexExt))
	if err != nil {
		return nil, err
	}
	out := make(map[string]*index, len(paths))
	for _, path := range paths {
		ix, err := p.readIndex(path)
		if err != nil {
			return nil, err
		}
		out[filepath.Base(path[:len(path)-len(indexExt)])] = ix
	}
	return out, nil
}

// streamWriter hashes what it writes and keeps the first error.
type streamWriter struct {
	w   *bufio.Writer
	h   hash.Hash
	err error
}

func (s *streamWriter) write(b []byte) {
	if s.err != nil {
		return
	}
	s.h.Write(b)
	_, s.err = s.w.Write(b)
}

// streamReader hashes what it reads and turns every short read into
// ErrStream.
type streamReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (s *streamReader) read(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.r, b); err != nil {
		return nil, fmt.Errorf("%w: truncated: %w", zfs.ErrStream, err)
	}
	s.h.Write(b)
	return b, nil
}

func (s *streamReader) readInto(b []byte) error {
	if _, err := io.ReadFull(s.r, b); err != nil {
		return fmt.Errorf("%w: truncated: %w", zfs.ErrStream, err)
	}
	s.h.Write(b)
	return nil
}

func streamErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{zfs.ErrStream}, args...)...)
}

// Receive reads a stream made by Send into ds.
func (p *Pool) Receive(ctx context.Context, ds zfs.DatasetName, r io.Reader) (zfs.SnapshotInfo, error) {
	info, err := p.receive(ctx, ds, r)
	if err != nil {
		return zfs.SnapshotInfo{}, opErr("receive", ds, err)
	}
	return info, nil
}

func (p *Pool) receive(ctx context.Context, ds zfs.DatasetName, r io.Reader) (zfs.SnapshotInfo, error) {
	if err := ctx.Err(); err != nil {
		return zfs.SnapshotInfo{}, err
	}
	if err := p.checkOpen(); err != nil {
		return zfs.SnapshotInfo{}, err
	}
	if _, err := p.dsPath(ds); err != nil {
		return zfs.SnapshotInfo{}, err
	}
	// Chunks are stored as they arrive and indexes installed at the end: the
	// root set keeps GC from sweeping them in between (see GC).
	roots := p.addRoots()
	defer p.dropRoots(roots)

	sr := &streamReader{r: bufio.NewReaderSize(r, 1<<20), h: sha256.New()}
	hdr, err := p.readStreamHeader(sr)
	if err != nil {
		return zfs.SnapshotInfo{}, err
	}
	// Check the target before reading the data, and again at commit.
	if err := p.checkReceiveTarget(ds, hdr); err != nil {
		return zfs.SnapshotInfo{}, err
	}

	indexes := make(map[string]*index, len(hdr.Images))
	buf := make([]byte, p.chunkSize)
	for _, im := range hdr.Images {
		// The entries grow as records arrive: a header alone cannot make
		// us allocate the index of a huge image.
		count := chunkCount(im.Size, p.chunkSize)
		ix := &index{chunkSize: p.chunkSize, size: im.Size, entries: make([]entry, 0, min(count, 1<<12))}
		for i := int64(0); i < count; i++ {
			if i%256 == 0 {
				if err := ctx.Err(); err != nil {
					return zfs.SnapshotInfo{}, err
				}
			}
			e, err := p.receiveRecord(sr, buf[:ix.chunkLen(i)], roots)
			if err != nil {
				return zfs.SnapshotInfo{}, fmt.Errorf("image %s chunk %d: %w", im.Name, i, err)
			}
			ix.entries = append(ix.entries, e)
		}
		indexes[im.Name] = ix
	}
	end, err := sr.read(len(streamEnd))
	if err != nil {
		return zfs.SnapshotInfo{}, err
	}
	want := sr.h.Sum(nil)
	trailer := make([]byte, sha256.Size)
	if _, err := io.ReadFull(sr.r, trailer); err != nil || string(end) != streamEnd || !bytes.Equal(trailer, want) {
		return zfs.SnapshotInfo{}, streamErr("bad trailer")
	}
	if err := ctx.Err(); err != nil {
		return zfs.SnapshotInfo{}, err
	}
	if err := p.chunks.barrier(); err != nil {
		return zfs.SnapshotInfo{}, err
	}
	meta := snapMeta{GUID: hdr.GUID, Created: hdr.Created, Txg: p.nextTxg()}
	if hdr.Base == "" {
		err = p.commitFull(ds, hdr, meta, indexes)
	} else {
		err = p.commitIncremental(ds, hdr, meta, indexes)
	}
	if err != nil {
		return zfs.SnapshotInfo{}, err
	}
	name, _ := ds.Snapshot(hdr.Snapshot)
	return zfs.SnapshotInfo{Name: name, Created: meta.Created, CreateTxg: meta.Txg}, nil
}

func (p *Pool) readStreamHeader(sr *streamReader) (streamHeader, error) {
	var hdr streamHeader
	magic, err := sr.read(len(streamMagic))
	if err != nil {
		return hdr, err
	}
	if string(magic) != streamMagic {
		return hdr, streamErr("not an embedded pool stream")
	}
	lb, err := sr.read(4)
	if err != nil {
		return hdr, err
	}
	n := binary.BigEndian.Uint32(lb)
	if n > maxHeaderBytes {
		return hdr, streamErr("header of %d bytes", n)
	}
	hb, err := sr.read(int(n))
	if err != nil {
		return hdr, err
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return hdr, streamErr("header: %v", err)
	}
	return hdr, p.checkStreamHeader(hdr)
}

func (p *Pool) checkStreamHeader(hdr streamHeader) error {
	if hdr.Version != 1 {
		return streamErr("version %d", hdr.Version)
	}
	if hdr.ChunkSize != p.chunkSize {
		return streamErr("chunk size %d, this pool's is %d", hdr.ChunkSize, p.chunkSize)
	}
	if err := zfs.ValidComponent(hdr.Snapshot); err != nil {
		return streamErr("snapshot name: %v", err)
	}
	if hdr.Base != "" {
		if err := zfs.ValidComponent(hdr.Base); err != nil {
			return streamErr("base name: %v", err)
		}
	}
	if len(hdr.Images) > maxImages {
		return streamErr("%d images", len(hdr.Images))
	}
	seen := make(map[string]bool)
	for _, im := range hdr.Images {
		if err := zfs.ValidComponent(im.Name); err != nil || seen[im.Name] {
			return streamErr("image name %q", im.Name)
		}
		if im.Size < 0 || im.Size > maxImageSize {
			return streamErr("image %s size %d", im.Name, im.Size)
		}
		seen[im.Name] = true
	}
	return nil
}

// receiveRecord reads one chunk record into buf (of the chunk's length),
// stores or references its chunk and adds it to roots.
func (p *Pool) receiveRecord(sr *streamReader, buf []byte, roots *rootSet) (entry, error) {
	kind, err := sr.read(1)
	if err != nil {
		return entry{}, err
	}
	if kind[0] == recHole {
		return entry{}, nil
	}
	var e entry
	if err := sr.readInto(e.sum[:]); err != nil {
		return entry{}, err
	}
	if e.sum.isHole() {
		return entry{}, streamErr("zero digest")
	}
	var raw []byte
	switch kind[0] {
	case recRef:
	case recData:
		lb, err := sr.read(4)
		if err != nil {
			return entry{}, err
		}
		n := binary.BigEndian.Uint32(lb)
		if n == 0 || n > maxChunkSize+1 {
			return entry{}, streamErr("chunk of %d bytes", n)
		}
		if raw, err = sr.read(int(n)); err != nil {
			return entry{}, err
		}
		if err := p.chunks.decode(e.sum, raw, buf); err != nil {
			return entry{}, streamErr("%v", err)
		}
	default:
		return entry{}, streamErr("record type %d", kind[0])
	}
	// Store and add to roots under flushMu, but never wait for the
	// stream while holding it.
	p.flushMu.RLock()
	defer p.flushMu.RUnlock()
	if raw == nil {
		n, err := p.chunks.ref(e.sum)
		if err != nil {
			return entry{}, streamErr("chunk %s is not in the base: %v", e.sum, err)
		}
		e.stored = n
	} else if e, err = p.chunks.putEncoded(e.sum, raw); err != nil {
		return entry{}, err
	}
	roots.add(e.sum)
	return e, nil
}

// checkReceiveTarget checks that a stream applies to ds.
func (p *Pool) checkReceiveTarget(ds zfs.DatasetName, hdr streamHeader) error {
	dir, err := p.existingDS(ds)
	if hdr.Base == "" {
		if err == nil {
			return fmt.Errorf("full stream: dataset %w", zfs.ErrExists)
		}
		if parent, ok := ds.Parent(); ok {
			if _, err := p.existingDS(parent); err != nil {
				return fmt.Errorf("parent: %w", err)
			}
		}
		return nil
	}
	if err != nil {
		return err
	}
	_, metas, err := p.snapshots(ds, dir)
	if err != nil {
		return err
	}
	if len(metas) == 0 || metas[len(metas)-1].GUID != hdr.BaseGUID {
		return streamErr("incremental from %s does not apply: it is not the latest snapshot of %s", hdr.Base, ds)
	}
	if _, err := os.Stat(filepath.Join(dir, snapshotsDir, hdr.Snapshot)); err == nil {
		return fmt.Errorf("snapshot %s %w", hdr.Snapshot, zfs.ErrExists)
	}
	return nil
}

func (p *Pool) commitFull(ds zfs.DatasetName, hdr streamHeader, meta snapMeta, indexes map[string]*index) error {
	p.nsMu.Lock()
	defer p.nsMu.Unlock()
	if err := p.checkReceiveTarget(ds, hdr); err != nil {
		return err
	}
	tmp, err := p.newDatasetDir()
	if err != nil {
		return err
	}
	for name, ix := range indexes {
		if err := os.WriteFile(filepath.Join(tmp, imagesDir, name+indexExt), ix.marshal(), 0o600); err != nil {
			return err
		}
	}
	if err := p.publishSnapshot(filepath.Join(tmp, snapshotsDir, hdr.Snapshot), meta, indexes); err != nil {
		return err
	}
	dir, _ := p.dsPath(ds)
	return renameDurable(tmp, dir)
}

// commitIncremental publishes the received snapshot and sets the live
// images to it, as zfs receive does.
func (p *Pool) commitIncremental(ds zfs.DatasetName, hdr streamHeader, meta snapMeta, indexes map[string]*index) error {
	p.nsMu.RLock()
	defer p.nsMu.RUnlock()
	defer p.lockDS(ds)()
	if err := p.checkReceiveTarget(ds, hdr); err != nil {
		return err
	}
	dir, _ := p.dsPath(ds)
	p.mu.Lock()
	for key := range p.heads {
		if filepath.Dir(filepath.Dir(key)) == dir {
			p.mu.Unlock()
			return fmt.Errorf("an image is open: %w", zfs.ErrBusy)
		}
	}
	p.mu.Unlock()
	if err := p.publishSnapshot(filepath.Join(dir, snapshotsDir, hdr.Snapshot), meta, indexes); err != nil {
		return err
	}
	live, err := filepath.Glob(filepath.Join(dir, imagesDir, "*"+indexExt))
	if err != nil {
		return err
	}
	for _, path := range live {
		name := filepath.Base(path[:len(path)-len(indexExt)])
		if _, ok := indexes[name]; !ok {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	for name, ix := range indexes {
		if err := p.writeFileDurable(filepath.Join(dir, imagesDir, name+indexExt), ix.marshal()); err != nil {
			return err
		}
	}
	return nil
}
