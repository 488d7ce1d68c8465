package webui

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/pairing"
)

// Grid is a weekly backup schedule as the settings form shows it: Grid[d][h]
// runs on weekday d (time.Sunday = 0) at hour h.
type Grid [7][24]bool

// DefaultGrid is hourly from 9:00 to 18:00, Monday to Friday.
func DefaultGrid() Grid {
	var g Grid
	for d := time.Monday; d <= time.Friday; d++ {
		for h := 9; h <= 18; h++ {
			g[d][h] = true
		}
	}
	return g
}

var cronDays = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// errGridEmpty and errGridShape say why a grid has no cron spec.
var (
	errGridEmpty = errors.New("tick at least one hour")
	errGridShape = errors.New("tick the same hours on every day you choose (one schedule is a set of hours on a set of days); for anything else write a cron spec")
)

// CronFromGrid returns the cron spec that runs at minute past each hour the
// grid ticks. A cron spec is a set of hours times a set of days, so every
// day that has a tick must have the same hours.
func CronFromGrid(g Grid, minute int) (string, error) {
	if minute < 0 || minute > 59 {
		return "", fmt.Errorf("minute %d is not from 0 to 59", minute)
	}
	var hours [24]bool
	var days [7]bool
	first := true
	for d := range g {
		if g[d] == ([24]bool{}) {
			continue
		}
		if !first && g[d] != hours {
			return "", errGridShape
		}
		hours, days[d], first = g[d], true, false
	}
	if first {
		return "", errGridEmpty
	}
	return fmt.Sprintf("%d %s * * %s", minute, ranges(hours[:], nil), ranges(days[:], cronDays)), nil
}

// ranges writes the set as a cron field: "*", or a comma list of values
// and a-b ranges, by name when names are given.
func ranges(set []bool, names []string) string {
	all := true
	for _, v := range set {
		all = all && v
	}
	if all {
		return "*"
	}
	name := func(i int) string {
		if names != nil {
			return names[i]
		}
		return strconv.Itoa(i)
	}
	var parts []string
	for i := 0; i < len(set); i++ {
		if !set[i] {
			continue
		}
		j := i
		for j+1 < len(set) && set[j+1] {
			j++
		}
		switch {
		case j == i:
			parts = append(parts, name(i))
		case j == i+1:
			parts = append(parts, name(i), name(j))
		default:
			parts = append(parts, name(i)+"-"+name(j))
		}
		i = j
	}
	return strings.Join(parts, ",")
}

// gridWeek is a week that starts on a Sunday (1 January 2023), in UTC,
// against which GridFromCron tests a schedule.
var gridWeek = time.Date(2023, time.January, 1, 0, 0, 0, 0, time.UTC)

// GridFromCron returns the grid and minute of a cron spec that a grid can
// show: a single minute, every day of the month, every month. ok is false
// for any other spec (the form then edits it as text).
func GridFromCron(spec string) (g Grid, minute int, ok bool) {
	sched, err := pairing.ParseSchedule(spec)
	if err != nil {
		return Grid{}, 0, false
	}
	f := strings.Fields(spec)
	if len(f) != 5 || f[2] != "*" || f[3] != "*" {
		return Grid{}, 0, false // macros and day-of-month or month limits
	}
	minute, err = strconv.Atoi(f[0])
	if err != nil || minute < 0 || minute > 59 {
		return Grid{}, 0, false
	}
	for d := range g {
		for h := range g[d] {
			at := gridWeek.Add(time.Duration(d)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(minute)*time.Minute)
			g[d][h] = sched.Next(at.Add(-time.Minute)).Equal(at)
		}
	}
	if g == (Grid{}) {
		return Grid{}, 0, false
	}
	return g, minute, true
}
