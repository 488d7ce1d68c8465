package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"crypto/rand"
	"encoding/hex"

	"github.com/cairnbackup/cairn/zfs"
)

// Inside a dataset's directory, entries starting with '@' belong to the
// dataset itself ('@' cannot appear in a name component); every other
// directory is a child dataset.
const (
	imagesDir    = "@images"    // live images: <name>.fidx
	snapshotsDir = "@snapshots" // <snap>/meta.json, <snap>/<image>.fidx, <snap>/@holds/<tag>
	holdsDir     = "@holds"
	indexExt     = ".fidx"
	snapMetaFile = "meta.json"
)

// snapMeta is a snapshot's meta.json.
type snapMeta struct {
	GUID    string    `json:"guid"` // kept across send/receive, like ZFS's guid
	Created time.Time `json:"created"`
	Txg     uint64    `json:"txg"` // creation order within this pool
}

func opErr(op string, name fmt.Stringer, err error) error {
	return &zfs.Error{Op: op, Name: name.String(), Err: err}
}

// dsPath maps a dataset name to its directory, refusing names outside the pool.
func (p *Pool) dsPath(name zfs.DatasetName) (string, error) {
	if name.IsZero() || !name.Within(p.root) {
		return "", fmt.Errorf("dataset %q is not in pool %s: %w", name.String(), p.root, zfs.ErrInvalidName)
	}
	parts := append([]string{p.dir, "datasets"}, name.Components()[1:]...)
	return filepath.Join(parts...), nil
}

// existingDS returns the directory of a dataset that must exist.
func (p *Pool) existingDS(name zfs.DatasetName) (string, error) {
	dir, err := p.dsPath(name)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, imagesDir)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("dataset %w", zfs.ErrNotFound)
		}
		return "", err
	}
	return dir, nil
}

// begin checks the context and the pool and takes the namespace lock shared.
func (p *Pool) begin(ctx context.Context) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := p.checkOpen(); err != nil {
		return nil, err
	}
	p.nsMu.RLock()
	return p.nsMu.RUnlock, nil
}

// lockDS serializes changes to one dataset's images and snapshots.
func (p *Pool) lockDS(name zfs.DatasetName) func() {
	p.mu.Lock()
	l := p.dsLock[name.String()]
	if l == nil {
		l = new(sync.Mutex)
		p.dsLock[name.String()] = l
	}
	p.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// newDatasetDir builds an empty dataset directory in tmp.
func (p *Pool) newDatasetDir() (string, error) {
	tmp := p.tempName("dataset")
	for _, d := range []string{imagesDir, snapshotsDir} {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o700); err != nil {
			return "", err
		}
	}
	return tmp, nil
}

// CreateDataset creates name and its missing parents.
func (p *Pool) CreateDataset(ctx context.Context, name zfs.DatasetName) error {
	if err := ctx.Err(); err != nil {
		return opErr("create dataset", name, err)
	}
	if err := p.checkOpen(); err != nil {
		return opErr("create dataset", name, err)
	}
	if _, err := p.dsPath(name); err != nil {
		return opErr("create dataset", name, err)
	}
	p.nsMu.Lock()
	defer p.nsMu.Unlock()
	if _, err := p.existingDS(name); err == nil {
		return opErr("create dataset", name, zfs.ErrExists)
	}
	// Ancestors first; each appears whole, by rename, or not at all.
	var chain []zfs.DatasetName
	for d, ok := name, true; ok && d != p.root; d, ok = d.Parent() {
		chain = append([]zfs.DatasetName{d}, chain...)
	}
	for _, d := range chain {
		if _, err := p.existingDS(d); err == nil {
			continue
		}
		dir, _ := p.dsPath(d)
		tmp, err := p.newDatasetDir()
		if err == nil {
			err = syncFS(p.dir)
		}
		if err == nil {
			err = renameDurable(tmp, dir)
		}
		if err != nil {
			return opErr("create dataset", d, err)
		}
	}
	return nil
}

