package openzfs

import (
	"context"
	"errors"
	"io"

	"github.com/cairnbackup/cairn/zfs"
)

const (
	// verifyChunk is how much Verify reads at a time.
	verifyChunk = 1 << 20
	// verifyPiece is the granularity to which Verify narrows a chunk that
	// failed: the default recordsize, the unit ZFS checksums.
	verifyPiece = 128 << 10
)

// Verify reads every byte of every image of snap from the snapshot. ZFS
// checks each block against its checksum as it reads it, and a block it
// cannot repair fails with EIO: such a range becomes a VerifyProblem (to
// 128 KiB precision) and the check goes on after it. Bytes counts the bytes
// read successfully.
func (p *Pool) Verify(ctx context.Context, snap zfs.SnapshotName) (zfs.VerifyReport, error) {
	const op = "verify"
	if err := p.checkSnap(op, snap); err != nil {
		return zfs.VerifyReport{}, err
	}
	dir, err := p.snapshotDir(ctx, snap)
	if err != nil {
		return zfs.VerifyReport{}, &zfs.Error{Op: op, Name: snap.String(), Err: err}
	}
	imgs, err := listImages(dir)
	if err != nil {
		return zfs.VerifyReport{}, &zfs.Error{Op: op, Name: snap.String(), Err: err}
	}
	rep := zfs.VerifyReport{Snapshot: snap}
	buf := make([]byte, verifyChunk)
	for _, img := range imgs {
		r, err := p.OpenSnapshotImage(ctx, snap, img.Name)
		if err != nil {
			rep.Problems = append(rep.Problems, zfs.VerifyProblem{Image: img.Name, Length: img.Size, Err: err.Error()})
			continue
		}
		rep.Images++
		err = verifyImage(ctx, img.Name, r, buf, &rep)
		r.Close()
		if err != nil {
			return zfs.VerifyReport{}, &zfs.Error{Op: op, Name: snap.String(), Err: err}
		}
	}
	return rep, nil
}

// verifyImage reads all of r, adding to rep. It returns only ctx's error.
func verifyImage(ctx context.Context, name string, r zfs.ImageReader, buf []byte, rep *zfs.VerifyReport) error {
	size := r.Size()
	for off := int64(0); off < size; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(len(buf)), size-off))
		got, err := r.ReadAt(buf[:n], off)
		if got == n && (err == nil || err == io.EOF) {
			rep.Bytes += int64(n)
			continue
		}
		// Narrow the failure down to the pieces that fail.
		for poff := off; poff < off+int64(n); poff += verifyPiece {
			pn := int(min(verifyPiece, off+int64(n)-poff))
			got, err := r.ReadAt(buf[:pn], poff)
			if got == pn && (err == nil || err == io.EOF) {
				rep.Bytes += int64(pn)
				continue
			}
			if err == nil {
				err = errors.New("short read")
			}
			addProblem(rep, zfs.VerifyProblem{Image: name, Offset: poff, Length: int64(pn), Err: err.Error()})
		}
	}
	return nil
}

// addProblem appends pr, merging it into the previous problem when the two
// ranges touch and have the same error.
func addProblem(rep *zfs.VerifyReport, pr zfs.VerifyProblem) {
	if k := len(rep.Problems); k > 0 {
		last := &rep.Problems[k-1]
		if last.Image == pr.Image && last.Offset+last.Length == pr.Offset && last.Err == pr.Err {
			last.Length += pr.Length
			return
		}
	}
	rep.Problems = append(rep.Problems, pr)
}
