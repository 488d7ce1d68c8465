package pairing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Retention says how many recovery points to keep: the newest KeepLast,
// plus the newest in each of the last KeepHourly hours, KeepDaily days and
// so on.
type Retention struct {
	KeepLast    int `json:"keep_last"`
	KeepHourly  int `json:"keep_hourly"`
	KeepDaily   int `json:"keep_daily"`
	KeepWeekly  int `json:"keep_weekly"`
	KeepMonthly int `json:"keep_monthly"`
}

func (r Retention) total() int {
	return r.KeepLast + r.KeepHourly + r.KeepDaily + r.KeepWeekly + r.KeepMonthly
}

// Settings are what the wizard's last page chooses for an agent.
type Settings struct {
	// BackupSchedule is a cron spec (5 fields, or @hourly, @daily, ...).
	BackupSchedule string    `json:"backup_schedule"`
	Retention      Retention `json:"retention"`
	// OffsiteSchedule is a cron spec; "" means no offsite copies.
	OffsiteSchedule  string    `json:"offsite_schedule"`
	OffsiteRetention Retention `json:"offsite_retention"`
	// Volumes are the IDs of the volumes to protect; empty means all.
	Volumes []string `json:"volumes"`
}

// DefaultSettings are hourly backups kept for a day, a week of dailies, a
// month of weeklies and half a year of monthlies, synced offsite nightly.
func DefaultSettings() Settings {
	return Settings{
		BackupSchedule:   "0 * * * *",
		Retention:        Retention{KeepLast: 24, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 6},
		OffsiteSchedule:  "0 2 * * *",
		OffsiteRetention: Retention{KeepDaily: 30, KeepMonthly: 12},
	}
}

// maxKeep bounds each retention count.
const maxKeep = 10000