// DestroyDataset destroys name, its snapshots and its children.
func (p *Pool) DestroyDataset(ctx context.Context, name zfs.DatasetName) error {
	if err := ctx.Err(); err != nil {
		return opErr("destroy dataset", name, err)
	}
	if err := p.checkOpen(); err != nil {
		return opErr("destroy dataset", name, err)
	}
	p.nsMu.Lock()
	defer p.nsMu.Unlock()
	dir, err := p.existingDS(name)
	if err != nil {
		return opErr("destroy dataset", name, err)
	}
	if name == p.root {
		return opErr("destroy dataset", name, fmt.Errorf("the pool's root: %w", zfs.ErrBusy))
	}
	held, err := p.heldIn(dir)
	if err != nil {
		return opErr("destroy dataset", name, err)
	}
	if held != "" {
		return opErr("destroy dataset", name, fmt.Errorf("snapshot %s: %w", held, zfs.ErrHeld))
	}
	p.mu.Lock()
	for key := range p.heads {
		if strings.HasPrefix(key, dir+string(filepath.Separator)) {
			p.mu.Unlock()
			return opErr("destroy dataset", name, fmt.Errorf("an image is open: %w", zfs.ErrBusy))
		}
	}
	p.mu.Unlock()
	trash := p.tempName("destroyed")
	if err := renameDurable(dir, trash); err != nil {
		return opErr("destroy dataset", name, err)
	}
	// From here the dataset is gone; its chunks are freed by the next GC.
	if err := os.RemoveAll(trash); err != nil {
		p.log.Warn("remove destroyed dataset", "dataset", name.String(), "err", err)
	}
	return nil
}

// heldIn returns the first held snapshot under a dataset directory, or "".
func (p *Pool) heldIn(dir string) (string, error) {
	var held string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == holdsDir {
			ents, err := os.ReadDir(path)
			if err != nil {
				return err
			}
			if len(ents) > 0 {
				held = filepath.Base(filepath.Dir(path))
				return filepath.SkipAll
			}
		}
		return nil
	})
	return held, err
}

// Dataset describes one dataset.
func (p *Pool) Dataset(ctx context.Context, name zfs.DatasetName) (zfs.DatasetInfo, error) {
	done, err := p.begin(ctx)
	if err != nil {
		return zfs.DatasetInfo{}, opErr("dataset", name, err)
	}
	defer done()
	dir, err := p.existingDS(name)
	if err != nil {
		return zfs.DatasetInfo{}, opErr("dataset", name, err)
	}
	used, err := p.used(dir)
	if err != nil {
		return zfs.DatasetInfo{}, opErr("dataset", name, err)
	}
	return zfs.DatasetInfo{Name: name, Used: used}, nil
}

