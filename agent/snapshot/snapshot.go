// Package snapshot makes frozen, readable views of volumes behind one
// interface: image (a file or block device read as is), LVM snapshots of
// logical volumes (Linux) and VSS shadow copies (Windows).
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// Provider makes snapshots of volumes.
type Provider interface {
	// Name is the provider's name as the agent API reports it ("image",
	// "lvm", "vss").
	Name() string
	// Snapshot makes a snapshot of the volume for the job. The caller must
	// Release it.
	Snapshot(ctx context.Context, volume, job string) (Snap, error)
}

// Snap is a snapshot being read.
type Snap interface {
	io.ReaderAt
	// Size is the snapshot's size in bytes.
	Size() int64
	// Device is the file or device read.
	Device() string
	// PointInTime reports whether the snapshot is a copy frozen when it
	// was made (LVM, VSS), so that applications quiesced for it may resume
	// at once; false when reads see the source itself (image), which must
	// then stay quiet until Release.
	PointInTime() bool
	// Release closes the snapshot and removes what Snapshot made. It is
	// called exactly once, with a context that is still live even when the
	// backup was canceled.
	Release(ctx context.Context) error
}

// Image reads a file or block device as is: for image files and devices
// that nothing writes to while they are backed up, and for tests.
type Image struct{}

var _ Provider = Image{}

// Name is "image".
func (Image) Name() string { return "image" }

// Snapshot opens the file or device.
func (Image) Snapshot(ctx context.Context, volume, _ string) (Snap, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return openFile(volume, false, nil)
}

// fileSnap is an open file or device.
type fileSnap struct {
	*os.File
	size        int64
	pointInTime bool
	release     func(context.Context) error
}

func openFile(path string, pointInTime bool, release func(context.Context) error) (*fileSnap, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	size, err := fileSize(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("size of %s: %w", path, err)
	}
	return &fileSnap{File: f, size: size, pointInTime: pointInTime, release: release}, nil
}

func (s *fileSnap) Size() int64       { return s.size }
func (s *fileSnap) Device() string    { return s.Name() }
func (s *fileSnap) PointInTime() bool { return s.pointInTime }

func (s *fileSnap) Release(ctx context.Context) error {
	err := s.Close()
	if s.release != nil {
		err = errors.Join(err, s.release(ctx))
	}
	return err
}

// Size is the size of a file or block device.
func Size(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return fileSize(f)
}

// fileSize is a regular file's length, or a device's: found by seeking to
// its end on Unix (which block devices support on Linux and the BSDs), by
// asking the device on Windows (where a volume device may not stat).
func fileSize(f *os.File) (int64, error) {
	st, err := f.Stat()
	switch {
	case err == nil && st.Mode().IsRegular():
		return st.Size(), nil
	case err == nil && st.IsDir():
		return 0, errors.New("is a directory")
	}
	size, derr := deviceSize(f)
	if derr != nil && err != nil {
		return 0, errors.Join(err, derr)
	}
	return size, derr
}
