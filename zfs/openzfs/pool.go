package openzfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnbackup/cairn/internal/mountinfo"
	"github.com/cairnbackup/cairn/zfs"
)

// DefaultCommandTimeout bounds a zfs command other than send and receive
// when Config.CommandTimeout is zero.
const DefaultCommandTimeout = 5 * time.Minute

// Config configures a Pool.
type Config struct {
	// Root is the dataset under which the pool keeps everything, such as
	// "tank/cairn". Its ZFS pool must exist; Root and its parents are
	// created if missing. Root must be a file system that is mounted.
	Root zfs.DatasetName
	// Logger receives a debug record for every zfs command. Nil discards.
	Logger *slog.Logger
	// CommandTimeout bounds each zfs command except send and receive,
	// which are bounded only by their context. Zero means
	// DefaultCommandTimeout.
	CommandTimeout time.Duration
	// ZFSPath is the zfs program to run; "" means "zfs" from PATH.
	ZFSPath string
}

// Pool is a zfs.Pool on OpenZFS. Make one with Open.
type Pool struct {
	root      zfs.DatasetName
	log       *slog.Logger
	run       *runner
	mountinfo string // path of the mount table, /proc/self/mountinfo
	closed    atomic.Bool

	mu sync.Mutex
	// open counts the open handles of this process: live images by
	// dataset name, snapshot images by snapshot name. DestroyDataset and
	// DestroySnapshot refuse (ErrBusy) to destroy what a handle is open
	// on, before zfs destroy could destroy some of it and then fail to
	// unmount.
	open map[string]int
}

var _ zfs.Pool = (*Pool)(nil)