// used adds up the stored size of the distinct chunks that a dataset's
// images and snapshots reference.
func (p *Pool) used(dir string) (int64, error) {
	seen := make(map[digest]struct{})
	var total int64
	add := func(path string) error {
		ix, err := p.readIndex(path)
		if err != nil {
			return err
		}
		for _, e := range ix.entries {
			if _, ok := seen[e.sum]; !ok && !e.sum.isHole() {
				seen[e.sum] = struct{}{}
				total += int64(e.stored)
			}
		}
		return nil
	}
	paths, _ := filepath.Glob(filepath.Join(dir, imagesDir, "*"+indexExt))
	snaps, _ := filepath.Glob(filepath.Join(dir, snapshotsDir, "*", "*"+indexExt))
	for _, path := range append(paths, snaps...) {
		if err := add(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
	}
	return total, nil
}

// Datasets lists the root and every dataset below it, sorted by name.
func (p *Pool) Datasets(ctx context.Context) ([]zfs.DatasetInfo, error) {
	done, err := p.begin(ctx)
	if err != nil {
		return nil, opErr("list datasets", p.root, err)
	}
	defer done()
	var out []zfs.DatasetInfo
	var walk func(name zfs.DatasetName, dir string) error
	walk = func(name zfs.DatasetName, dir string) error {
		used, err := p.used(dir)
		if err != nil {
			return err
		}
		out = append(out, zfs.DatasetInfo{Name: name, Used: used})
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if !e.IsDir() || strings.HasPrefix(e.Name(), "@") {
				continue
			}
			child, err := name.Child(e.Name())
			if err != nil {
				continue // not ours
			}
			if err := walk(child, filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(p.root, filepath.Join(p.dir, "datasets")); err != nil {
		return nil, opErr("list datasets", p.root, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name.String() < out[j].Name.String() })
	return out, nil
}

// snapDir returns the directory of an existing snapshot.
func (p *Pool) snapDir(snap zfs.SnapshotName) (string, error) {
	dir, err := p.existingDS(snap.Dataset())
	if err != nil {
		return "", err
	}
	sd := filepath.Join(dir, snapshotsDir, snap.Snap())
	if _, err := os.Stat(filepath.Join(sd, snapMetaFile)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("snapshot %w", zfs.ErrNotFound)
		}
		return "", err
	}
	return sd, nil
}

func readSnapMeta(dir string) (snapMeta, error) {
	var m snapMeta
	b, err := os.ReadFile(filepath.Join(dir, snapMetaFile))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", filepath.Join(dir, snapMetaFile), err)
	}
	return m, nil
}

// lastTxg finds the largest snapshot txg in the pool, at open.
func (p *Pool) lastTxg() (uint64, error) {
	var last uint64
	err := filepath.WalkDir(filepath.Join(p.dir, "datasets"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == snapMetaFile {
			m, err := readSnapMeta(filepath.Dir(path))
			if err != nil {
				return err
			}
			last = max(last, m.Txg)
		}
		return nil
	})
	return last, err
}

func (p *Pool) nextTxg() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.txg++
	return p.txg
}

func newGUID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b[:])
}

// Snapshot takes a snapshot of every image of ds.
func (p *Pool) Snapshot(ctx context.Context, ds zfs.DatasetName, snap string) (zfs.SnapshotInfo, error) {
	name, err := ds.Snapshot(snap)
	if err != nil {
		return zfs.SnapshotInfo{}, &zfs.Error{Op: "snapshot", Name: ds.String() + "@" + snap, Err: err}
	}
	done, err := p.begin(ctx)
	if err != nil {
		return zfs.SnapshotInfo{}, opErr("snapshot", name, err)
	}
	defer done()
	defer p.lockDS(ds)()
	dir, err := p.existingDS(ds)
	if err != nil {
		return zfs.SnapshotInfo{}, opErr("snapshot", name, err)
	}
	final := filepath.Join(dir, snapshotsDir, snap)
	if _, err := os.Stat(final); err == nil {
		return zfs.SnapshotInfo{}, opErr("snapshot", name, zfs.ErrExists)
	}
	indexes, err := p.pinnedIndexes(dir)
	if err != nil {
		return zfs.SnapshotInfo{}, opErr("snapshot", name, err)
	}
	meta := snapMeta{GUID: newGUID(), Created: time.Now().UTC(), Txg: p.nextTxg()}
	err = p.publishSnapshot(final, meta, indexes)
	p.flushMu.RUnlock()
	if err != nil {
		return zfs.SnapshotInfo{}, opErr("snapshot", name, err)
	}
	return zfs.SnapshotInfo{Name: name, Created: meta.Created, CreateTxg: meta.Txg}, nil
}

// pinAttempts bounds how often a snapshot reads its indexes again because a
// GC swept a chunk of an image rewritten since it read them.
const pinAttempts = 8

