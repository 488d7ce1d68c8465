package backup

import (
	"fmt"

	"github.com/cairnbackup/cairn/appliance/catalog"
)

// ForgetPoint deletes the record of an agent's recovery point in tx, for
// whoever deletes points (retention, an operator); destroying its snapshot
// is the caller's. Use it rather than Tx.DeleteRecoveryPoint: backups
// trust the newest point that holds a volume's image to hold what the live
// image holds, so where the forgotten point is that newest one, the image
// is recorded as dirty in full, and the next backup hashes it instead of
// trusting an older point.
func ForgetPoint(tx *catalog.Tx, agentID, snapshot string) error {
	rps, err := tx.RecoveryPoints(agentID)
	if err != nil {
		return fmt.Errorf("forget recovery point %s@%s: %w", agentID, snapshot, err)
	}
	at := -1
	for i, rp := range rps {
		if rp.Snapshot == snapshot {
			at = i
		}
	}
	if at < 0 {
		return fmt.Errorf("forget recovery point %s@%s: %w", agentID, snapshot, catalog.ErrNotFound)
	}
	rp := rps[at]
	dirty, err := tx.DirtyImages(agentID)
	if err != nil {
		return fmt.Errorf("forget recovery point %s@%s: %w", agentID, snapshot, err)
	}
	for _, im := range rp.Images {
		newest := true
		for _, later := range rps[at+1:] {
			for _, li := range later.Images {
				newest = newest && li.Image != im.Image
			}
		}
		if !newest || rp.BlockSize <= 0 {
			continue
		}
		d := catalog.DirtyImage{AgentID: agentID, Image: im.Image, VolumeID: im.VolumeID, BlockSize: rp.BlockSize,
			Blocks: im.Blocks, JobID: rp.JobID}
		for _, old := range dirty {
			if old.Image == im.Image && old.Blocks*int64(old.BlockSize) > d.Blocks*int64(d.BlockSize) {
				d.Blocks, d.BlockSize = old.Blocks, old.BlockSize
			}
		}
		if err := tx.PutDirtyImage(d); err != nil {
			return fmt.Errorf("forget recovery point %s@%s: %w", agentID, snapshot, err)
		}
	}
	return tx.DeleteRecoveryPoint(agentID, snapshot)
}
