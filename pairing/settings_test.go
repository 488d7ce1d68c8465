package pairing

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseScheduleNext(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04 Mon", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, tc := range []struct {
		spec, from, want string
	}{
		{"0 * * * *", "2026-11-22 10:00 Sun", "2026-11-22 11:00 Sun"},
		{"@hourly", "2026-11-22 10:59 Sun", "2026-11-22 11:00 Sun"},
		{"*/15 * * * *", "2026-11-22 10:01 Sun", "2026-11-22 10:15 Sun"},
		{"30 2 * * *", "2026-11-22 02:30 Sun", "2026-11-23 02:30 Mon"},
		{"0 9-17/4 * * mon-fri", "2026-11-21 18:00 Sat", "2026-11-23 09:00 Mon"},
		{"0 9-17/4 * * mon-fri", "2026-11-23 09:00 Mon", "2026-11-23 13:00 Mon"},
		{"0 0 1 * *", "2026-11-22 00:00 Sun", "2026-12-01 00:00 Tue"},
		{"@yearly", "2026-11-22 00:00 Sun", "2027-01-01 00:00 Fri"},
		{"0 0 * * 7", "2026-11-23 00:00 Mon", "2026-11-29 00:00 Sun"},
		{"0 0 29 feb *", "2026-11-22 00:00 Sun", "2028-02-29 00:00 Tue"},
		// Both day fields restricted: either matches (cron's rule).
		{"0 0 1 * mon", "2026-11-24 00:00 Tue", "2026-11-30 00:00 Mon"},
		{"5,35 1 * JAN,dec *", "2026-11-22 00:00 Sun", "2026-12-01 01:05 Tue"},
		{"0 0 30 2 *", "2026-11-22 00:00 Sun", ""},
	} {
		s, err := ParseSchedule(tc.spec)
		if err != nil {
			t.Fatalf("%q: %v", tc.spec, err)
		}
		got := s.Next(at(tc.from))
		if tc.want == "" {
			if !got.IsZero() {
				t.Errorf("%q from %s: got %s, want never", tc.spec, tc.from, got)
			}
			continue
		}
		if want := at(tc.want); !got.Equal(want) {
			t.Errorf("%q from %s: got %s, want %s", tc.spec, tc.from, got.Format("2006-01-02 15:04 Mon"), tc.want)
		}
	}
}

func TestParseScheduleRejects(t *testing.T) {
	for _, spec := range []string{"", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
		"* * * * 8", "*/0 * * * *", "5-1 * * * *", "a * * * *", "* * * foo *", "1,,2 * * * *", "@often", "-1 * * * *"} {
		if _, err := ParseSchedule(spec); err == nil {
			t.Errorf("ParseSchedule(%q) succeeded", spec)
		}
	}
}

type memSettings struct {
	saved map[string]Settings
	err   error
}

func (m *memSettings) SaveSettings(_ context.Context, id string, s Settings) error {
	if m.err != nil {
		return m.err
	}
	m.saved[id] = s
	return nil
}

func TestApplySettings(t *testing.T) {
	ctx := context.Background()
	store := &memSettings{saved: make(map[string]Settings)}
	vols := []string{"/dev/sda1", "/dev/sdb1"}

	good := DefaultSettings()
	good.Volumes = []string{"/dev/sdb1"}
	if r := ApplySettings(ctx, store, "a1", good, vols); r.Status != StatusOK || !strings.Contains(r.Detail, "/dev/sdb1") {
		t.Fatalf("good settings: %+v", r)
	}
	if got := store.saved["a1"]; got.BackupSchedule != good.BackupSchedule || len(got.Volumes) != 1 {
		t.Fatalf("stored %+v", got)
	}

	bad := DefaultSettings()
	bad.BackupSchedule = "every hour"
	bad.Retention = Retention{}
	bad.OffsiteRetention.KeepDaily = -1
	bad.Volumes = []string{"/dev/sdz9", "/dev/sda1", "/dev/sda1"}
	r := ApplySettings(ctx, store, "a2", bad, vols)
	if r.Status != StatusFailed || r.Code != "invalid_settings" || r.Remedy == "" {
		t.Fatalf("bad settings: %+v", r)
	}
	for _, want := range []string{"backup_schedule", "retention: keeps no recovery point", "offsite_retention.keep_daily", `"/dev/sdz9"`, `"/dev/sda1" twice`} {
		if !strings.Contains(r.Detail, want) {
			t.Errorf("detail %q lacks %q", r.Detail, want)
		}
	}
	if _, ok := store.saved["a2"]; ok {
		t.Fatal("invalid settings were stored")
	}

	store.err = errors.New("disk full")
	if r := ApplySettings(ctx, store, "a3", good, vols); r.Status != StatusFailed || r.Code != "store_failed" {
		t.Fatalf("store failure: %+v", r)
	}
}