// newPool makes a Pool without running any command.
func newPool(cfg Config) (*Pool, error) {
	if cfg.Root.IsZero() {
		return nil, &zfs.Error{Op: "open", Err: &zfs.NameError{Reason: "no root dataset"}}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := cfg.CommandTimeout
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	path := cfg.ZFSPath
	if path == "" {
		path = "zfs"
	}
	return &Pool{
		root:      cfg.Root,
		log:       log,
		run:       &runner{path: path, log: log, timeout: timeout},
		mountinfo: "/proc/self/mountinfo",
		open:      make(map[string]int),
	}, nil
}

// Open opens the pool rooted at cfg.Root: it checks that Root's ZFS pool
// exists (ErrNotFound otherwise), creates Root and its parents if missing,
// and checks that Root is a mounted file system.
func Open(ctx context.Context, cfg Config) (*Pool, error) {
	p, err := newPool(cfg)
	if err != nil {
		return nil, err
	}
	root := p.root.String()
	_, err = p.zfsOut(ctx, "list", "-H", "-o", "name", "--", root)
	if isSentinel(err, zfs.ErrNotFound) {
		top := p.root.Components()[0]
		if _, err := p.zfsOut(ctx, "list", "-H", "-o", "name", "--", top); err != nil {
			return nil, opError("open", root, fmt.Errorf("pool %s: %w", top, err))
		}
		if _, err = p.zfsOut(ctx, "create", "-p", "--", root); err != nil {
			return nil, opError("open", root, err)
		}
	} else if err != nil {
		return nil, opError("open", root, err)
	}
	if _, err := p.mountpoint(ctx, p.root); err != nil {
		return nil, &zfs.Error{Op: "open", Name: root, Err: err}
	}
	return p, nil
}

// zfsOut runs a metadata command and returns its stdout.
func (p *Pool) zfsOut(ctx context.Context, args ...string) ([]byte, error) {
	res, err := p.run.run(ctx, command{args: args})
	return res.stdout, err
}

// Root returns the dataset under which the pool keeps everything.
func (p *Pool) Root() zfs.DatasetName { return p.root }

// check refuses work on a closed pool and names outside Root.
func (p *Pool) check(op string, name zfs.DatasetName) error {
	if p.closed.Load() {
		return &zfs.Error{Op: op, Name: name.String(), Err: zfs.ErrClosed}
	}
	if name.IsZero() {
		return &zfs.Error{Op: op, Err: &zfs.NameError{Reason: "empty dataset name"}}
	}
	if !name.Within(p.root) {
		return &zfs.Error{Op: op, Name: name.String(),
			Err: &zfs.NameError{Name: name.String(), Reason: "outside the pool's root " + p.root.String()}}
	}
	return nil
}

// checkSnap is check for a snapshot name.
func (p *Pool) checkSnap(op string, snap zfs.SnapshotName) error {
	if snap.IsZero() {
		return p.check(op, zfs.DatasetName{})
	}
	if err := p.check(op, snap.Dataset()); err != nil {
		return &zfs.Error{Op: op, Name: snap.String(), Err: errors.Unwrap(err)}
	}
	return nil
}

// nameErr is an ErrInvalidName *zfs.Error for a component that failed
// zfs.ValidComponent.
func nameErr(op, name string, err error) error {
	return &zfs.Error{Op: op, Name: name, Err: err}
}

// CreateDataset creates name and any missing parents.
func (p *Pool) CreateDataset(ctx context.Context, name zfs.DatasetName) error {
	const op = "create dataset"
	if err := p.check(op, name); err != nil {
		return err
	}
	// zfs create -p succeeds when name exists, so create the parents
	// with -p and name itself without, which reports ErrExists.
	_, err := p.zfsOut(ctx, "create", "--", name.String())
	if isSentinel(err, zfs.ErrNotFound) { // parent does not exist
		parent, _ := name.Parent()
		if _, err = p.zfsOut(ctx, "create", "-p", "--", parent.String()); err == nil {
			_, err = p.zfsOut(ctx, "create", "--", name.String())
		}
	}
	if err != nil {
		return opError(op, name.String(), err)
	}
	return nil
}

// DestroyDataset destroys name with its snapshots and descendants (zfs
// destroy -r). It first lists every snapshot of the subtree and refuses
// with ErrHeld if any has a hold, so that nothing is destroyed; it also
// refuses with ErrBusy while this process has an image of the subtree
// open. Root cannot be destroyed (ErrBusy).
func (p *Pool) DestroyDataset(ctx context.Context, name zfs.DatasetName) error {
	const op = "destroy dataset"
	if err := p.check(op, name); err != nil {
		return err
	}
	if name == p.root {
		return &zfs.Error{Op: op, Name: name.String(), Err: fmt.Errorf("%w: the pool's root cannot be destroyed", zfs.ErrBusy)}
	}
	if h := p.openUnder(name); h != "" {
		return &zfs.Error{Op: op, Name: name.String(), Err: fmt.Errorf("%w: %s is open", zfs.ErrBusy, h)}
	}
	held, err := p.heldSnapshots(ctx, name, true)
	if err != nil {
		return opError(op, name.String(), err)
	}
	if len(held) > 0 {
		return &zfs.Error{Op: op, Name: name.String(), Err: fmt.Errorf("%w: %s", zfs.ErrHeld, strings.Join(held, ", "))}
	}
	if _, err := p.zfsOut(ctx, "destroy", "-r", "--", name.String()); err != nil {
		if isSentinel(err, zfs.ErrBusy) {
			// A hold may have been placed since the check; zfs
			// destroys the snapshots of a tree in one transaction, so
			// nothing was destroyed then.
			if held, herr := p.heldSnapshots(ctx, name, true); herr == nil && len(held) > 0 {
				return &zfs.Error{Op: op, Name: name.String(), Err: fmt.Errorf("%w: %s: %w", zfs.ErrHeld, strings.Join(held, ", "), err)}
			}
		}
		return opError(op, name.String(), err)
	}
	return nil
}

// heldSnapshots returns the snapshots of name (of its whole subtree when
// recursive) that have holds. ErrNotFound if name does not exist.
func (p *Pool) heldSnapshots(ctx context.Context, name zfs.DatasetName, recursive bool) ([]string, error) {
	args := []string{"list", "-H", "-p", "-t", "snapshot", "-o", "name,userrefs"}
	if recursive {
		args = append(args, "-r")
	} else {
		args = append(args, "-d", "1")
	}
	out, err := p.zfsOut(ctx, append(args, "--", name.String())...)
	if err != nil {
		return nil, err
	}
	rows, err := parseUserrefs(out)
	if err != nil {
		return nil, fmt.Errorf("zfs list: %w", err)
	}
	var held []string
	for _, r := range rows {
		if r.holds > 0 {
			held = append(held, r.name)
		}
	}
	return held, nil
}

// Dataset describes one dataset; Used is its used property.
func (p *Pool) Dataset(ctx context.Context, name zfs.DatasetName) (zfs.DatasetInfo, error) {
	const op = "dataset"
	if err := p.check(op, name); err != nil {
		return zfs.DatasetInfo{}, err
	}
	out, err := p.zfsOut(ctx, "list", "-H", "-p", "-t", "filesystem,volume", "-o", "name,used", "--", name.String())
	if err != nil {
		return zfs.DatasetInfo{}, opError(op, name.String(), err)
	}
	rows, err := parseDatasetList(out)
	if err == nil && (len(rows) != 1 || rows[0].name != name.String()) {
		err = fmt.Errorf("zfs list printed %d rows for one dataset", len(rows))
	}
	if err != nil {
		return zfs.DatasetInfo{}, &zfs.Error{Op: op, Name: name.String(), Err: err}
	}
	return zfs.DatasetInfo{Name: name, Used: rows[0].used}, nil
}

// Datasets lists Root and every file system and volume below it, sorted by
// name. Datasets whose names Cairn would not accept (made outside Cairn)
// are left out and logged.
func (p *Pool) Datasets(ctx context.Context) ([]zfs.DatasetInfo, error) {
	const op = "list datasets"
	if err := p.check(op, p.root); err != nil {
		return nil, err
	}
	out, err := p.zfsOut(ctx, "list", "-H", "-p", "-r", "-t", "filesystem,volume", "-s", "name", "-o", "name,used", "--", p.root.String())
	if err != nil {
		return nil, opError(op, p.root.String(), err)
	}
	rows, err := parseDatasetList(out)
	if err != nil {
		return nil, &zfs.Error{Op: op, Name: p.root.String(), Err: err}
	}
	infos := make([]zfs.DatasetInfo, 0, len(rows))
	for _, r := range rows {
		name, err := zfs.ParseDatasetName(r.name)
		if err != nil || !name.Within(p.root) {
			p.log.Warn("skipping dataset with a name Cairn does not use", "name", r.name, "err", err)
			continue
		}
		infos = append(infos, zfs.DatasetInfo{Name: name, Used: r.used})
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name.String() < infos[j].Name.String() })
	return infos, nil
}