// Validate checks the settings against the agent's volumes (nil: do not
// check volume IDs) and returns every problem, one per field.
func (s Settings) Validate(volumes []string) error {
	var errs []error
	if _, err := ParseSchedule(s.BackupSchedule); err != nil {
		errs = append(errs, fmt.Errorf("backup_schedule: %w", err))
	}
	if s.OffsiteSchedule != "" {
		if _, err := ParseSchedule(s.OffsiteSchedule); err != nil {
			errs = append(errs, fmt.Errorf("offsite_schedule: %w", err))
		}
	}
	for name, r := range map[string]Retention{"retention": s.Retention, "offsite_retention": s.OffsiteRetention} {
		for field, n := range map[string]int{"keep_last": r.KeepLast, "keep_hourly": r.KeepHourly, "keep_daily": r.KeepDaily,
			"keep_weekly": r.KeepWeekly, "keep_monthly": r.KeepMonthly} {
			if n < 0 || n > maxKeep {
				errs = append(errs, fmt.Errorf("%s.%s: %d is not between 0 and %d", name, field, n, maxKeep))
			}
		}
	}
	if s.Retention.total() == 0 {
		errs = append(errs, errors.New("retention: keeps no recovery point; set at least one count"))
	}
	if s.OffsiteSchedule != "" && s.OffsiteRetention.total() == 0 {
		errs = append(errs, errors.New("offsite_retention: keeps no offsite copy; set at least one count or no offsite schedule"))
	}
	seen := make(map[string]bool)
	for _, v := range s.Volumes {
		switch {
		case seen[v]:
			errs = append(errs, fmt.Errorf("volumes: %q twice", v))
		case volumes != nil && !slices.Contains(volumes, v):
			errs = append(errs, fmt.Errorf("volumes: the agent has no volume %q (it has %s)", v, strings.Join(volumes, ", ")))
		}
		seen[v] = true
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// SettingsStore stores an agent's settings (the appliance's catalog).
type SettingsStore interface {
	SaveSettings(ctx context.Context, agentID string, s Settings) error
}

// ApplySettings validates the settings against the volumes the Inspect step
// found and stores them.
func ApplySettings(ctx context.Context, store SettingsStore, agentID string, s Settings, volumes []string) StepResult {
	if err := s.Validate(volumes); err != nil {
		return fail(StepSettings, "invalid_settings", "the settings are not valid: "+strings.ReplaceAll(err.Error(), "\n", "; "),
			"correct them in the wizard and retry this step", s)
	}
	if err := store.SaveSettings(ctx, agentID, s); err != nil {
		return fail(StepSettings, "store_failed", "the settings could not be stored: "+err.Error(),
			"check the appliance's log, then retry this step", s)
	}
	offsite := "no offsite copies"
	if s.OffsiteSchedule != "" {
		offsite = "offsite " + s.OffsiteSchedule
	}
	vols := "all volumes"
	if len(s.Volumes) > 0 {
		vols = strings.Join(s.Volumes, ", ")
	}
	return ok(StepSettings, fmt.Sprintf("backups %s of %s; %s", s.BackupSchedule, vols, offsite), s)
}

// Schedule is a parsed cron spec: minute, hour, day of month, month and day
// of week, each a set of allowed values.
type Schedule struct {
	minute, hour, dom, month, dow uint64 // bit i set: value i allowed
	domStar, dowStar              bool
}

var scheduleMacros = map[string]string{
	"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
	"@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
}

var monthNames = []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// ParseSchedule parses a standard 5-field cron spec ("0 */4 * * mon-fri")
// or one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly. Fields
// take *, numbers, names (months and days), ranges a-b, steps */n and a-b/n,
// and comma lists. Day of week 7 is Sunday, like 0. As in cron, when both
// day of month and day of week are restricted, a day matching either runs.
func ParseSchedule(spec string) (Schedule, error) {
	spec = strings.TrimSpace(spec)
	if m, ok := scheduleMacros[strings.ToLower(spec)]; ok {
		spec = m
	}
	f := strings.Fields(spec)
	if len(f) != 5 {
		return Schedule{}, fmt.Errorf("cron spec %q: want 5 fields (minute hour day-of-month month day-of-week), got %d", spec, len(f))
	}
	var s Schedule
	var err error
	if s.minute, err = parseField(f[0], 0, 59, nil); err != nil {
		return Schedule{}, fmt.Errorf("minute: %w", err)
	}
	if s.hour, err = parseField(f[1], 0, 23, nil); err != nil {
		return Schedule{}, fmt.Errorf("hour: %w", err)
	}
	if s.dom, err = parseField(f[2], 1, 31, nil); err != nil {
		return Schedule{}, fmt.Errorf("day of month: %w", err)
	}
	if s.month, err = parseField(f[3], 1, 12, monthNames); err != nil {
		return Schedule{}, fmt.Errorf("month: %w", err)
	}
	if s.dow, err = parseField(f[4], 0, 7, dayNames); err != nil {
		return Schedule{}, fmt.Errorf("day of week: %w", err)
	}
	if s.dow&(1<<7) != 0 {
		s.dow |= 1
	}
	s.domStar, s.dowStar = f[2] == "*" || strings.HasPrefix(f[2], "*/"), f[4] == "*" || strings.HasPrefix(f[4], "*/")
	return s, nil
}

func parseField(field string, lo, hi int, names []string) (uint64, error) {
	var set uint64
	for _, part := range strings.Split(field, ",") {
		rng, stepText, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 || n > hi-lo+1 {
				return 0, fmt.Errorf("step %q is not a number from 1 to %d", stepText, hi-lo+1)
			}
			step = n
		}
		a, b := lo, hi
		if rng != "*" {
			first, last, isRange := strings.Cut(rng, "-")
			var err error
			if a, err = value(first, lo, hi, names); err != nil {
				return 0, err
			}
			b = a
			if isRange {
				if b, err = value(last, lo, hi, names); err != nil {
					return 0, err
				}
				if b < a {
					return 0, fmt.Errorf("range %q runs backwards", rng)
				}
			} else if hasStep {
				b = hi // "a/n": from a to the end
			}
		}
		for v := a; v <= b; v += step {
			set |= 1 << v
		}
	}
	return set, nil
}

func value(s string, lo, hi int, names []string) (int, error) {
	for i, n := range names {
		if strings.EqualFold(s, n) {
			return i + lo, nil
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%q is not a value from %d to %d", s, lo, hi)
	}
	return n, nil
}

// Next returns the first time after t, to the minute, that the schedule
// runs, in t's location; zero if none within five years (e.g. "0 0 30 2 *").
func (s Schedule) Next(t time.Time) time.Time {
	t = t.Truncate(time.Minute).Add(time.Minute)
	end := t.AddDate(5, 0, 0)
	for t.Before(end) {
		if s.month&(1<<uint(t.Month())) == 0 {
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, t.Location())
			continue
		}
		if !s.dayMatches(t) {
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, t.Location())
			continue
		}
		if s.hour&(1<<uint(t.Hour())) == 0 {
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, t.Location())
			continue
		}
		if s.minute&(1<<uint(t.Minute())) == 0 {
			t = t.Add(time.Minute)
			continue
		}
		return t
	}
	return time.Time{}
}

func (s Schedule) dayMatches(t time.Time) bool {
	dom := s.dom&(1<<uint(t.Day())) != 0
	dow := s.dow&(1<<uint(t.Weekday())) != 0
	switch {
	case s.domStar && s.dowStar:
		return true
	case s.domStar:
		return dow
	case s.dowStar:
		return dom
	}
	return dom || dow
}
