package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/browsertest"
	"github.com/cairnbackup/cairn/pairing"
	"github.com/chromedp/chromedp"

	cairnappliance "github.com/cairnbackup/cairn/appliance"
)

// TestWebUIFirstRecoveryPoint is the web UI's acceptance test, in
// headless Chromium against the real programs: a new user creates the
// admin, logs in, adds an agent by host name through the wizard (a real
// cairn-agent protecting an image file), sees the six pairing steps
// succeed, confirms the fingerprint, sets a schedule on the grid, runs
// "back up now", sees the job's progress and the recovery point appear
// without reloading the page, and downloads it: the bytes are the image's.
// Screenshots of each step go to webui/testdata/screenshots/e2e-*.png;
// any console error fails it.
func TestWebUIFirstRecoveryPoint(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "disk.img")
	makeImage(t, image, 256<<20, 0.5, 7)
	want := fileHash(t, image)
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n127.0.0.1 office-pc.lan office-pc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dns := startDNS(t, &zone{a: map[string]string{}})
	agent := start(t, "cairn-agent", nil, nil, "-state", filepath.Join(dir, "agent"), "-listen", "127.0.0.1:0", "-volume", image)
	_, port, _ := net.SplitHostPort(agent.waitLog(`listening for the appliance \(direct mode\)"? addr=(\S+)`, 30*time.Second)[1])
	fp := agentFingerprint(t, filepath.Join(dir, "agent"))
	app := launchAppliance(t, filepath.Join(dir, "appliance"), "-gateway", "", "-dns", dns, "-hosts", hosts)

	b := browsertest.Start(t, filepath.Join("..", "webui", "testdata", "screenshots"), 3*time.Minute)
	type css = chromedp.CSS
	const user, password = "operator", "a long passphrase 42"

	// First start: every page leads to creating the admin.
	b.Do("first visit", chromedp.Navigate(app.url+"/"), chromedp.WaitVisible(css(`#f-username`)))
	if loc, err := chromedp.Run(b.Ctx, chromedp.Location()); err != nil || loc != app.url+"/setup" {
		t.Fatalf("first visit went to %s (%v), want /setup", loc, err)
	}
	b.Shot("e2e-1-setup")
	b.Do("create the admin",
		chromedp.SendKeys(css(`#f-username`), user),
		chromedp.SendKeys(css(`#f-password`), password),
		chromedp.SendKeys(css(`#f-confirm`), password),
		chromedp.Submit(css(`#f-confirm`)),
		chromedp.WaitVisible(css(`#agents`)))
	b.Do("log out", chromedp.Click(css(`form[action="/logout"] button`)), chromedp.WaitVisible(css(`form[action="/login"]`)))
	b.Shot("e2e-2-login")
	b.Do("log in",
		chromedp.SendKeys(css(`#f-username`), user),
		chromedp.SendKeys(css(`#f-password`), password),
		chromedp.Submit(css(`#f-password`)),
		chromedp.WaitVisible(css(`#agents`)))
	b.Shot("e2e-3-dashboard-empty")

	// The wizard: a host name only the appliance's hosts file knows.
	b.Do("add agent",
		chromedp.Click(css(`a[href="/agents/new"][role="button"]`)),
		chromedp.WaitVisible(css(`#f-targets`)),
		chromedp.SendKeys(css(`#f-targets`), "office-pc"),
		chromedp.SendKeys(css(`#f-port`), port),
		chromedp.SendKeys(css(`#f-product_key`), cairnappliance.DemoProductKey),
		chromedp.Click(css(`details summary`)),
		chromedp.WaitVisible(css(`table.schedule-grid`)))
	// The schedule on the wizard's grid: the default (9:00 to 18:00,
	// Monday to Friday) without 18:00, and without this hour and the next
	// (the appliance's scheduler runs: no scheduled backup may start
	// during the test).
	off := map[int]bool{18: true}
	for _, h := range []int{time.Now().Hour(), time.Now().Add(time.Hour).Hour()} {
		off[h] = true
	}
	var wantHours []int
	for h := 9; h <= 18; h++ {
		if !off[h] {
			wantHours = append(wantHours, h)
			continue
		}
		for d := 1; d <= 5; d++ {
			b.Do("untick an hour", chromedp.Click(css(fmt.Sprintf(`input[name="g%d_%d"]`, d, h))))
		}
	}
	b.Shot("e2e-4-wizard")
	b.Do("start pairing", chromedp.Submit(css(`#f-targets`)), chromedp.WaitVisible(css(`#steps`)))
	b.Shot("e2e-5-pairing-steps")
	b.Do("six steps", chromedp.WaitVisible(css(`#steps .fingerprint`)), chromedp.WaitVisible(css(`#steps:not([hx-trigger])`)))
	state, err := chromedp.Run(b.Ctx, chromedp.Text(css(`#steps [role="status"] strong`)))
	if err != nil || state != "done" {
		t.Fatalf("pairing state %q, %v", state, err)
	}
	ok, err := chromedp.Run(b.Ctx, chromedp.Evaluate[int](`document.querySelectorAll("#steps li.step-ok").length`))
	if err != nil || ok != 6 {
		t.Fatalf("%d of the six steps ok (%v)", ok, err)
	}
	shown, err := chromedp.Run(b.Ctx, chromedp.Text(css(`#steps .fingerprint`)))
	if err != nil || !sameFingerprint(shown, fp) {
		t.Fatalf("the page shows fingerprint %q (%v); cairn-agent fingerprint prints %q", shown, err, fp)
	}
	b.Shot("e2e-6-pairing-done")
	b.Do("confirm the fingerprint", chromedp.Click(css(`#fingerprint form[action$="/confirm-fingerprint"] button`)),
		chromedp.WaitVisible(css(`#fingerprint .msg-ok`)))
	b.Shot("e2e-7-fingerprint-confirmed")

	// Settings: the schedule from the wizard, on the grid; protect the
	// image.
	b.Do("settings", chromedp.Click(css(`#steps a[role="button"][href="/agents/office-pc/settings"]`)), chromedp.WaitVisible(css(`table.schedule-grid`)))
	for h := 9; h <= 18; h++ {
		ticked, err := chromedp.Run(b.Ctx, chromedp.Evaluate[bool](fmt.Sprintf(`document.querySelector('input[name="g1_%d"]').checked`, h)))
		if err != nil || ticked == off[h] {
			t.Errorf("settings grid, Monday %d:00: ticked %v (%v), want %v", h, ticked, err, !off[h])
		}
	}
	b.Do("choose the volume", chromedp.Click(css(`input[name="volume"][value="`+image+`"]`)))
	b.Shot("e2e-8-settings")
	b.Do("save settings", chromedp.Click(css(`form[action="/agents/office-pc/settings"] button[type="submit"]`)), chromedp.WaitVisible(css(`[role="status"]`)))
	var settings struct {
		BackupSchedule string   `json:"backup_schedule"`
		Volumes        []string `json:"volumes"`
	}
	var hours []string
	for _, h := range wantHours {
		hours = append(hours, strconv.Itoa(h))
	}
	wantSchedule, err := pairing.ParseSchedule("0 " + strings.Join(hours, ",") + " * * mon-fri")
	if err != nil {
		t.Fatal(err)
	}
	code := app.get(t, "/api/v1/agents/office-pc/settings", &settings)
	schedule, err := pairing.ParseSchedule(settings.BackupSchedule)
	if code != 200 || err != nil || schedule != wantSchedule || len(settings.Volumes) != 1 || settings.Volumes[0] != image {
		t.Fatalf("settings after saving: HTTP %d, %+v; want backups at %v on weekdays", code, settings, wantHours)
	}

	// Back up now: the job's progress, then the recovery point, on the
	// same page.
	b.Do("agent page", chromedp.Navigate(app.url+"/agents/office-pc"), chromedp.WaitVisible(css(`form.backup-now`)),
		// Note every progress bar the page shows, however briefly.
		chromedp.Evaluate[chromedp.Void](`window.cairnMarker = "same page"; window.cairnSawProgress = false;
			new MutationObserver(() => { if (document.querySelector("#progress progress")) window.cairnSawProgress = true })
				.observe(document.getElementById("progress"), {childList: true, subtree: true})`))
	b.Do("back up now", chromedp.Click(css(`form.backup-now button[type="submit"]`)), chromedp.WaitVisible(css(`#progress-body article.job`)))
	b.Shot("e2e-9-backup-progress")
	b.Do("recovery point", chromedp.WaitVisible(css(`#progress-body .job-last .state-succeeded`)), chromedp.WaitVisible(css(`#records a[download]`)))
	if saw, err := chromedp.Run(b.Ctx, chromedp.Evaluate[bool](`window.cairnSawProgress`)); err != nil || !saw {
		t.Errorf("no progress bar was shown during the backup (%v)", err)
	}
	if marker, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`window.cairnMarker || "reloaded"`)); err != nil || marker != "same page" {
		t.Errorf("the page reloaded during the backup: %q, %v", marker, err)
	}
	b.Shot("e2e-10-recovery-point")
	got := b.Download(t.TempDir(), chromedp.Click(css(`#records a[download]`)))
	if h := fileHash(t, got); h != want {
		t.Fatalf("downloaded recovery point: SHA-256 %s, the image's %s", h, want)
	}
	b.Do("dashboard", chromedp.Navigate(app.url+"/"), chromedp.WaitVisible(css(`#agents a[href="/agents/office-pc"]`)))
	b.Shot("e2e-11-dashboard")
	b.CheckConsole()
}

// sameFingerprint compares fingerprints without white space (the page may
// wrap them).
func sameFingerprint(a, b string) bool {
	norm := func(s string) string {
		return strings.Join(strings.Fields(s), "")
	}
	return norm(a) != "" && norm(a) == norm(b)
}

// agentFingerprint is what `cairn-agent fingerprint` prints on the
// agent's machine: the full fingerprint, its second line.
func agentFingerprint(t testing.TB, state string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(bin, "cairn-agent"), "fingerprint", "-state", state).Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || len(lines) != 2 {
		t.Fatalf("cairn-agent fingerprint: %v: %s", err, out)
	}
	return lines[1]
}