// Snapshot takes snapshot snap of ds. The writes of every write(2) that
// returned before are in the snapshot, and zfs snapshot returns only after
// the transaction group holding the snapshot, and so those writes, is on
// stable storage: there is nothing to fsync first.
func (p *Pool) Snapshot(ctx context.Context, ds zfs.DatasetName, snap string) (zfs.SnapshotInfo, error) {
	const op = "snapshot"
	if err := p.check(op, ds); err != nil {
		return zfs.SnapshotInfo{}, err
	}
	name, err := ds.Snapshot(snap)
	if err != nil {
		return zfs.SnapshotInfo{}, nameErr(op, ds.String()+"@"+snap, err)
	}
	if _, err := p.zfsOut(ctx, "snapshot", "--", name.String()); err != nil {
		return zfs.SnapshotInfo{}, opError(op, name.String(), err)
	}
	infos, err := p.listSnapshots(ctx, name.String(), false)
	if err == nil && len(infos) != 1 {
		err = fmt.Errorf("zfs list printed %d rows for one snapshot", len(infos))
	}
	if err != nil {
		return zfs.SnapshotInfo{}, opError(op, name.String(), err)
	}
	return infos[0], nil
}

// Snapshots lists the snapshots of ds in creation order (by createtxg).
func (p *Pool) Snapshots(ctx context.Context, ds zfs.DatasetName) ([]zfs.SnapshotInfo, error) {
	const op = "list snapshots"
	if err := p.check(op, ds); err != nil {
		return nil, err
	}
	infos, err := p.listSnapshots(ctx, ds.String(), true)
	if err != nil {
		return nil, opError(op, ds.String(), err)
	}
	return infos, nil
}

