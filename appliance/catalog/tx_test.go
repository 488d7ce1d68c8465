package catalog

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"
)

func TestAgentCRUD(t *testing.T) {
	c, _ := openTemp(t, Options{})
	created := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	update(t, c, func(tx *Tx) error {
		for _, id := range []string{"web-2", "db-1", "web-10"} {
			a := Agent{ID: id, Hostname: id + ".lan", Address: id + ":7070", Fingerprint: "sha256:ab", Mode: ModeDirect, Dataset: "tank/agents/" + id, CreatedAt: created}
			if err := tx.PutAgent(a); err != nil {
				return err
			}
		}
		return nil
	})

	var first Agent
	view(t, c, func(tx *Tx) error {
		agents, err := tx.Agents()
		if err != nil {
			return err
		}
		var ids []string
		for _, a := range agents {
			ids = append(ids, a.ID)
		}
		if got := strings.Join(ids, ","); got != "db-1,web-10,web-2" {
			t.Errorf("Agents order = %s", got)
		}
		first, err = tx.Agent("db-1")
		return err
	})
	if first.Hostname != "db-1.lan" || first.Dataset != "tank/agents/db-1" || first.Mode != ModeDirect {
		t.Errorf("Agent(db-1) = %+v", first)
	}
	if !first.CreatedAt.Equal(created) || first.UpdatedAt.Before(created) {
		t.Errorf("timestamps: created %v updated %v", first.CreatedAt, first.UpdatedAt)
	}

	// Replacing keeps CreatedAt even if the caller passes another one.
	update(t, c, func(tx *Tx) error {
		return tx.PutAgent(Agent{ID: "db-1", Hostname: "db-1.new", Mode: ModeReverse, CreatedAt: time.Now()})
	})
	view(t, c, func(tx *Tx) error {
		a, err := tx.Agent("db-1")
		if a.Hostname != "db-1.new" || a.Mode != ModeReverse || !a.CreatedAt.Equal(created) || a.UpdatedAt.Before(first.UpdatedAt) {
			t.Errorf("after replace: %+v", a)
		}
		return err
	})

	update(t, c, func(tx *Tx) error { return tx.DeleteAgent("db-1") })
	err := c.Update(context.Background(), func(tx *Tx) error {
		_, err := tx.Agent("db-1")
		wantErr(t, "Agent after delete", err, ErrNotFound)
		return tx.DeleteAgent("db-1")
	})
	wantErr(t, "second DeleteAgent", err, ErrNotFound)
}

func TestAgentValidation(t *testing.T) {
	c, _ := openTemp(t, Options{})
	tests := []struct {
		id, mode string
		want     error
	}{
		{"a", ModeDirect, nil},
		{"0-agent-9", ModeReverse, nil},
		{strings.Repeat("x", 64), ModeDirect, nil},
		{"", ModeDirect, ErrInvalid},
		{strings.Repeat("x", 65), ModeDirect, ErrInvalid},
		{"-lead", ModeDirect, ErrInvalid},
		{"Upper", ModeDirect, ErrInvalid},
		{"under_score", ModeDirect, ErrInvalid},
		{"dot.ted", ModeDirect, ErrInvalid},
		{"sl/ash", ModeDirect, ErrInvalid},
		{"ok", "", ErrInvalid},
		{"ok", "sideways", ErrInvalid},
	}
	for _, tt := range tests {
		err := c.Update(context.Background(), func(tx *Tx) error {
			return tx.PutAgent(Agent{ID: tt.id, Mode: tt.mode})
		})
		wantErr(t, "PutAgent "+tt.id+"/"+tt.mode, err, tt.want)
	}
}

