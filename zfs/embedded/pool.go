// Package embedded is a pure-Go zfs.Pool in a directory, for machines without
// OpenZFS and the default of a new appliance.
//
// Datasets are directories. A volume image is a list of fixed-size chunks
// (64 KiB by default), each stored once in a content-addressed,
// zstd-compressed chunk store shared by all datasets (appended to pack
// files), and described by a fixed index (the model of Proxmox Backup
// Server's fixed index). A snapshot
// is a copy of its dataset's indexes; writing costs in proportion to the
// chunks that change. docs/storage.md describes the format and the crash
// safety argument.
package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/zfs"
)

// DefaultChunkSize is the chunk size of new pools. It equals the agents'
// default block size, so that an incremental backup rewrites about what
// changed.
const DefaultChunkSize = 64 << 10

// DefaultMaxDirty bounds the bytes of changed chunks an open image buffers
// in memory before it stores them.
const DefaultMaxDirty = 32 << 20

// Config configures Open.
type Config struct {
	// Dir holds the pool. It is created if it does not exist.
	Dir string
	// Name is the root dataset's name for a new pool (default "cairn"). An
	// existing pool keeps the name it was created with.
	Name string
	// ChunkSize for a new pool (default DefaultChunkSize); a power of two
	// from 4 KiB to 16 MiB.
	ChunkSize int
	// MaxDirty per open image (default DefaultMaxDirty).
	MaxDirty int64
	Logger   *slog.Logger
}

// poolMeta is pool.json.
type poolMeta struct {
	Format    int    `json:"format"`
	Name      string `json:"name"`
	ChunkSize int64  `json:"chunk_size"`
}

const poolFormat = 1

// Pool is an embedded pool. It implements zfs.Pool.
type Pool struct {
	dir       string
	root      zfs.DatasetName
	chunkSize int64
	maxDirty  int64
	log       *slog.Logger
	lock      *os.File
	chunks    *chunkStore

	// nsMu guards the dataset tree: creating, destroying and receiving
	// whole datasets take it exclusively; everything else shares it.
	nsMu sync.RWMutex
	// flushMu is held shared by whoever stores or references chunks and
	// then makes them reachable for GC's mark, and briefly exclusively by GC
	// (see gc.go). Nobody takes it shared while holding it.
	flushMu sync.RWMutex
	// gcMu lets one GC run at a time.
	gcMu sync.Mutex

	mu     sync.Mutex
	closed bool
	heads  map[string]*head      // open images by path of their index file
	roots  map[*rootSet]struct{} // chunks of receives not yet committed
	dsLock map[string]*sync.Mutex
	txg    uint64 // last snapshot's CreateTxg
}

var (
	_ zfs.Pool         = (*Pool)(nil)
	_ zfs.HashedWriter = (*liveImage)(nil)
)