// listSnapshots lists the snapshots of dataset name (children=true) or the
// one snapshot name, in creation order.
func (p *Pool) listSnapshots(ctx context.Context, name string, children bool) ([]zfs.SnapshotInfo, error) {
	args := []string{"list", "-H", "-p", "-t", "snapshot", "-s", "createtxg", "-o", "name,createtxg,creation"}
	if children {
		args = append(args, "-d", "1")
	}
	out, err := p.zfsOut(ctx, append(args, "--", name)...)
	if err != nil {
		return nil, err
	}
	rows, err := parseSnapshotList(out)
	if err != nil {
		return nil, fmt.Errorf("zfs list: %w", err)
	}
	infos := make([]zfs.SnapshotInfo, 0, len(rows))
	for _, r := range rows {
		s, err := zfs.ParseSnapshotName(r.name)
		if err != nil {
			p.log.Warn("skipping snapshot with a name Cairn does not use", "name", r.name, "err", err)
			continue
		}
		infos = append(infos, zfs.SnapshotInfo{Name: s, Created: time.Unix(r.created, 0), CreateTxg: r.txg})
	}
	return infos, nil
}

// DestroySnapshot destroys one snapshot: ErrHeld if it has holds, ErrBusy
// while this process has one of its images open.
func (p *Pool) DestroySnapshot(ctx context.Context, snap zfs.SnapshotName) error {
	const op = "destroy snapshot"
	if err := p.checkSnap(op, snap); err != nil {
		return err
	}
	if p.isOpen(snap.String()) {
		return &zfs.Error{Op: op, Name: snap.String(), Err: fmt.Errorf("%w: an image of it is open", zfs.ErrBusy)}
	}
	_, err := p.zfsOut(ctx, "destroy", "--", snap.String())
	if err == nil {
		return nil
	}
	if isSentinel(err, zfs.ErrBusy) {
		// "dataset is busy": held, or its automount is in use.
		if out, lerr := p.zfsOut(ctx, "list", "-H", "-p", "-o", "name,userrefs", "--", snap.String()); lerr == nil {
			if rows, perr := parseUserrefs(out); perr == nil && len(rows) == 1 && rows[0].holds > 0 {
				return &zfs.Error{Op: op, Name: snap.String(), Err: fmt.Errorf("%w: %w", zfs.ErrHeld, err)}
			}
		}
	}
	return opError(op, snap.String(), err)
}

// Hold puts a user hold with tag on snap (zfs hold).
func (p *Pool) Hold(ctx context.Context, snap zfs.SnapshotName, tag string) error {
	const op = "hold"
	if err := p.checkSnap(op, snap); err != nil {
		return err
	}
	if err := zfs.ValidComponent(tag); err != nil {
		return nameErr(op, snap.String(), fmt.Errorf("tag: %w", err))
	}
	if _, err := p.zfsOut(ctx, "hold", "--", tag, snap.String()); err != nil {
		return opError(op, snap.String(), err)
	}
	return nil
}

// Release removes the hold tag from snap (zfs release).
func (p *Pool) Release(ctx context.Context, snap zfs.SnapshotName, tag string) error {
	const op = "release"
	if err := p.checkSnap(op, snap); err != nil {
		return err
	}
	if err := zfs.ValidComponent(tag); err != nil {
		return nameErr(op, snap.String(), fmt.Errorf("tag: %w", err))
	}
	if _, err := p.zfsOut(ctx, "release", "--", tag, snap.String()); err != nil {
		return opError(op, snap.String(), err)
	}
	return nil
}

// Holds lists the tags holding snap, sorted (zfs holds).
func (p *Pool) Holds(ctx context.Context, snap zfs.SnapshotName) ([]string, error) {
	const op = "holds"
	if err := p.checkSnap(op, snap); err != nil {
		return nil, err
	}
	out, err := p.zfsOut(ctx, "holds", "-H", "--", snap.String())
	if err != nil {
		return nil, opError(op, snap.String(), err)
	}
	tags, err := parseHolds(out, snap.String())
	if err != nil {
		return nil, &zfs.Error{Op: op, Name: snap.String(), Err: fmt.Errorf("zfs holds: %w", err)}
	}
	return tags, nil
}

