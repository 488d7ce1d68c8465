// Package backup runs the appliance's side of block-level backups: a job
// per agent asks the agent for the blocks of its volumes (the agent API's
// Backup), checks and writes them into the volume images of the agent's
// dataset, and, once every image is durable, takes one snapshot of the
// dataset: the recovery point, with each volume's block hashes stored as an
// image beside the volume's image. It also reads recovery points back
// (restore), verifies them against their hashes, and starts backups on the
// agents' schedules.
//
// A job that fails leaves no recovery point: what it wrote stays in the
// live images, recorded in the catalog as dirty (catalog.DirtyImage) before
// it is written, so that the next job hashes it, tells the agent which
// blocks the image holds (BackupVolume.dirty) and does not fetch them again.
package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/zfs"
)

// DefaultMaxConcurrent is Config.MaxConcurrent's default.
const DefaultMaxConcurrent = 2

// ErrRunning is returned by Start for an agent whose backup is queued or
// running.
var ErrRunning = errors.New("a backup of this agent is already queued or running")

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("backup runner closed")

// Clients gives the agent API client of an agent, connecting a direct-mode
// agent that has no session (*gateway.Gateway).
type Clients interface {
	Dial(ctx context.Context, agentID string) (agentv1.AgentServiceClient, error)
}

// Config is what a Runner works with.
type Config struct {
	Catalog *catalog.Catalog
	Pool    zfs.Pool
	Clients Clients
	// MaxConcurrent bounds the backups that run at once; more wait queued
	// (0: DefaultMaxConcurrent).
	MaxConcurrent int
	// BlockSize is the block size asked of agents (0:
	// agentv1.DefaultBlockSize); a power of two from 4 KiB to 4 MiB.
	BlockSize int
	Logger    *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// ScheduleInterval is how often Run looks for due schedules (0: 30s).
	ScheduleInterval time.Duration
}

// Runner runs backup and verify jobs.
type Runner struct {
	cfg   Config
	log   *slog.Logger
	cat   *catalog.Catalog
	pool  zfs.Pool
	slots chan struct{}

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	running map[string]uint64       // agent ID → its backup job (0 while being created)
	live    map[uint64]*catalog.Job // jobs in progress, as last updated
	sched   map[string]time.Time    // agent ID → when its schedule was last checked

	// hookBeforeCommit, if set (tests), runs after the snapshot and before
	// the catalog records it; an error fails the job there.
	hookBeforeCommit func(jobID uint64) error
}

