package openzfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"syscall"

	"github.com/cairnbackup/cairn/zfs"
)

// CreateImage creates a sparse file of size bytes, <mountpoint>/<image>.
func (p *Pool) CreateImage(ctx context.Context, ds zfs.DatasetName, image string, size int64) error {
	const op = "create image"
	if err := p.check(op, ds); err != nil {
		return err
	}
	if err := zfs.ValidComponent(image); err != nil {
		return nameErr(op, ds.String()+"/"+image, err)
	}
	name := ds.String() + "/" + image
	if size < 0 {
		return &zfs.Error{Op: op, Name: name, Err: fmt.Errorf("%w: size %d", zfs.ErrOutOfRange, size)}
	}
	if err := ctx.Err(); err != nil {
		return &zfs.Error{Op: op, Name: name, Err: err}
	}
	dir, err := p.mountpoint(ctx, ds)
	if err != nil {
		return &zfs.Error{Op: op, Name: name, Err: err}
	}
	path := filepath.Join(dir, image)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return &zfs.Error{Op: op, Name: name, Err: fileErr(err)}
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return &zfs.Error{Op: op, Name: name, Err: err}
	}
	return nil
}

// OpenImage opens the live image <mountpoint>/<image> for reading and
// writing. A dataset received by Receive is read-only, so its images
// cannot be opened this way; read its snapshots.
func (p *Pool) OpenImage(ctx context.Context, ds zfs.DatasetName, image string) (zfs.Image, error) {
	const op = "open image"
	if err := p.check(op, ds); err != nil {
		return nil, err
	}
	if err := zfs.ValidComponent(image); err != nil {
		return nil, nameErr(op, ds.String()+"/"+image, err)
	}
	name := ds.String() + "/" + image
	if err := ctx.Err(); err != nil {
		return nil, &zfs.Error{Op: op, Name: name, Err: err}
	}
	dir, err := p.mountpoint(ctx, ds)
	if err != nil {
		return nil, &zfs.Error{Op: op, Name: name, Err: err}
	}
	f, size, err := openRegular(filepath.Join(dir, image), os.O_RDWR)
	if err != nil {
		return nil, &zfs.Error{Op: op, Name: name, Err: err}
	}
	return &liveImage{fileImage{f: f, size: size, name: name, release: p.opened(ds.String())}}, nil
}

// Images lists the regular files in ds's mountpoint, sorted by name. Child
// datasets (directories there) and files whose names Cairn would not make
// are not images.
func (p *Pool) Images(ctx context.Context, ds zfs.DatasetName) ([]zfs.ImageInfo, error) {
	const op = "list images"
	if err := p.check(op, ds); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, &zfs.Error{Op: op, Name: ds.String(), Err: err}
	}
	dir, err := p.mountpoint(ctx, ds)
	if err != nil {
		return nil, &zfs.Error{Op: op, Name: ds.String(), Err: err}
	}
	imgs, err := listImages(dir)
	if err != nil {
		return nil, &zfs.Error{Op: op, Name: ds.String(), Err: err}
	}
	return imgs, nil
}

// snapshotDir returns <mountpoint>/.zfs/snapshot/<snap>: reading it makes
// ZFS mount the snapshot there. ErrNotFound if the snapshot does not exist.
func (p *Pool) snapshotDir(ctx context.Context, snap zfs.SnapshotName) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	mnt, err := p.mountpoint(ctx, snap.Dataset())
	if err != nil {
		return "", err
	}
	dir := filepath.Join(mnt, ".zfs", "snapshot", snap.Snap())
	// The snapshot directory lists exactly the dataset's snapshots, so a
	// lookup there answers whether the snapshot exists without a command.
	if _, err := os.Stat(dir); err != nil {
		return "", fileErr(err)
	}
	return dir, nil
}

// SnapshotImages lists the images in snap, sorted by name.
func (p *Pool) SnapshotImages(ctx context.Context, snap zfs.SnapshotName) ([]zfs.ImageInfo, error) {
	const op = "list snapshot images"
	if err := p.checkSnap(op, snap); err != nil {
		return nil, err
	}
	dir, err := p.snapshotDir(ctx, snap)
	if err != nil {
		return nil, &zfs.Error{Op: op, Name: snap.String(), Err: err}
	}
	imgs, err := listImages(dir)
	if err != nil {
		return nil, &zfs.Error{Op: op, Name: snap.String(), Err: err}
	}
	return imgs, nil
}

