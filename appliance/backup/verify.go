package backup

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/zfs"
)

// maxBadBlocks bounds the bad blocks a verification lists.
const maxBadBlocks = 16

// VerifyResult is what VerifyPoint found.
type VerifyResult struct {
	Snapshot string `json:"snapshot"`
	Volumes  int    `json:"volumes"`
	Blocks   int64  `json:"blocks"`
	// BadBlocks are the first blocks whose data does not match their
	// hash; BadCount counts them all.
	BadBlocks []BadBlock `json:"bad_blocks,omitempty"`
	BadCount  int64      `json:"bad_count"`
	// Problems are other failures: a hashes image that does not match the
	// catalog's manifest, damage the pool found.
	Problems []string `json:"problems,omitempty"`
}

// BadBlock is a block that fails verification.
type BadBlock struct {
	VolumeID string `json:"volume_id"`
	Index    int64  `json:"index"`
}

// OK reports whether the recovery point verified clean.
func (v VerifyResult) OK() bool { return v.BadCount == 0 && len(v.Problems) == 0 }

func (v VerifyResult) String() string {
	if v.OK() {
		return fmt.Sprintf("%d volumes, %d blocks verified", v.Volumes, v.Blocks)
	}
	var parts []string
	if v.BadCount > 0 {
		var bl []string
		for _, b := range v.BadBlocks {
			bl = append(bl, fmt.Sprintf("%s block %d", b.VolumeID, b.Index))
		}
		parts = append(parts, fmt.Sprintf("%d bad blocks (first: %s)", v.BadCount, strings.Join(bl, ", ")))
	}
	return strings.Join(append(parts, v.Problems...), "; ")
}

// VerifyPoint re-reads every block of a recovery point and checks it
// against the hashes stored beside it, checks those hashes against the
// manifest in the catalog, and has the pool verify the snapshot. It does
// not record anything: StartVerify does.
func (r *Runner) VerifyPoint(ctx context.Context, agentID, snapshot string) (VerifyResult, error) {
	res := VerifyResult{Snapshot: snapshot}
	rp, a, err := r.Point(ctx, agentID, snapshot)
	if err != nil {
		return res, err
	}
	snap, err := pointSnapshot(a, rp)
	if err != nil {
		return res, err
	}
	if len(rp.Images) == 0 {
		return res, fmt.Errorf("recovery point %s has no volume images to verify: %w", snapshot, catalog.ErrInvalid)
	}
	bs := rp.BlockSize
	buf := make([]byte, bs)
	for _, im := range rp.Images {
		res.Volumes++
		if err := r.verifyImage(ctx, snap, bs, im, buf, &res); err != nil {
			return res, err
		}
	}
	rep, err := r.pool.Verify(ctx, snap)
	if err != nil {
		return res, storageErr("pool verify "+snap.String(), err)
	}
	for _, p := range rep.Problems {
		res.Problems = append(res.Problems, fmt.Sprintf("pool: %s at %d (+%d): %s", p.Image, p.Offset, p.Length, p.Err))
	}
	return res, nil
}