// Space reports Root's used and available properties.
func (p *Pool) Space(ctx context.Context) (zfs.Space, error) {
	const op = "space"
	if err := p.check(op, p.root); err != nil {
		return zfs.Space{}, err
	}
	out, err := p.zfsOut(ctx, "get", "-H", "-p", "-o", "property,value", "used,available", "--", p.root.String())
	if err != nil {
		return zfs.Space{}, opError(op, p.root.String(), err)
	}
	sp, err := parseSpace(out)
	if err != nil {
		return zfs.Space{}, &zfs.Error{Op: op, Name: p.root.String(), Err: err}
	}
	return sp, nil
}

// parseSpace parses zfs get -H -p -o property,value used,available.
func parseSpace(out []byte) (zfs.Space, error) {
	props, err := parseProps(out)
	if err != nil {
		return zfs.Space{}, fmt.Errorf("zfs get: %w", err)
	}
	vals, err := needProps(props, "used", "available")
	if err != nil {
		return zfs.Space{}, err
	}
	used, err := parseInt64(vals[0])
	if err != nil {
		return zfs.Space{}, fmt.Errorf("used: %w", err)
	}
	avail, err := parseInt64(vals[1])
	if err != nil {
		return zfs.Space{}, fmt.Errorf("available: %w", err)
	}
	return zfs.Space{Used: used, Available: avail}, nil
}

// Close marks the pool closed; later calls fail with ErrClosed. It does
// not close open images.
func (p *Pool) Close() error {
	if p.closed.Swap(true) {
		return &zfs.Error{Op: "close", Name: p.root.String(), Err: zfs.ErrClosed}
	}
	return nil
}

// mountpoint returns where ds is mounted. It looks in the mount table
// first, as libzfs does, so that opening an image costs no zfs command;
// if ds is not there it asks zfs, which tells a missing dataset
// (ErrNotFound) from one that is not mounted.
func (p *Pool) mountpoint(ctx context.Context, ds zfs.DatasetName) (string, error) {
	if mounts, err := mountinfo.Read(p.mountinfo); err == nil {
		for _, m := range mounts {
			if m.FSType == "zfs" && m.Source == ds.String() && m.Root == "/" && filepath.IsAbs(m.MountPoint) {
				return m.MountPoint, nil
			}
		}
	}
	out, err := p.zfsOut(ctx, "get", "-H", "-p", "-o", "property,value", "type,mountpoint,mounted", "--", ds.String())
	if err != nil {
		return "", opError("find mountpoint", ds.String(), err)
	}
	props, err := parseProps(out)
	if err != nil {
		return "", fmt.Errorf("zfs get: %w", err)
	}
	vals, err := needProps(props, "type", "mountpoint", "mounted")
	if err != nil {
		return "", err
	}
	if vals[0] != "filesystem" {
		return "", fmt.Errorf("%s is a %s, not a file system", ds, vals[0])
	}
	if vals[2] != "yes" || !filepath.IsAbs(vals[1]) {
		return "", fmt.Errorf("%s is not mounted (mountpoint %s, mounted %s)", ds, vals[1], vals[2])
	}
	return vals[1], nil
}

// opened counts a handle open on key (a dataset or snapshot name) and
// returns the function that releases it.
func (p *Pool) opened(key string) func() {
	p.mu.Lock()
	p.open[key]++
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			if p.open[key]--; p.open[key] <= 0 {
				delete(p.open, key)
			}
			p.mu.Unlock()
		})
	}
}

// isOpen reports whether a handle is open on key.
func (p *Pool) isOpen(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open[key] > 0
}

// openUnder returns a key with an open handle on ds, a descendant or one
// of their snapshots, or "".
func (p *Pool) openUnder(ds zfs.DatasetName) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	prefix := ds.String()
	for k := range p.open {
		if k == prefix || strings.HasPrefix(k, prefix+"/") || strings.HasPrefix(k, prefix+"@") {
			return k
		}
	}
	return ""
}