// New makes a Runner. Call Recover before starting jobs after a restart.
func New(cfg Config) (*Runner, error) {
	if cfg.Catalog == nil || cfg.Pool == nil || cfg.Clients == nil {
		return nil, errors.New("backup: catalog, pool and clients are required")
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	bs, err := agentv1.BlockSize(uint32(cfg.BlockSize))
	if err != nil || cfg.BlockSize < 0 {
		return nil, fmt.Errorf("backup: %d: %w", cfg.BlockSize, err)
	}
	cfg.BlockSize = bs
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ScheduleInterval <= 0 {
		cfg.ScheduleInterval = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{cfg: cfg, log: cfg.Logger, cat: cfg.Catalog, pool: cfg.Pool,
		slots: make(chan struct{}, cfg.MaxConcurrent), ctx: ctx, cancel: cancel,
		running: make(map[string]uint64), live: make(map[uint64]*catalog.Job), sched: make(map[string]time.Time)}, nil
}

// Close cancels the jobs in progress (they fail, leaving no recovery
// point) and waits for them to end.
func (r *Runner) Close() {
	r.mu.Lock()
	r.closed = true
	r.cancel()
	r.mu.Unlock()
	r.wg.Wait()
}

// Start queues a backup of an agent and returns its job (state queued);
// it runs as soon as fewer than MaxConcurrent backups run. ErrRunning if
// the agent's previous backup has not finished; catalog.ErrNotFound if the
// agent does not exist.
func (r *Runner) Start(ctx context.Context, agentID string) (catalog.Job, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return catalog.Job{}, ErrClosed
	}
	if id, ok := r.running[agentID]; ok {
		r.mu.Unlock()
		return catalog.Job{}, fmt.Errorf("agent %q: job %d: %w", agentID, id, ErrRunning)
	}
	r.running[agentID] = 0
	r.mu.Unlock()

	job := catalog.Job{AgentID: agentID, Kind: catalog.JobBackup, State: catalog.JobQueued, Created: r.cfg.Now().UTC()}
	err := r.cat.Update(ctx, func(tx *catalog.Tx) error {
		a, err := tx.Agent(agentID)
		if err != nil {
			return err
		}
		if a.Dataset == "" {
			return fmt.Errorf("agent %q has no dataset yet (pairing not finished): %w", agentID, catalog.ErrInvalid)
		}
		return tx.PutJob(&job)
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil && r.closed {
		err = ErrClosed // the job record stays queued; Recover fails it
	}
	if err != nil {
		delete(r.running, agentID)
		return catalog.Job{}, fmt.Errorf("start backup of agent %q: %w", agentID, err)
	}
	r.running[agentID] = job.ID
	c := job
	r.live[job.ID] = &c
	r.wg.Add(1)
	go r.runBackup(job)
	return job, nil
}

// Running reports the backup job queued or running for an agent, if any.
func (r *Runner) Running(agentID string) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.running[agentID]
	return id, ok && id != 0
}

// Job returns a job: the live copy of one in progress (with its current
// progress), or the catalog's record.
func (r *Runner) Job(ctx context.Context, id uint64) (catalog.Job, error) {
	r.mu.Lock()
	if j, ok := r.live[id]; ok {
		c := *j
		r.mu.Unlock()
		return c, nil
	}
	r.mu.Unlock()
	var j catalog.Job
	err := r.cat.View(ctx, func(tx *catalog.Tx) (err error) {
		j, err = tx.Job(id)
		return err
	})
	return j, err
}

// Jobs returns an agent's jobs (all kinds), newest first, with the live
// progress of those in progress. catalog.ErrNotFound if the agent does not
// exist.
func (r *Runner) Jobs(ctx context.Context, agentID string) ([]catalog.Job, error) {
	var jobs []catalog.Job
	err := r.cat.View(ctx, func(tx *catalog.Tx) error {
		if _, err := tx.Agent(agentID); err != nil {
			return err
		}
		var err error
		jobs, err = tx.Jobs(agentID)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]catalog.Job, 0, len(jobs))
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(jobs) - 1; i >= 0; i-- {
		j := jobs[i]
		if l, ok := r.live[j.ID]; ok {
			j = *l
		}
		out = append(out, j)
	}
	return out, nil
}

// setLive publishes a job's current state for Job and Jobs.
func (r *Runner) setLive(j catalog.Job) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.live[j.ID]; ok {
		r.live[j.ID] = &j
	}
}

// done forgets a finished job.
func (r *Runner) done(j catalog.Job) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.live, j.ID)
	if j.Kind == catalog.JobBackup && r.running[j.AgentID] == j.ID {
		delete(r.running, j.AgentID)
	}
}

// saveJob stores a job record, even while the Runner closes.
func (r *Runner) saveJob(j *catalog.Job) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), 30*time.Second)
	defer cancel()
	return r.cat.Update(ctx, func(tx *catalog.Tx) error { return tx.PutJob(j) })
}

// runBackup runs one backup job from the queue to its end.
func (r *Runner) runBackup(job catalog.Job) {
	defer r.wg.Done()
	defer r.done(job)
	log := r.log.With("job", job.ID, "agent", job.AgentID)
	select {
	case r.slots <- struct{}{}:
		defer func() { <-r.slots }()
	case <-r.ctx.Done():
		r.fail(log, &job, fmt.Errorf("canceled: the appliance stopped before the job could run: %w", r.ctx.Err()))
		return
	}
	job.State, job.Started = catalog.JobRunning, r.cfg.Now().UTC()
	if err := r.saveJob(&job); err != nil {
		log.Error("backup: store job", "err", err)
	}
	r.setLive(job)
	log.Info("backup started")
	b := &run{r: r, job: &job, log: log, started: job.Started, lastSave: job.Started}
	if err := b.backup(r.ctx); err != nil {
		r.fail(log, &job, err)
		return
	}
	log.Info("backup succeeded", "snapshot", job.Snapshot, "detail", job.Detail)
}

// fail records a job's failure with the operator's reason.
func (r *Runner) fail(log *slog.Logger, job *catalog.Job, err error) {
	job.State, job.Finished, job.Error = catalog.JobFailed, r.cfg.Now().UTC(), Reason(err)
	job.Progress.Rate, job.Progress.ETASeconds = 0, 0
	log.Warn("job failed", "kind", job.Kind, "reason", job.Error, "err", err)
	if serr := r.saveJob(job); serr != nil {
		log.Error("store failed job", "err", serr)
	}
}