func TestSettings(t *testing.T) {
	c, _ := openTemp(t, Options{})
	putAgents(t, c, "srv")
	want := Settings{
		AgentID:          "srv",
		BackupSchedule:   "0 * * * *",
		Retention:        Retention{KeepLast: 3, KeepHourly: 24, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 12},
		OffsiteSchedule:  "30 2 * * *",
		OffsiteRetention: Retention{KeepDaily: 30},
		Volumes:          []string{"C:", "D:"},
	}
	update(t, c, func(tx *Tx) error { return tx.PutSettings(want) })
	view(t, c, func(tx *Tx) error {
		got, err := tx.Settings("srv")
		if err != nil {
			return err
		}
		if got.UpdatedAt.IsZero() {
			t.Error("UpdatedAt not set")
		}
		got.UpdatedAt = time.Time{}
		if got.BackupSchedule != want.BackupSchedule || got.Retention != want.Retention ||
			got.OffsiteSchedule != want.OffsiteSchedule || got.OffsiteRetention != want.OffsiteRetention ||
			strings.Join(got.Volumes, ",") != "C:,D:" {
			t.Errorf("Settings = %+v, want %+v", got, want)
		}
		_, err = tx.Settings("other")
		wantErr(t, "Settings(other)", err, ErrNotFound)
		return nil
	})

	tests := []struct {
		name string
		s    Settings
		want error
	}{
		{"unknown agent", Settings{AgentID: "nobody"}, ErrNotFound},
		{"bad agent ID", Settings{AgentID: "No!"}, ErrInvalid},
		{"negative retention", Settings{AgentID: "srv", Retention: Retention{KeepDaily: -1}}, ErrInvalid},
		{"negative offsite retention", Settings{AgentID: "srv", OffsiteRetention: Retention{KeepLast: -1}}, ErrInvalid},
	}
	for _, tt := range tests {
		err := c.Update(context.Background(), func(tx *Tx) error { return tx.PutSettings(tt.s) })
		wantErr(t, tt.name, err, tt.want)
	}
}

func TestRecoveryPoints(t *testing.T) {
	c, _ := openTemp(t, Options{})
	putAgents(t, c, "srv", "empty")
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	// Added out of order; two share a timestamp and sort by name.
	update(t, c, func(tx *Tx) error {
		for _, rp := range []RecoveryPoint{
			{AgentID: "srv", Snapshot: "c", CreatedAt: base.Add(2 * time.Hour), Bytes: 30},
			{AgentID: "srv", Snapshot: "a", CreatedAt: base, Bytes: 10, Volumes: []string{"C:"}},
			{AgentID: "srv", Snapshot: "b2", CreatedAt: base.Add(time.Hour)},
			{AgentID: "srv", Snapshot: "b1", CreatedAt: base.Add(time.Hour)},
		} {
			if err := tx.AddRecoveryPoint(rp); err != nil {
				return err
			}
		}
		return nil
	})
	names := func() string {
		t.Helper()
		var s []string
		view(t, c, func(tx *Tx) error {
			rps, err := tx.RecoveryPoints("srv")
			for _, rp := range rps {
				s = append(s, rp.Snapshot)
			}
			return err
		})
		return strings.Join(s, ",")
	}
	if got := names(); got != "a,b1,b2,c" {
		t.Errorf("RecoveryPoints order = %s", got)
	}

	// Re-adding with the same CreatedAt updates the record.
	verified := base.Add(3 * time.Hour)
	update(t, c, func(tx *Tx) error {
		return tx.AddRecoveryPoint(RecoveryPoint{AgentID: "srv", Snapshot: "a", CreatedAt: base, Bytes: 10, VerifiedAt: verified})
	})
	view(t, c, func(tx *Tx) error {
		rp, err := tx.RecoveryPoint("srv", "a")
		if !rp.VerifiedAt.Equal(verified) || rp.Bytes != 10 || !rp.CreatedAt.Equal(base) {
			t.Errorf("RecoveryPoint(a) = %+v", rp)
		}
		rps, _ := tx.RecoveryPoints("empty")
		if len(rps) != 0 {
			t.Errorf("RecoveryPoints(empty) = %v", rps)
		}
		return err
	})

	update(t, c, func(tx *Tx) error { return tx.DeleteRecoveryPoint("srv", "b1") })
	if got := names(); got != "a,b2,c" {
		t.Errorf("after delete = %s", got)
	}

	ctx := context.Background()
	errorTests := []struct {
		name string
		fn   func(*Tx) error
		want error
	}{
		{"duplicate snapshot", func(tx *Tx) error {
			return tx.AddRecoveryPoint(RecoveryPoint{AgentID: "srv", Snapshot: "c", CreatedAt: base})
		}, ErrInvalid},
		{"unknown agent", func(tx *Tx) error {
			return tx.AddRecoveryPoint(RecoveryPoint{AgentID: "nobody", Snapshot: "x", CreatedAt: base})
		}, ErrNotFound},
		{"bad snapshot name", func(tx *Tx) error {
			return tx.AddRecoveryPoint(RecoveryPoint{AgentID: "srv", Snapshot: "a@b", CreatedAt: base})
		}, ErrInvalid},
		{"empty snapshot name", func(tx *Tx) error {
			return tx.AddRecoveryPoint(RecoveryPoint{AgentID: "srv", CreatedAt: base})
		}, ErrInvalid},
		{"zero time", func(tx *Tx) error {
			return tx.AddRecoveryPoint(RecoveryPoint{AgentID: "srv", Snapshot: "x"})
		}, ErrInvalid},
		{"negative bytes", func(tx *Tx) error {
			return tx.AddRecoveryPoint(RecoveryPoint{AgentID: "srv", Snapshot: "x", CreatedAt: base, Bytes: -1})
		}, ErrInvalid},
		{"get unknown snapshot", func(tx *Tx) error {
			_, err := tx.RecoveryPoint("srv", "zz")
			return err
		}, ErrNotFound},
		{"get from agent without points", func(tx *Tx) error {
			_, err := tx.RecoveryPoint("empty", "a")
			return err
		}, ErrNotFound},
		{"list unknown agent", func(tx *Tx) error {
			_, err := tx.RecoveryPoints("nobody")
			return err
		}, ErrNotFound},
		{"delete unknown snapshot", func(tx *Tx) error { return tx.DeleteRecoveryPoint("srv", "zz") }, ErrNotFound},
		{"delete unknown agent", func(tx *Tx) error { return tx.DeleteRecoveryPoint("nobody", "a") }, ErrNotFound},
	}
	for _, tt := range errorTests {
		wantErr(t, tt.name, c.Update(ctx, tt.fn), tt.want)
	}
	if got := names(); got != "a,b2,c" {
		t.Errorf("after failed calls = %s", got)
	}
}

