package zfs

import (
	"errors"
	"strconv"
)

// Sentinel errors. Every Pool method returns errors that wrap one of these
// where the caller may branch on it; test with errors.Is.
var (
	// ErrNotFound: the dataset, snapshot, image or hold does not exist.
	ErrNotFound = errors.New("does not exist")
	// ErrExists: a dataset, snapshot, image or hold of that name exists already.
	ErrExists = errors.New("already exists")
	// ErrInvalidName: a name failed validation (see NameError).
	ErrInvalidName = errors.New("invalid name")
	// ErrHeld: a snapshot (or a dataset with such a snapshot) has holds and
	// cannot be destroyed until they are released.
	ErrHeld = errors.New("snapshot is held")
	// ErrOutOfRange: an offset or size is outside the image (writes past the
	// end, negative offsets). Reads at or past the end return io.EOF, as
	// io.ReaderAt requires.
	ErrOutOfRange = errors.New("offset out of range")
	// ErrBusy: the dataset has children, or the pool is in use by another process.
	ErrBusy = errors.New("busy")
	// ErrStream: a send stream is malformed, truncated, for another kind of
	// pool, or does not apply to the receiving dataset (missing base snapshot).
	ErrStream = errors.New("bad send stream")
	// ErrCorrupt: stored data failed its checksum.
	ErrCorrupt = errors.New("data corrupt")
	// ErrClosed: the pool or image was closed.
	ErrClosed = errors.New("closed")
)

// Error is the error returned by Pool operations: what was done, on what,
// and why. Err wraps a sentinel above and may wrap a cause (such as a
// command's stderr) as well.
type Error struct {
	Op   string // "create dataset", "snapshot", ...
	Name string // the dataset, snapshot or image concerned
	Err  error
}

func (e *Error) Error() string {
	if e.Name == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return e.Op + " " + e.Name + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// NameError reports a name that failed validation. It matches ErrInvalidName.
type NameError struct {
	Name   string
	Reason string
}

func (e *NameError) Error() string {
	return "invalid name " + quote(e.Name) + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidName) true for every NameError.
func (e *NameError) Is(target error) bool { return target == ErrInvalidName }

// quote quotes a name for an error message, shortened so that a hostile
// name cannot flood a log.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
