package backup

import (
	"context"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/appliance/backup/backuptest"
	"github.com/cairnbackup/cairn/appliance/catalog"
)

// TestSchedule moves an injected clock across an agent's schedule: the
// first look only notes the time, a look after a scheduled time starts a
// backup, a look while it runs skips, and no time passed starts nothing.
func TestSchedule(t *testing.T) {
	f := newFixture(t, embeddedPool(t, t.TempDir()), nil)
	a := f.agent("s-1", map[string][]byte{"sda": backuptest.SparseImage(1<<20, bs, 80)})
	f.update(func(tx *catalog.Tx) error {
		return tx.PutSettings(catalog.Settings{AgentID: "s-1", BackupSchedule: "0 * * * *"}) // hourly
	})
	ctx := context.Background()
	t0 := time.Date(2026, 11, 29, 8, 30, 0, 0, time.UTC)
	if got := f.r.scheduleTick(ctx, t0); len(got) != 0 {
		t.Fatalf("first look started %d jobs", len(got))
	}
	if got := f.r.scheduleTick(ctx, t0.Add(20*time.Minute)); len(got) != 0 {
		t.Fatalf("08:50 started %d jobs", len(got))
	}
	hold := make(chan struct{})
	a.SetFault(&backuptest.Fault{Hold: hold})
	got := f.r.scheduleTick(ctx, t0.Add(31*time.Minute)) // past 09:00
	if len(got) != 1 || got[0].AgentID != "s-1" {
		t.Fatalf("09:01 started %+v, want one job of s-1", got)
	}
	if again := f.r.scheduleTick(ctx, t0.Add(91*time.Minute)); len(again) != 0 { // 10:00 passed, still running
		t.Errorf("a due schedule while a backup runs started %d jobs", len(again))
	}
	close(hold)
	if j := f.wait(got[0].ID); j.State != catalog.JobSucceeded {
		t.Fatalf("scheduled job: %+v", j)
	}
	if again := f.r.scheduleTick(ctx, t0.Add(92*time.Minute)); len(again) != 0 {
		t.Errorf("no time due, yet %d jobs started", len(again))
	}
	if again := f.r.scheduleTick(ctx, t0.Add(151*time.Minute)); len(again) != 1 { // 11:00 passed
		t.Errorf("11:01 started %d jobs, want 1", len(again))
	} else {
		f.wait(again[0].ID)
	}
}

// TestNextBackup: the next time of an agent's schedule after the
// runner's clock, and none without a dataset, a schedule or with one that
// does not parse.
func TestNextBackup(t *testing.T) {
	now := time.Date(2026, 11, 27, 17, 30, 0, 0, time.UTC) // a Friday
	f := newFixture(t, embeddedPool(t, t.TempDir()), func(c *Config) { c.Now = func() time.Time { return now } })
	a := catalog.Agent{ID: "n-1", Mode: catalog.ModeReverse, Dataset: "cairn/agents/n-1"}
	for _, tc := range []struct {
		name     string
		a        catalog.Agent
		schedule string
		want     time.Time
	}{
		{"hourly", a, "0 * * * *", time.Date(2026, 11, 27, 18, 0, 0, 0, time.UTC)},
		{"office hours, over the weekend", a, "15 9-17 * * mon-fri", time.Date(2026, 11, 30, 9, 15, 0, 0, time.UTC)},
		{"no dataset", catalog.Agent{ID: "n-1"}, "0 * * * *", time.Time{}},
		{"no schedule", a, "", time.Time{}},
		{"bad schedule", a, "61 * * * *", time.Time{}},
	} {
		got, ok := f.r.NextBackup(tc.a, catalog.Settings{AgentID: "n-1", BackupSchedule: tc.schedule})
		if ok != !tc.want.IsZero() || !got.Equal(tc.want) {
			t.Errorf("%s: %v %v, want %v", tc.name, got, ok, tc.want)
		}
	}
}