func TestJobs(t *testing.T) {
	c, _ := openTemp(t, Options{})
	putAgents(t, c, "a1", "a2")
	var ids []uint64
	update(t, c, func(tx *Tx) error {
		for _, agent := range []string{"a2", "a1", "", "a2"} {
			j := &Job{AgentID: agent, Kind: JobBackup, State: JobQueued}
			if err := tx.PutJob(j); err != nil {
				return err
			}
			if j.Created.IsZero() {
				t.Error("Created not set")
			}
			ids = append(ids, j.ID)
		}
		return nil
	})
	if len(ids) != 4 || ids[0] != 1 || ids[3] != 4 {
		t.Fatalf("assigned IDs %v, want 1..4", ids)
	}

	started := time.Date(2025, 2, 3, 4, 5, 6, 7, time.UTC)
	update(t, c, func(tx *Tx) error {
		j, err := tx.Job(2)
		if err != nil {
			return err
		}
		j.State, j.Started, j.Progress = JobFailed, started, JobProgress{BytesDone: 5, BytesTotal: 10}
		j.Error = "disk full"
		return tx.PutJob(&j)
	})
	view(t, c, func(tx *Tx) error {
		j, err := tx.Job(2)
		if j.ID != 2 || j.AgentID != "a1" || j.State != JobFailed || !j.Started.Equal(started) ||
			j.Error != "disk full" || j.Progress.BytesDone != 5 || j.Progress.BytesTotal != 10 {
			t.Errorf("Job(2) = %+v", j)
		}
		all, _ := tx.Jobs("")
		mine, _ := tx.Jobs("a2")
		none, _ := tx.Jobs("nobody")
		if len(all) != 4 || len(mine) != 2 || mine[0].ID != 1 || mine[1].ID != 4 || len(none) != 0 {
			t.Errorf("Jobs: all %d, a2 %v, nobody %v", len(all), mine, none)
		}
		for i, j := range all {
			if j.ID != uint64(i+1) {
				t.Errorf("Jobs()[%d].ID = %d", i, j.ID)
			}
		}
		return err
	})

	errorTests := []struct {
		name string
		job  Job
		want error
	}{
		{"unknown ID", Job{ID: 99, Kind: JobVerify, State: JobQueued}, ErrNotFound},
		{"unknown agent", Job{AgentID: "nobody", Kind: JobVerify, State: JobQueued}, ErrNotFound},
		{"bad agent ID", Job{AgentID: "-x", Kind: JobVerify, State: JobQueued}, ErrInvalid},
		{"no kind", Job{State: JobQueued}, ErrInvalid},
		{"bad kind", Job{Kind: "Backup!", State: JobQueued}, ErrInvalid},
		{"bad state", Job{Kind: JobOffsite, State: "done"}, ErrInvalid},
	}
	for _, tt := range errorTests {
		err := c.Update(context.Background(), func(tx *Tx) error { return tx.PutJob(&tt.job) })
		wantErr(t, tt.name, err, tt.want)
	}
	err := c.View(context.Background(), func(tx *Tx) error {
		_, err := tx.Job(99)
		return err
	})
	wantErr(t, "Job(99)", err, ErrNotFound)
}