// Open opens the pool in cfg.Dir, creating it if needed. Only one process
// may have a pool open; another gets an error that wraps zfs.ErrBusy.
func Open(cfg Config) (*Pool, error) {
	if cfg.Dir == "" {
		return nil, errors.New("embedded pool: no directory")
	}
	if cfg.Name == "" {
		cfg.Name = "cairn"
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.MaxDirty <= 0 {
		cfg.MaxDirty = DefaultMaxDirty
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cs := int64(cfg.ChunkSize)
	if cs < minChunkSize || cs > maxChunkSize || cs&(cs-1) != 0 {
		return nil, fmt.Errorf("embedded pool: chunk size %d is not a power of two from %d to %d", cs, minChunkSize, maxChunkSize)
	}
	if err := zfs.ValidComponent(cfg.Name); err != nil {
		return nil, fmt.Errorf("embedded pool: name: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded pool: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("embedded pool: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("embedded pool %s: in use by another process: %w", cfg.Dir, zfs.ErrBusy)
	}
	p, err := open(cfg, lock)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("embedded pool %s: %w", cfg.Dir, err)
	}
	return p, nil
}

func open(cfg Config, lock *os.File) (*Pool, error) {
	metaPath := filepath.Join(cfg.Dir, "pool.json")
	var meta poolMeta
	b, err := os.ReadFile(metaPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		meta = poolMeta{Format: poolFormat, Name: cfg.Name, ChunkSize: int64(cfg.ChunkSize)}
		if err := create(cfg.Dir, meta); err != nil {
			return nil, fmt.Errorf("create: %w", err)
		}
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(b, &meta); err != nil {
			return nil, fmt.Errorf("pool.json: %w", err)
		}
		if meta.Format != poolFormat {
			return nil, fmt.Errorf("pool format %d, this version reads %d", meta.Format, poolFormat)
		}
		if cs := meta.ChunkSize; cs < minChunkSize || cs > maxChunkSize || cs&(cs-1) != 0 {
			return nil, fmt.Errorf("pool.json: chunk size %d is not a power of two from %d to %d", cs, minChunkSize, maxChunkSize)
		}
	}
	// The root is one component: dsPath maps it to datasets/ itself.
	if err := zfs.ValidComponent(meta.Name); err != nil {
		return nil, fmt.Errorf("pool.json: name: %w", err)
	}
	root, err := zfs.ParseDatasetName(meta.Name)
	if err != nil {
		return nil, fmt.Errorf("pool.json: %w", err)
	}
	// Whatever is in tmp was never published: a crash interrupted it.
	if err := os.RemoveAll(filepath.Join(cfg.Dir, "tmp")); err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(cfg.Dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	chunks, err := openChunkStore(cfg.Dir)
	if err != nil {
		return nil, err
	}
	p := &Pool{
		dir: cfg.Dir, root: root, chunkSize: meta.ChunkSize, maxDirty: cfg.MaxDirty,
		log: cfg.Logger, lock: lock, chunks: chunks,
		heads: make(map[string]*head), dsLock: make(map[string]*sync.Mutex),
		roots: make(map[*rootSet]struct{}),
	}
	if p.txg, err = p.lastTxg(); err != nil {
		chunks.close()
		return nil, err
	}
	p.log.Info("embedded pool open", "dir", cfg.Dir, "root", root.String(), "chunk_size", p.chunkSize)
	return p, nil
}

// create lays out a new pool; pool.json is written last, so a pool that has
// it is complete.
func create(dir string, meta poolMeta) error {
	if err := os.MkdirAll(filepath.Join(dir, "packs"), 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "datasets", imagesDir), 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "datasets", snapshotsDir), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "pool.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := syncFS(dir); err != nil {
		return err
	}
	return renameDurable(tmp, filepath.Join(dir, "pool.json"))
}

// Root returns the pool's root dataset.
func (p *Pool) Root() zfs.DatasetName { return p.root }

// ChunkSize returns the pool's chunk size.
func (p *Pool) ChunkSize() int64 { return p.chunkSize }

// BytesWritten counts the bytes the pool has written to disk (chunks,
// indexes and metadata) since it was opened.
func (p *Pool) BytesWritten() int64 { return p.chunks.bytesWritten.Load() }

// Space reports the file system that holds the pool: used and available
// bytes.
func (p *Pool) Space(ctx context.Context) (zfs.Space, error) {
	if err := ctx.Err(); err != nil {
		return zfs.Space{}, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p.dir, &st); err != nil {
		return zfs.Space{}, &zfs.Error{Op: "space", Name: p.root.String(), Err: err}
	}
	bs := int64(st.Bsize)
	return zfs.Space{Used: (int64(st.Blocks) - int64(st.Bfree)) * bs, Available: int64(st.Bavail) * bs}, nil
}

// Close syncs and closes every open image and releases the pool.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	heads := make([]*head, 0, len(p.heads))
	for _, h := range p.heads {
		heads = append(heads, h)
	}
	p.mu.Unlock()
	var errs []error
	for _, h := range heads {
		errs = append(errs, h.sync())
	}
	errs = append(errs, p.chunks.close(), p.lock.Close())
	return errors.Join(errs...)
}

func (p *Pool) checkOpen() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return zfs.ErrClosed
	}
	return nil
}
