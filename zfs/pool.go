// Package zfs is Cairn's storage layer: the ZFS concepts the appliance works
// in (pool, dataset per agent, volume images in a dataset, snapshot per
// recovery point, holds, send/receive) behind one interface, Pool.
//
// Two implementations exist: zfs/openzfs drives real OpenZFS, and
// zfs/embedded is a pure-Go pool in a directory for machines without ZFS.
// Both pass the conformance suite in zfs/zfstest.
package zfs

import (
	"context"
	"io"
	"time"
)

// Pool is a storage pool rooted at one dataset that Cairn owns (for OpenZFS
// typically "tank/cairn"; for the embedded pool the pool's name). Every
// dataset a Pool touches is Root or below it; names outside Root are refused
// with ErrInvalidName.
//
// All methods are safe for concurrent use. Methods that take a context stop
// early, with the context's error, when it is canceled.
type Pool interface {
	// Root is the dataset under which this pool keeps everything. It exists
	// once the pool is open.
	Root() DatasetName

	// CreateDataset creates name and any missing parents (as zfs create -p).
	// ErrExists if name exists.
	CreateDataset(ctx context.Context, name DatasetName) error
	// DestroyDataset destroys name with its snapshots and child datasets (as
	// zfs destroy -r). ErrHeld if any of those snapshots has a hold, in which
	// case nothing is destroyed. ErrNotFound if name does not exist. Root
	// cannot be destroyed (ErrBusy).
	DestroyDataset(ctx context.Context, name DatasetName) error
	// Dataset describes one dataset; ErrNotFound if it does not exist.
	Dataset(ctx context.Context, name DatasetName) (DatasetInfo, error)
	// Datasets lists Root and every dataset below it, sorted by name.
	Datasets(ctx context.Context) ([]DatasetInfo, error)

	// CreateImage creates an empty (all-zero, sparse) volume image of size
	// bytes in dataset ds. ErrExists if it exists.
	CreateImage(ctx context.Context, ds DatasetName, image string, size int64) error
	// OpenImage opens the live image for reading and writing. Writes are
	// visible to readers of the live image at once and to every snapshot
	// taken after them; Sync makes them durable.
	OpenImage(ctx context.Context, ds DatasetName, image string) (Image, error)
	// Images lists the live images of ds, sorted by name.
	Images(ctx context.Context, ds DatasetName) ([]ImageInfo, error)

	// Snapshot makes writes to ds's images durable and takes snapshot snap
	// of ds: a read-only copy of all of its images as they are now.
	// Returns ErrExists if a snapshot of that name exists.
	Snapshot(ctx context.Context, ds DatasetName, snap string) (SnapshotInfo, error)
	// Snapshots lists the snapshots of ds in creation order.
	Snapshots(ctx context.Context, ds DatasetName) ([]SnapshotInfo, error)
	// DestroySnapshot destroys one snapshot; ErrHeld if it has holds.
	DestroySnapshot(ctx context.Context, snap SnapshotName) error
	// SnapshotImages lists the images in a snapshot, sorted by name.
	SnapshotImages(ctx context.Context, snap SnapshotName) ([]ImageInfo, error)
	// OpenSnapshotImage opens one image of a snapshot for reading. It reads
	// the snapshot's bytes, never the live image.
	OpenSnapshotImage(ctx context.Context, snap SnapshotName, image string) (ImageReader, error)

	// Hold puts a hold with tag on snap; ErrExists if that tag is held.
	Hold(ctx context.Context, snap SnapshotName, tag string) error
	// Release removes the hold tag; ErrNotFound if it is not held.
	Release(ctx context.Context, snap SnapshotName, tag string) error
	// Holds lists the tags holding snap, sorted.
	Holds(ctx context.Context, snap SnapshotName) ([]string, error)

	// Send writes a replication stream of snap to w: the whole snapshot when
	// base is "", otherwise only what changed since snapshot base of the same
	// dataset. The stream is only meaningful to a pool of the same kind.
	Send(ctx context.Context, snap SnapshotName, base string, w io.Writer) error
	// Receive reads a stream made by Send into dataset ds and returns the
	// snapshot it created. A full stream needs ds not to exist (its parent
	// must); an incremental stream needs ds to have the stream's base as its
	// latest snapshot. A stream that is malformed or does not apply fails
	// with ErrStream and leaves ds as it was.
	Receive(ctx context.Context, ds DatasetName, r io.Reader) (SnapshotInfo, error)

	// Verify re-reads every byte of every image of snap and checks it
	// against the pool's checksums. Corruption is reported in the report,
	// not as an error; an error means the check itself could not run.
	Verify(ctx context.Context, snap SnapshotName) (VerifyReport, error)

	// Space reports the bytes used by the pool's data and the bytes free.
	Space(ctx context.Context) (Space, error)

	// Close releases the pool. Open images must be closed first; their
	// unsynced writes are lost otherwise.
	Close() error
}

