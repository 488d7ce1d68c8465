package backup

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/zfs"
)

// stoppedReason is the failure of a job that a restart found unfinished.
const stoppedReason = "the appliance stopped during the job"

// Recover cleans up after an appliance that stopped with jobs in
// progress; call it at startup, before Start. Jobs left queued or running
// fail; snapshots of recovery points that the catalog does not list (the
// appliance stopped between the snapshot and its record) are destroyed.
// What those jobs wrote stays, recorded as dirty, for the next job to
// reuse.
func (r *Runner) Recover(ctx context.Context) error {
	var agents []catalog.Agent
	points := make(map[string]map[string]bool)
	err := r.cat.Update(ctx, func(tx *catalog.Tx) error {
		jobs, err := tx.Jobs("")
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if j.State != catalog.JobQueued && j.State != catalog.JobRunning {
				continue
			}
			j.State, j.Error, j.Finished = catalog.JobFailed, stoppedReason, r.cfg.Now().UTC()
			if err := tx.PutJob(&j); err != nil {
				return err
			}
			r.log.Warn("backup: job failed by a restart", "job", j.ID, "kind", j.Kind, "agent", j.AgentID)
		}
		if agents, err = tx.Agents(); err != nil {
			return err
		}
		for _, a := range agents {
			rps, err := tx.RecoveryPoints(a.ID)
			if err != nil {
				return err
			}
			points[a.ID] = make(map[string]bool)
			for _, rp := range rps {
				points[a.ID][rp.Snapshot] = true
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover jobs: %w", err)
	}
	var errs []error
	for _, a := range agents {
		if a.Dataset == "" {
			continue
		}
		ds, err := zfs.ParseDatasetName(a.Dataset)
		if err != nil {
			errs = append(errs, fmt.Errorf("agent %s: dataset %q: %w", a.ID, a.Dataset, err))
			continue
		}
		snaps, err := r.pool.Snapshots(ctx, ds)
		if errors.Is(err, zfs.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("recover agent %s: %w", a.ID, err))
			continue
		}
		for _, s := range snaps {
			if !isPointSnapshot(s.Name.Snap()) || points[a.ID][s.Name.Snap()] {
				continue
			}
			if err := r.pool.DestroySnapshot(ctx, s.Name); err != nil {
				errs = append(errs, fmt.Errorf("destroy unrecorded snapshot %s: %w", s.Name, err))
				continue
			}
			r.log.Warn("backup: destroyed a snapshot no recovery point records (the appliance stopped while making it)", "snapshot", s.Name.String())
		}
	}
	return errors.Join(errs...)
}
