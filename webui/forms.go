package webui

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/cairnbackup/cairn/pairing"
	"github.com/gin-gonic/gin"
)

// keepFields are the retention counts, in form order, with their labels;
// off_ prefixes the offsite retention's.
var keepFields = []struct{ Name, Label string }{
	{"keep_last", "Newest"}, {"keep_hourly", "Hourly"}, {"keep_daily", "Daily"}, {"keep_weekly", "Weekly"}, {"keep_monthly", "Monthly"},
}

// settingsForm is the schedule and retention part of the wizard and the
// settings page: Values by field name, the grid, the chosen volumes.
type settingsForm struct {
	Values  map[string]string
	Grid    Grid
	Volumes []string
}

// settingsFormFrom fills the form from stored settings. A backup
// schedule the grid cannot show goes into the cron field.
func settingsFormFrom(s pairing.Settings) settingsForm {
	f := settingsForm{Values: map[string]string{}, Volumes: s.Volumes}
	if g, minute, ok := GridFromCron(s.BackupSchedule); ok {
		f.Grid, f.Values["minute"] = g, strconv.Itoa(minute)
	} else {
		f.Values["minute"], f.Values["cron"] = "0", s.BackupSchedule
	}
	keeps := func(prefix string, r pairing.Retention) {
		for i, n := range []int{r.KeepLast, r.KeepHourly, r.KeepDaily, r.KeepWeekly, r.KeepMonthly} {
			f.Values[prefix+keepFields[i].Name] = strconv.Itoa(n)
		}
	}
	keeps("", s.Retention)
	keeps("off_", s.OffsiteRetention)
	f.Values["offsite_schedule"] = s.OffsiteSchedule
	if s.OffsiteSchedule != "" {
		f.Values["offsite"] = "on"
	} else {
		f.Values["offsite_schedule"] = pairing.DefaultSettings().OffsiteSchedule
	}
	return f
}

// defaultSettingsForm is the wizard's start: the default grid (hourly
// 9-18, Monday to Friday) and the default retention and offsite policy.
func defaultSettingsForm() settingsForm {
	s := pairing.DefaultSettings()
	s.BackupSchedule, _ = CronFromGrid(DefaultGrid(), 0)
	return settingsFormFrom(s)
}

// parseSettingsForm reads the form's fields from a POST.
func parseSettingsForm(c *gin.Context) settingsForm {
	f := settingsForm{Values: map[string]string{}}
	for _, name := range []string{"minute", "cron", "offsite", "offsite_schedule"} {
		f.Values[name] = strings.TrimSpace(c.PostForm(name))
	}
	for _, k := range keepFields {
		f.Values[k.Name] = strings.TrimSpace(c.PostForm(k.Name))
		f.Values["off_"+k.Name] = strings.TrimSpace(c.PostForm("off_" + k.Name))
	}
	for d := range f.Grid {
		for h := range f.Grid[d] {
			f.Grid[d][h] = c.PostForm(gridName(d, h)) != ""
		}
	}
	f.Volumes = c.PostFormArray("volume")
	return f
}

func gridName(d, h int) string { return fmt.Sprintf("g%d_%d", d, h) }

// settings turns the form into Settings and checks them as the Settings
// step will (pairing.Settings.Validate against volumes, nil: any), with
// every problem by field.
func (f settingsForm) settings(volumes []string) (pairing.Settings, map[string]string) {
	errs := map[string]string{}
	add := func(field, msg string) {
		if errs[field] != "" {
			errs[field] += " "
		}
		errs[field] += msg
	}
	var s pairing.Settings
	if spec := f.Values["cron"]; spec != "" {
		s.BackupSchedule = spec
	} else {
		minute, err := strconv.Atoi(f.Values["minute"])
		if err != nil || minute < 0 || minute > 59 {
			add("minute", "Enter a minute from 0 to 59.")
		} else if s.BackupSchedule, err = CronFromGrid(f.Grid, minute); err != nil {
			add("schedule", upperFirst(err.Error())+".")
		}
	}
	count := func(name string) int {
		v := f.Values[name]
		n, err := strconv.Atoi(v)
		if err != nil {
			if v == "" {
				n, err = 0, nil
			} else {
				add(name, "Enter a whole number.")
			}
		}
		return n
	}
	keeps := func(prefix string) pairing.Retention {
		return pairing.Retention{KeepLast: count(prefix + "keep_last"), KeepHourly: count(prefix + "keep_hourly"),
			KeepDaily: count(prefix + "keep_daily"), KeepWeekly: count(prefix + "keep_weekly"), KeepMonthly: count(prefix + "keep_monthly")}
	}
	s.Retention = keeps("")
	s.OffsiteRetention = keeps("off_")
	if f.Values["offsite"] != "" {
		s.OffsiteSchedule = f.Values["offsite_schedule"]
		if s.OffsiteSchedule == "" {
			add("offsite_schedule", "Enter a cron spec, or turn offsite copies off.")
		}
	}
	s.Volumes = f.Volumes
	if len(errs) > 0 {
		return s, errs // the numbers and schedules are not what was typed
	}
	if s.BackupSchedule == "" {
		add("schedule", "Choose when backups run.")
		return s, errs
	}
	if err := s.Validate(volumes); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			field, msg, _ := strings.Cut(line, ": ")
			switch {
			case field == "backup_schedule" && f.Values["cron"] != "":
				field = "cron"
			case field == "backup_schedule":
				field = "schedule"
			case strings.HasPrefix(field, "retention."):
				field = strings.TrimPrefix(field, "retention.")
			case strings.HasPrefix(field, "offsite_retention."):
				field = "off_" + strings.TrimPrefix(field, "offsite_retention.")
			case field == "offsite_schedule", field == "retention", field == "offsite_retention", field == "volumes":
			default:
				field, msg = "settings", line
			}
			add(field, upperFirst(msg)+".")
		}
	}
	return s, errs
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// hostLabel is one label of a host name.
var hostLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// maxTargets bounds the machines one wizard submission pairs.
const maxTargets = 100

// splitTargets splits the targets field as the API does (commas and
// newlines) and says what is wrong with any target.
func splitTargets(s string) ([]string, string) {
	var out []string
	for _, t := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	if len(out) > maxTargets {
		return nil, fmt.Sprintf("Pair at most %d machines at once.", maxTargets)
	}
	var bad []string
	for _, t := range out {
		if !validTarget(t) {
			bad = append(bad, strconv.Quote(t))
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Sprintf("Not a host name, FQDN or IP address: %s.", strings.Join(bad, ", "))
	}
	return out, ""
}

func validTarget(t string) bool {
	if net.ParseIP(strings.Trim(t, "[]")) != nil {
		return true
	}
	t = strings.TrimSuffix(t, ".")
	if t == "" || len(t) > 253 {
		return false
	}
	for _, l := range strings.Split(t, ".") {
		if !hostLabel.MatchString(l) {
			return false
		}
	}
	return true
}