func (r *Runner) verifyImage(ctx context.Context, snap zfs.SnapshotName, bs int, im catalog.PointImage, buf []byte, res *VerifyResult) error {
	img, err := r.pool.OpenSnapshotImage(ctx, snap, im.Image)
	if err != nil {
		if errors.Is(err, zfs.ErrNotFound) {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: image %s missing", im.VolumeID, im.Image))
			return nil
		}
		return storageErr("open "+im.Image, err)
	}
	defer img.Close()
	hs, err := r.pool.OpenSnapshotImage(ctx, snap, im.Hashes)
	if err != nil {
		if errors.Is(err, zfs.ErrNotFound) {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: hashes %s missing", im.VolumeID, im.Hashes))
			return nil
		}
		return storageErr("open "+im.Hashes, err)
	}
	defer hs.Close()
	blocks := agentv1.Blocks(im.Size, bs)
	if img.Size() != im.Size || hs.Size() != blocks*agentv1.HashSize {
		res.Problems = append(res.Problems, fmt.Sprintf("%s: image of %d bytes and hashes of %d bytes, want %d and %d",
			im.VolumeID, img.Size(), hs.Size(), im.Size, blocks*agentv1.HashSize))
		return nil
	}
	hr := bufio.NewReaderSize(io.NewSectionReader(hs, 0, hs.Size()), 1<<20)
	ir := bufio.NewReaderSize(io.NewSectionReader(img, 0, img.Size()), 1<<20)
	var man agentv1.Manifest
	var want [agentv1.HashSize]byte
	for i := range blocks {
		if i%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		n := agentv1.BlockLength(im.Size, bs, i)
		if _, err := io.ReadFull(hr, want[:]); err != nil {
			return storageErr(fmt.Sprintf("read hash %d of %s", i, im.Hashes), err)
		}
		man.Add(want[:])
		if _, err := io.ReadFull(ir, buf[:n]); err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: block %d unreadable: %v", im.VolumeID, i, err))
			return nil
		}
		res.Blocks++
		if agentv1.HashBlock(buf[:n]) != want {
			res.BadCount++
			if len(res.BadBlocks) < maxBadBlocks {
				res.BadBlocks = append(res.BadBlocks, BadBlock{VolumeID: im.VolumeID, Index: i})
			}
		}
	}
	if got := hex.EncodeToString(man.Sum()); got != im.Manifest {
		res.Problems = append(res.Problems, fmt.Sprintf("%s: stored hashes give manifest %s, the catalog has %s", im.VolumeID, got, im.Manifest))
	}
	return nil
}

// StartVerify starts a verify job of a recovery point and returns it; on
// success the point's VerifiedAt is set, on failure the job's error names
// the first bad blocks. Wait for it with Job.
func (r *Runner) StartVerify(ctx context.Context, agentID, snapshot string) (catalog.Job, error) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return catalog.Job{}, ErrClosed
	}
	job := catalog.Job{AgentID: agentID, Kind: catalog.JobVerify, State: catalog.JobRunning, Snapshot: snapshot}
	now := r.cfg.Now().UTC()
	job.Created, job.Started = now, now
	err := r.cat.Update(ctx, func(tx *catalog.Tx) error {
		if _, err := tx.RecoveryPoint(agentID, snapshot); err != nil {
			return err
		}
		return tx.PutJob(&job)
	})
	if err != nil {
		return catalog.Job{}, fmt.Errorf("start verify of %s@%s: %w", agentID, snapshot, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return catalog.Job{}, ErrClosed
	}
	c := job
	r.live[job.ID] = &c
	r.wg.Add(1)
	go r.runVerify(job)
	return job, nil
}

func (r *Runner) runVerify(job catalog.Job) {
	defer r.wg.Done()
	defer r.done(job)
	log := r.log.With("job", job.ID, "agent", job.AgentID, "snapshot", job.Snapshot)
	res, err := r.VerifyPoint(r.ctx, job.AgentID, job.Snapshot)
	if err == nil && !res.OK() {
		err = fmt.Errorf("recovery point %s is damaged: %s", job.Snapshot, res)
	}
	if err != nil {
		job.Detail = res.String()
		r.fail(log, &job, err)
		return
	}
	now := r.cfg.Now().UTC()
	job.State, job.Finished, job.Detail = catalog.JobSucceeded, now, res.String()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), callTimeout)
	defer cancel()
	err = r.cat.Update(ctx, func(tx *catalog.Tx) error {
		rp, err := tx.RecoveryPoint(job.AgentID, job.Snapshot)
		if err != nil {
			return err
		}
		rp.VerifiedAt = now
		if err := tx.AddRecoveryPoint(rp); err != nil {
			return err
		}
		return tx.PutJob(&job)
	})
	if err != nil {
		r.fail(log, &job, fmt.Errorf("record the verification: %w", err))
		return
	}
	log.Info("recovery point verified", "detail", job.Detail)
}