// Image is a live volume image: a fixed-size, sparse byte array.
type Image interface {
	// ReadAt reads as io.ReaderAt: at or past the end it returns io.EOF.
	io.ReaderAt
	// WriteAt writes p at off. Writing past Size fails with ErrOutOfRange
	// and writes nothing.
	io.WriterAt
	// Size is the image's size in bytes.
	Size() int64
	// Sync makes every write so far durable.
	Sync() error
	// Close closes the handle. It does not sync.
	Close() error
}

// HashedWriter is implemented by an Image that can use the SHA-256 of
// what is written when the caller has computed it already (the embedded
// pool addresses its chunks by it). WriteAtHashed is WriteAt; sum must be
// the SHA-256 of b, or the image's content is wrong. Callers that have the
// hash of a block they checked use it; others use WriteAt.
type HashedWriter interface {
	WriteAtHashed(b []byte, off int64, sum [32]byte) (int, error)
}

// EncodedWriter is implemented by an Image that stores blocks compressed
// and can take a block in the form its caller received it in, so as not to
// compress it again (the embedded pool). WriteAtEncoded is WriteAtHashed
// for a caller that also has b encoded: frame, if not nil, is zstd data
// that decodes to exactly b (one frame, as zstd's EncodeAll writes); nil
// says b did not compress, and it is stored as it is. The caller must have
// checked both, decoding frame itself and hashing what it decoded to: the
// image stores frame as b's content. Others use WriteAtHashed or WriteAt.
type EncodedWriter interface {
	WriteAtEncoded(b []byte, off int64, sum [32]byte, frame []byte) (int, error)
}

// ImageReader reads one image of a snapshot.
type ImageReader interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// DatasetInfo describes a dataset.
type DatasetInfo struct {
	Name DatasetName
	// Used is the space taken by the dataset's data and snapshots, in bytes
	// (for the embedded pool, the stored size of chunks it references, each
	// chunk counted once per dataset even when shared with others).
	Used int64
}

// ImageInfo describes a volume image.
type ImageInfo struct {
	Name string
	Size int64
}

// SnapshotInfo describes a snapshot.
type SnapshotInfo struct {
	Name    SnapshotName
	Created time.Time
	// CreateTxg orders snapshots of one pool: a snapshot created later has a
	// larger value.
	CreateTxg uint64
}

// Space is a pool's use of its storage.
type Space struct {
	Used      int64
	Available int64
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Snapshot SnapshotName
	Images   int   // images checked
	Bytes    int64 // bytes of image read
	Problems []VerifyProblem
}

// OK reports whether the snapshot verified clean.
func (r VerifyReport) OK() bool { return len(r.Problems) == 0 }

// VerifyProblem is one corrupt or missing piece of an image.
type VerifyProblem struct {
	Image  string
	Offset int64 // first byte of the affected range
	Length int64
	Err    string
}
