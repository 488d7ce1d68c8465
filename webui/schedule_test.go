package webui

import (
	"errors"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/pairing"
)

// gridOf ticks hours on days.
func gridOf(days []time.Weekday, hours ...int) Grid {
	var g Grid
	for _, d := range days {
		for _, h := range hours {
			g[d][h] = true
		}
	}
	return g
}

var (
	weekdays = []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday}
	allDays  = []time.Weekday{time.Sunday, time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday}
	weekend  = []time.Weekday{time.Saturday, time.Sunday}
)

func span(a, b int) []int {
	var out []int
	for h := a; h <= b; h++ {
		out = append(out, h)
	}
	return out
}

func TestCronFromGrid(t *testing.T) {
	irregular := gridOf(weekdays, 9)
	irregular[time.Friday][10] = true
	for _, tc := range []struct {
		name   string
		grid   Grid
		minute int
		want   string
		err    error
	}{
		{"default", DefaultGrid(), 0, "0 9-18 * * mon-fri", nil},
		{"every hour", gridOf(allDays, span(0, 23)...), 0, "0 * * * *", nil},
		{"nightly at 2:30", gridOf(allDays, 2), 30, "30 2 * * *", nil},
		{"weekend mornings", gridOf(weekend, 8, 9, 10), 15, "15 8-10 * * sun,sat", nil},
		{"two apart", gridOf([]time.Weekday{time.Monday, time.Wednesday, time.Friday}, 1, 13), 0, "0 1,13 * * mon,wed,fri", nil},
		{"pairs and ranges", gridOf([]time.Weekday{time.Sunday, time.Monday, time.Thursday, time.Friday, time.Saturday}, 0, 1, 5, 6, 7, 23), 59,
			"59 0,1,5-7,23 * * sun,mon,thu-sat", nil},
		{"empty", Grid{}, 0, "", errGridEmpty},
		{"different hours per day", irregular, 0, "", errGridShape},
	} {
		got, err := CronFromGrid(tc.grid, tc.minute)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("%s: %q, %v; want %q, %v", tc.name, got, err, tc.want, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		if _, err := pairing.ParseSchedule(got); err != nil {
			t.Errorf("%s: %q does not parse: %v", tc.name, got, err)
		}
		back, minute, ok := GridFromCron(got)
		if !ok || back != tc.grid || minute != tc.minute {
			t.Errorf("%s: GridFromCron(%q) does not give the grid back (ok %v, minute %d)", tc.name, got, ok, minute)
		}
	}
	for _, m := range []int{-1, 60} {
		if _, err := CronFromGrid(DefaultGrid(), m); err == nil {
			t.Errorf("minute %d accepted", m)
		}
	}
}

func TestGridFromCron(t *testing.T) {
	for _, tc := range []struct {
		spec   string
		ok     bool
		grid   Grid
		minute int
	}{
		{"0 9-18 * * mon-fri", true, DefaultGrid(), 0},
		{"0 9-18 * * 1-5", true, DefaultGrid(), 0},
		{"45 */6 * * *", true, gridOf(allDays, 0, 6, 12, 18), 45},
		{"0 3 * * 7", true, gridOf([]time.Weekday{time.Sunday}, 3), 0},
		{"0 3 * * 0,6", true, gridOf(weekend, 3), 0},
		{"0 12 * * SAT", true, gridOf([]time.Weekday{time.Saturday}, 12), 0},
		{"@hourly", false, Grid{}, 0},      // a macro: edited as text
		{"*/15 * * * *", false, Grid{}, 0}, // several minutes
		{"0 0 1 * *", false, Grid{}, 0},    // day of month
		{"0 0 * 6 *", false, Grid{}, 0},    // month
		{"0 25 * * *", false, Grid{}, 0},   // invalid
		{"", false, Grid{}, 0},
	} {
		g, minute, ok := GridFromCron(tc.spec)
		if ok != tc.ok || g != tc.grid || minute != tc.minute {
			t.Errorf("GridFromCron(%q) = ok %v minute %d grid match %v; want ok %v minute %d", tc.spec, ok, minute, g == tc.grid, tc.ok, tc.minute)
		}
	}
}

func FuzzGridFromCron(f *testing.F) {
	for _, s := range []string{"0 9-18 * * mon-fri", "45 */6 * * *", "0 3 * * 7", "1 2,3 * * sun-tue"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		g, minute, ok := GridFromCron(spec)
		if !ok {
			return
		}
		// What a grid shows, its cron spec runs at the same times.
		back, err := CronFromGrid(g, minute)
		if errors.Is(err, errGridShape) {
			return // a spec a grid shows but cannot write: not produced by the UI
		}
		if err != nil {
			t.Fatalf("CronFromGrid of GridFromCron(%q): %v", spec, err)
		}
		g2, m2, ok := GridFromCron(back)
		if !ok || g2 != g || m2 != minute {
			t.Fatalf("%q -> %q changes the grid", spec, back)
		}
	})
}
