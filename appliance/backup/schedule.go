package backup

import (
	"context"
	"errors"
	"time"

	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/pairing"
)

// Run starts backups on the agents' schedules (Settings.BackupSchedule)
// until ctx ends: every ScheduleInterval it starts the backup of each
// agent whose schedule came due since the last look, unless one is still
// running (that run is skipped).
func (r *Runner) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.ScheduleInterval)
	defer t.Stop()
	r.scheduleTick(ctx, r.cfg.Now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.ctx.Done():
			return nil
		case <-t.C:
			r.scheduleTick(ctx, r.cfg.Now())
		}
	}
}

// scheduleTick starts the backups due at now and returns their jobs. An
// agent's first tick only notes the time: a schedule is due when one of
// its times falls after the previous tick and at or before now.
func (r *Runner) scheduleTick(ctx context.Context, now time.Time) []catalog.Job {
	var agents []catalog.Agent
	settings := make(map[string]catalog.Settings)
	err := r.cat.View(ctx, func(tx *catalog.Tx) error {
		var err error
		if agents, err = tx.Agents(); err != nil {
			return err
		}
		for _, a := range agents {
			s, err := tx.Settings(a.ID)
			if errors.Is(err, catalog.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			settings[a.ID] = s
		}
		return nil
	})
	if err != nil {
		r.log.Error("backup schedule: read the catalog", "err", err)
		return nil
	}
	var started []catalog.Job
	for _, a := range agents {
		s, ok := settings[a.ID]
		if !ok || !scheduled(a, s) {
			continue
		}
		r.mu.Lock()
		last, seen := r.sched[a.ID]
		r.sched[a.ID] = now
		r.mu.Unlock()
		if !seen {
			continue
		}
		sch, err := pairing.ParseSchedule(s.BackupSchedule)
		if err != nil {
			r.log.Warn("backup schedule: agent's schedule does not parse", "agent", a.ID, "schedule", s.BackupSchedule, "err", err)
			continue
		}
		if next := sch.Next(last); next.IsZero() || next.After(now) {
			continue
		}
		job, err := r.Start(ctx, a.ID)
		if errors.Is(err, ErrRunning) {
			r.log.Info("backup schedule: previous backup still running; skipped", "agent", a.ID)
			continue
		}
		if err != nil {
			r.log.Warn("backup schedule: start", "agent", a.ID, "err", err)
			continue
		}
		r.log.Info("backup schedule: started", "agent", a.ID, "job", job.ID)
		started = append(started, job)
	}
	return started
}

// scheduled reports whether the scheduler starts backups of an agent with
// these settings: it has a dataset (its pairing got that far) and a
// schedule.
func scheduled(a catalog.Agent, s catalog.Settings) bool {
	return s.BackupSchedule != "" && a.Dataset != ""
}

// NextBackup returns when the scheduler will next start a backup of an
// agent with settings s: the first time of its schedule after now (Run
// starts it at its first look at or after that time). ok is false when it
// starts none: no dataset yet, no schedule, or one that does not parse.
func (r *Runner) NextBackup(a catalog.Agent, s catalog.Settings) (next time.Time, ok bool) {
	if !scheduled(a, s) {
		return time.Time{}, false
	}
	sch, err := pairing.ParseSchedule(s.BackupSchedule)
	if err != nil {
		return time.Time{}, false
	}
	next = sch.Next(r.cfg.Now())
	return next, !next.IsZero()
}