// OpenSnapshotImage opens <mountpoint>/.zfs/snapshot/<snap>/<image>.
func (p *Pool) OpenSnapshotImage(ctx context.Context, snap zfs.SnapshotName, image string) (zfs.ImageReader, error) {
	const op = "open snapshot image"
	if err := p.checkSnap(op, snap); err != nil {
		return nil, err
	}
	if err := zfs.ValidComponent(image); err != nil {
		return nil, nameErr(op, snap.String()+"/"+image, err)
	}
	name := snap.String() + "/" + image
	dir, err := p.snapshotDir(ctx, snap)
	if err != nil {
		return nil, &zfs.Error{Op: op, Name: name, Err: err}
	}
	f, size, err := openRegular(filepath.Join(dir, image), os.O_RDONLY)
	if err != nil {
		return nil, &zfs.Error{Op: op, Name: name, Err: err}
	}
	return &fileImage{f: f, size: size, name: name, release: p.opened(snap.String())}, nil
}

// listImages lists the regular files of dir with valid image names.
func listImages(dir string) ([]zfs.ImageInfo, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fileErr(err)
	}
	imgs := []zfs.ImageInfo{}
	for _, e := range entries {
		if !e.Type().IsRegular() || zfs.ValidComponent(e.Name()) != nil {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since ReadDir
		}
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, zfs.ImageInfo{Name: e.Name(), Size: fi.Size()})
	}
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Name < imgs[j].Name })
	return imgs, nil
}

// openRegular opens path, which must be a regular file (not a symbolic
// link or directory), and returns it with its size.
func openRegular(path string, flag int) (*os.File, int64, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, fileErr(err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%w: %s is not a regular file", zfs.ErrNotFound, filepath.Base(path))
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// fileErr adds the zfs sentinel that a file system error means.
func fileErr(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.EISDIR):
		return fmt.Errorf("%w: %w", zfs.ErrNotFound, err)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: %w", zfs.ErrExists, err)
	case errors.Is(err, fs.ErrClosed):
		return fmt.Errorf("%w: %w", zfs.ErrClosed, err)
	}
	return err
}

// fileImage is an open image file of fixed size: a snapshot's image, or
// the read side of a live one.
type fileImage struct {
	f       *os.File
	size    int64
	name    string
	release func()
	closed  atomic.Bool
}

// ReadAt reads as io.ReaderAt: io.EOF at or past the end, ErrOutOfRange
// for a negative offset.
func (m *fileImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &zfs.Error{Op: "read", Name: m.name, Err: fmt.Errorf("%w: offset %d", zfs.ErrOutOfRange, off)}
	}
	if off >= m.size {
		return 0, io.EOF
	}
	short := false
	if int64(len(p)) > m.size-off {
		p = p[:m.size-off]
		short = true
	}
	n, err := m.f.ReadAt(p, off)
	if err != nil && err != io.EOF {
		return n, &zfs.Error{Op: "read", Name: m.name, Err: fileErr(err)}
	}
	if err == io.EOF && n == len(p) && !short {
		err = nil
	}
	if short && err == nil {
		err = io.EOF
	}
	if err == io.EOF && n < len(p) {
		// The file is shorter than it was when opened: that is not a
		// short image but a broken one.
		return n, &zfs.Error{Op: "read", Name: m.name, Err: fmt.Errorf("%w: file shrank below %d bytes", zfs.ErrCorrupt, m.size)}
	}
	return n, err
}

// Size is the image's size in bytes.
func (m *fileImage) Size() int64 { return m.size }

// Close closes the file; a second Close returns ErrClosed.
func (m *fileImage) Close() error {
	if m.closed.Swap(true) {
		return &zfs.Error{Op: "close", Name: m.name, Err: zfs.ErrClosed}
	}
	m.release()
	if err := m.f.Close(); err != nil {
		return &zfs.Error{Op: "close", Name: m.name, Err: err}
	}
	return nil
}

// liveImage is a writable image.
type liveImage struct {
	fileImage
}

// WriteAt writes p at off; nothing is written when any of p would be
// outside the image (ErrOutOfRange).
func (m *liveImage) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > m.size || int64(len(p)) > m.size-off {
		return 0, &zfs.Error{Op: "write", Name: m.name,
			Err: fmt.Errorf("%w: %d bytes at %d, image is %d bytes", zfs.ErrOutOfRange, len(p), off, m.size)}
	}
	n, err := m.f.WriteAt(p, off)
	if err != nil {
		return n, &zfs.Error{Op: "write", Name: m.name, Err: fileErr(err)}
	}
	return n, nil
}

// Sync makes the writes so far durable (fsync, which ZFS commits to its
// intent log).
func (m *liveImage) Sync() error {
	if err := m.f.Sync(); err != nil {
		return &zfs.Error{Op: "sync", Name: m.name, Err: fileErr(err)}
	}
	return nil
}

var (
	_ zfs.Image       = (*liveImage)(nil)
	_ zfs.ImageReader = (*fileImage)(nil)
)