// pinnedIndexes returns the current indexes of a dataset's images with
// flushMu held shared and every chunk they reference recorded for a running
// GC, so that no GC can sweep them until the caller publishes the indexes and
// releases flushMu (see GC).
func (p *Pool) pinnedIndexes(dir string) (map[string]*index, error) {
	for attempt := 1; ; attempt++ {
		indexes, err := p.currentIndexes(dir)
		if err != nil {
			return nil, err
		}
		p.flushMu.RLock()
		err = p.chunks.refAll(indexes)
		if err == nil {
			return indexes, nil
		}
		p.flushMu.RUnlock()
		if attempt == pinAttempts {
			return nil, fmt.Errorf("%w: %w", zfs.ErrCorrupt, err)
		}
	}
}

// currentIndexes returns the index of every live image of a dataset as of
// now, with open images' writes stored and made durable first.
func (p *Pool) currentIndexes(dir string) (map[string]*index, error) {
	paths, err := filepath.Glob(filepath.Join(dir, imagesDir, "*"+indexExt))
	if err != nil {
		return nil, err
	}
	out := make(map[string]*index, len(paths))
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), indexExt)
		p.mu.Lock()
		h := p.heads[path]
		p.mu.Unlock()
		var ix *index
		if h != nil {
			ix, err = h.syncedIndex()
		} else {
			ix, err = p.readIndex(path)
		}
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
		out[name] = ix
	}
	return out, nil
}

// publishSnapshot writes a snapshot directory in tmp and renames it into
// place once everything in it, and every chunk it references, is durable.
func (p *Pool) publishSnapshot(final string, meta snapMeta, indexes map[string]*index) error {
	if err := p.chunks.barrier(); err != nil {
		return err
	}
	tmp := p.tempName("snapshot")
	if err := os.MkdirAll(filepath.Join(tmp, holdsDir), 0o700); err != nil {
		return err
	}
	for name, ix := range indexes {
		b := ix.marshal()
		if err := os.WriteFile(filepath.Join(tmp, name+indexExt), b, 0o600); err != nil {
			return err
		}
		p.chunks.bytesWritten.Add(int64(len(b)))
	}
	b, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, snapMetaFile), b, 0o600); err != nil {
		return err
	}
	if err := syncFS(p.dir); err != nil {
		return err
	}
	return renameDurable(tmp, final)
}

func (p *Pool) readIndex(path string) (*index, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ix, err := parseIndex(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, zfs.ErrCorrupt, err)
	}
	if ix.chunkSize != p.chunkSize {
		return nil, fmt.Errorf("%s: chunk size %d in a pool of %d: %w", path, ix.chunkSize, p.chunkSize, zfs.ErrCorrupt)
	}
	return ix, nil
}

// Snapshots lists the snapshots of ds in creation order.
func (p *Pool) Snapshots(ctx context.Context, ds zfs.DatasetName) ([]zfs.SnapshotInfo, error) {
	done, err := p.begin(ctx)
	if err != nil {
		return nil, opErr("list snapshots", ds, err)
	}
	defer done()
	dir, err := p.existingDS(ds)
	if err != nil {
		return nil, opErr("list snapshots", ds, err)
	}
	out, _, err := p.snapshots(ds, dir)
	if err != nil {
		return nil, opErr("list snapshots", ds, err)
	}
	return out, nil
}

// snapshots reads the snapshots of a dataset, in creation order, with their metadata.
func (p *Pool) snapshots(ds zfs.DatasetName, dir string) ([]zfs.SnapshotInfo, []snapMeta, error) {
	ents, err := os.ReadDir(filepath.Join(dir, snapshotsDir))
	if err != nil {
		return nil, nil, err
	}
	var infos []zfs.SnapshotInfo
	var metas []snapMeta
	for _, e := range ents {
		name, err := ds.Snapshot(e.Name())
		if err != nil {
			continue
		}
		m, err := readSnapMeta(filepath.Join(dir, snapshotsDir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // destroyed meanwhile
		}
		if err != nil {
			return nil, nil, err
		}
		infos = append(infos, zfs.SnapshotInfo{Name: name, Created: m.Created, CreateTxg: m.Txg})
		metas = append(metas, m)
	}
	order := make([]int, len(infos))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return infos[order[a]].CreateTxg < infos[order[b]].CreateTxg })
	sortedInfos := make([]zfs.SnapshotInfo, len(infos))
	sortedMetas := make([]snapMeta, len(infos))
	for i, j := range order {
		sortedInfos[i], sortedMetas[i] = infos[j], metas[j]
	}
	return sortedInfos, sortedMetas, nil
}