func TestAudit(t *testing.T) {
	c, _ := openTemp(t, Options{})
	fixed := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	update(t, c, func(tx *Tx) error {
		for i := range 10 {
			e := AuditEvent{Seq: 1000, Actor: "admin", Action: "agent.add", Target: string(rune('a' + i))}
			if i == 0 {
				e.Time = fixed
			}
			if err := tx.Audit(e); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, c, func(tx *Tx) error {
		all, err := tx.AuditLog(0, 0)
		if err != nil {
			return err
		}
		if len(all) != 10 {
			t.Fatalf("AuditLog(0, 0) returned %d events", len(all))
		}
		for i, e := range all {
			if e.Seq != uint64(i+1) || e.Target != string(rune('a'+i)) || e.Time.IsZero() {
				t.Errorf("event %d = %+v", i, e)
			}
		}
		if !all[0].Time.Equal(fixed) {
			t.Errorf("given Time replaced: %v", all[0].Time)
		}
		page, _ := tx.AuditLog(3, 4)
		if len(page) != 4 || page[0].Seq != 4 || page[3].Seq != 7 {
			t.Errorf("AuditLog(3, 4) = %+v", page)
		}
		tail, _ := tx.AuditLog(8, 100)
		if len(tail) != 2 || tail[1].Seq != 10 {
			t.Errorf("AuditLog(8, 100) = %+v", tail)
		}
		if end, _ := tx.AuditLog(math.MaxUint64, 0); len(end) != 0 {
			t.Errorf("AuditLog(max) = %+v", end)
		}
		return nil
	})
	err := c.Update(context.Background(), func(tx *Tx) error { return tx.Audit(AuditEvent{Actor: "x"}) })
	wantErr(t, "Audit without action", err, ErrInvalid)
}

func TestDeleteAgentCascade(t *testing.T) {
	c, _ := openTemp(t, Options{})
	putAgents(t, c, "gone", "kept")
	now := time.Now()
	update(t, c, func(tx *Tx) error {
		for _, id := range []string{"gone", "kept"} {
			if err := tx.PutSettings(Settings{AgentID: id, BackupSchedule: "@hourly"}); err != nil {
				return err
			}
			if err := tx.AddRecoveryPoint(RecoveryPoint{AgentID: id, Snapshot: "s1", CreatedAt: now}); err != nil {
				return err
			}
			if err := tx.PutJob(&Job{AgentID: id, Kind: JobBackup, State: JobSucceeded}); err != nil {
				return err
			}
			if err := tx.Audit(AuditEvent{Action: "agent.add", Target: id}); err != nil {
				return err
			}
		}
		return nil
	})
	update(t, c, func(tx *Tx) error { return tx.DeleteAgent("gone") })

	view(t, c, func(tx *Tx) error {
		_, err := tx.Settings("gone")
		wantErr(t, "Settings(gone)", err, ErrNotFound)
		_, err = tx.RecoveryPoints("gone")
		wantErr(t, "RecoveryPoints(gone)", err, ErrNotFound)
		if tx.tx.Bucket(bucketRecoveryPoints).Bucket([]byte("gone")) != nil {
			t.Error("recovery point bucket of deleted agent still exists")
		}
		if _, err := tx.Settings("kept"); err != nil {
			t.Errorf("Settings(kept): %v", err)
		}
		if rps, err := tx.RecoveryPoints("kept"); err != nil || len(rps) != 1 {
			t.Errorf("RecoveryPoints(kept) = %v, %v", rps, err)
		}
		// Jobs and audit events are history and stay.
		if jobs, _ := tx.Jobs("gone"); len(jobs) != 1 {
			t.Errorf("Jobs(gone) = %v", jobs)
		}
		if events, _ := tx.AuditLog(0, 0); len(events) != 2 {
			t.Errorf("audit log has %d events, want 2", len(events))
		}
		return nil
	})

	// A new agent with the same ID starts clean.
	putAgents(t, c, "gone")
	view(t, c, func(tx *Tx) error {
		_, err := tx.Settings("gone")
		wantErr(t, "Settings of re-added agent", err, ErrNotFound)
		rps, err := tx.RecoveryPoints("gone")
		if len(rps) != 0 {
			t.Errorf("re-added agent has points %v", rps)
		}
		return err
	})
}

func TestUpdateRollsBackOnError(t *testing.T) {
	c, _ := openTemp(t, Options{})
	putAgents(t, c, "keep")
	boom := errors.New("boom")
	err := c.Update(context.Background(), func(tx *Tx) error {
		if err := tx.PutAgent(Agent{ID: "new", Mode: ModeDirect}); err != nil {
			return err
		}
		if err := tx.DeleteAgent("keep"); err != nil {
			return err
		}
		if err := tx.PutJob(&Job{Kind: JobBackup, State: JobQueued}); err != nil {
			return err
		}
		if err := tx.Audit(AuditEvent{Action: "x"}); err != nil {
			return err
		}
		return boom
	})
	wantErr(t, "Update", err, boom)

	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic in Update did not propagate")
			}
		}()
		c.Update(context.Background(), func(tx *Tx) error {
			if err := tx.PutAgent(Agent{ID: "panicked", Mode: ModeDirect}); err != nil {
				return err
			}
			panic("oops")
		})
	}()

	view(t, c, func(tx *Tx) error {
		agents, err := tx.Agents()
		if len(agents) != 1 || agents[0].ID != "keep" {
			t.Errorf("agents after rollback = %+v", agents)
		}
		jobs, _ := tx.Jobs("")
		events, _ := tx.AuditLog(0, 0)
		if len(jobs) != 0 || len(events) != 0 {
			t.Errorf("after rollback: %d jobs, %d events", len(jobs), len(events))
		}
		return err
	})
	// Sequences rolled back too: the next job is number 1.
	update(t, c, func(tx *Tx) error {
		j := &Job{Kind: JobBackup, State: JobQueued}
		err := tx.PutJob(j)
		if j.ID != 1 {
			t.Errorf("first committed job got ID %d", j.ID)
		}
		return err
	})
}

