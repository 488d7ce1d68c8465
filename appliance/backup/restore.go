package backup

import (
	"context"
	"fmt"
	"strconv"

	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/zfs"
)

// Volume is one volume of a recovery point opened for reading: an
// io.ReaderAt over the image in the point's snapshot, Size bytes long.
// Close it when done.
type Volume struct {
	zfs.ImageReader
	Point catalog.RecoveryPoint
	Image catalog.PointImage
	// Snapshot is the recovery point's snapshot, which the image is read
	// from.
	Snapshot zfs.SnapshotName
}

// FindVolume returns the volume of a recovery point named by vol: its
// image name, its volume ID, or its index in the point's volumes (0, 1,
// ...). catalog.ErrNotFound if there is none.
func FindVolume(rp catalog.RecoveryPoint, vol string) (catalog.PointImage, error) {
	for _, im := range rp.Images {
		if im.Image == vol || im.VolumeID == vol {
			return im, nil
		}
	}
	if i, err := strconv.Atoi(vol); err == nil && i >= 0 && i < len(rp.Images) && strconv.Itoa(i) == vol {
		return rp.Images[i], nil
	}
	return catalog.PointImage{}, fmt.Errorf("volume %q of recovery point %s: %w", vol, rp.Snapshot, catalog.ErrNotFound)
}

// Point returns an agent's recovery point.
func (r *Runner) Point(ctx context.Context, agentID, snapshot string) (catalog.RecoveryPoint, catalog.Agent, error) {
	var (
		rp catalog.RecoveryPoint
		a  catalog.Agent
	)
	err := r.cat.View(ctx, func(tx *catalog.Tx) (err error) {
		if a, err = tx.Agent(agentID); err != nil {
			return err
		}
		rp, err = tx.RecoveryPoint(agentID, snapshot)
		return err
	})
	return rp, a, err
}

// OpenVolume opens a volume of an agent's recovery point for reading
// (restore as a raw image, NBD export): vol as in FindVolume.
func (r *Runner) OpenVolume(ctx context.Context, agentID, snapshot, vol string) (*Volume, error) {
	rp, a, err := r.Point(ctx, agentID, snapshot)
	if err != nil {
		return nil, err
	}
	im, err := FindVolume(rp, vol)
	if err != nil {
		return nil, err
	}
	snap, err := pointSnapshot(a, rp)
	if err != nil {
		return nil, err
	}
	rd, err := r.pool.OpenSnapshotImage(ctx, snap, im.Image)
	if err != nil {
		return nil, fmt.Errorf("open %s of %s: %w", im.Image, snap, err)
	}
	if rd.Size() != im.Size {
		rd.Close()
		return nil, fmt.Errorf("image %s of %s has %d bytes, the recovery point says %d", im.Image, snap, rd.Size(), im.Size)
	}
	return &Volume{ImageReader: rd, Point: rp, Image: im, Snapshot: snap}, nil
}

func pointSnapshot(a catalog.Agent, rp catalog.RecoveryPoint) (zfs.SnapshotName, error) {
	ds, err := zfs.ParseDatasetName(a.Dataset)
	if err != nil {
		return zfs.SnapshotName{}, fmt.Errorf("agent %s: dataset %q: %w", a.ID, a.Dataset, err)
	}
	return ds.Snapshot(rp.Snapshot)
}