// DestroySnapshot destroys a snapshot that has no holds.
func (p *Pool) DestroySnapshot(ctx context.Context, snap zfs.SnapshotName) error {
	done, err := p.begin(ctx)
	if err != nil {
		return opErr("destroy snapshot", snap, err)
	}
	defer done()
	defer p.lockDS(snap.Dataset())()
	dir, err := p.snapDir(snap)
	if err != nil {
		return opErr("destroy snapshot", snap, err)
	}
	holds, err := readHolds(dir)
	if err != nil {
		return opErr("destroy snapshot", snap, err)
	}
	if len(holds) > 0 {
		return opErr("destroy snapshot", snap, fmt.Errorf("%w by %s", zfs.ErrHeld, strings.Join(holds, ", ")))
	}
	trash := p.tempName("destroyed")
	if err := renameDurable(dir, trash); err != nil {
		return opErr("destroy snapshot", snap, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		p.log.Warn("remove destroyed snapshot", "snapshot", snap.String(), "err", err)
	}
	return nil
}

func readHolds(snapDir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(snapDir, holdsDir))
	if err != nil {
		return nil, err
	}
	tags := make([]string, 0, len(ents))
	for _, e := range ents {
		tags = append(tags, e.Name())
	}
	sort.Strings(tags)
	return tags, nil
}

// Hold puts a hold on snap.
func (p *Pool) Hold(ctx context.Context, snap zfs.SnapshotName, tag string) error {
	return p.changeHold(ctx, "hold", snap, tag, func(path string) error {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("tag %s %w", tag, zfs.ErrExists)
		}
		if err != nil {
			return err
		}
		return f.Close()
	})
}

// Release removes a hold from snap.
func (p *Pool) Release(ctx context.Context, snap zfs.SnapshotName, tag string) error {
	return p.changeHold(ctx, "release", snap, tag, func(path string) error {
		err := os.Remove(path)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("hold %s %w", tag, zfs.ErrNotFound)
		}
		return err
	})
}

func (p *Pool) changeHold(ctx context.Context, op string, snap zfs.SnapshotName, tag string, change func(path string) error) error {
	if err := zfs.ValidComponent(tag); err != nil {
		return opErr(op, snap, err)
	}
	done, err := p.begin(ctx)
	if err != nil {
		return opErr(op, snap, err)
	}
	defer done()
	defer p.lockDS(snap.Dataset())()
	dir, err := p.snapDir(snap)
	if err != nil {
		return opErr(op, snap, err)
	}
	if err := change(filepath.Join(dir, holdsDir, tag)); err != nil {
		return opErr(op, snap, err)
	}
	if err := syncDir(filepath.Join(dir, holdsDir)); err != nil {
		return opErr(op, snap, err)
	}
	return nil
}

// Holds lists the holds on snap.
func (p *Pool) Holds(ctx context.Context, snap zfs.SnapshotName) ([]string, error) {
	done, err := p.begin(ctx)
	if err != nil {
		return nil, opErr("holds", snap, err)
	}
	defer done()
	dir, err := p.snapDir(snap)
	if err != nil {
		return nil, opErr("holds", snap, err)
	}
	tags, err := readHolds(dir)
	if err != nil {
		return nil, opErr("holds", snap, err)
	}
	return tags, nil
}