func TestViewIsReadOnly(t *testing.T) {
	c, _ := openTemp(t, Options{})
	err := c.View(context.Background(), func(tx *Tx) error {
		return tx.PutAgent(Agent{ID: "a", Mode: ModeDirect})
	})
	wantErr(t, "PutAgent in View", err, bolterrors.ErrTxNotWritable)
}

func TestCanceledContext(t *testing.T) {
	c, _ := openTemp(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	fn := func(*Tx) error { called = true; return nil }
	wantErr(t, "Update", c.Update(ctx, fn), context.Canceled)
	wantErr(t, "View", c.View(ctx, fn), context.Canceled)
	if called {
		t.Error("fn ran with a canceled context")
	}
}

func TestConcurrentUse(t *testing.T) {
	c, _ := openTemp(t, Options{})
	const workers, perWorker = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers)
	for range workers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range perWorker {
				errs <- c.Update(context.Background(), func(tx *Tx) error {
					return tx.PutJob(&Job{Kind: JobBackup, State: JobQueued})
				})
			}
		}()
		go func() {
			defer wg.Done()
			for range perWorker {
				errs <- c.View(context.Background(), func(tx *Tx) error {
					_, err := tx.Jobs("")
					return err
				})
			}
		}()
	}
	go func() { wg.Wait(); close(errs) }()
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	view(t, c, func(tx *Tx) error {
		jobs, err := tx.Jobs("")
		for i, j := range jobs {
			if j.ID != uint64(i+1) {
				t.Fatalf("job %d has ID %d", i, j.ID)
			}
		}
		if len(jobs) != workers*perWorker {
			t.Errorf("%d jobs, want %d", len(jobs), workers*perWorker)
		}
		return err
	})
}
