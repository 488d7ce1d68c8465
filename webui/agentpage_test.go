package webui

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/browsertest"
	"github.com/chromedp/chromedp"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance"
	"github.com/cairnbackup/cairn/appliance/appliancetest"
	"github.com/cairnbackup/cairn/appliance/backup/backuptest"
	"github.com/cairnbackup/cairn/internal/logtest"
)

// agentEnv is a UI over a real appliance with one agent, "web-1", paired
// through the API's real pairing (reverse mode, the demo product key):
// the in-process agent of backuptest, connected to the appliance's
// gateway over TLS, with one volume "sda" held in memory.
type agentEnv struct {
	*env
	agent *backuptest.Agent
	vol   []byte
}

const testAgentID = "web-1"

// apiCall calls the appliance's API directly (not through the UI) and
// decodes the answer into out.
func (e *env) apiCall(t *testing.T, method, path string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	rec := httptest.NewRecorder()
	e.app.Handler().ServeHTTP(rec, httptest.NewRequest(method, path, body))
	if out != nil && rec.Code < 300 {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, rec.Body)
		}
	}
	return rec.Code
}

// newAgentEnv serves the appliance's agent gateway on loopback, connects
// the agent with an agent token and pairs it; pair false leaves it
// connected but unpaired (no dataset, no backups).
func newAgentEnv(t *testing.T, pair bool) *agentEnv {
	t.Helper()
	e := &agentEnv{env: newEnv(t, nil)}
	gw := appliancetest.ServeGateway(t, e.app)
	e.vol = backuptest.SparseImage(1<<20+777, agentv1.DefaultBlockSize, 7)
	e.agent = appliancetest.ConnectAgent(t, e.app, gw, testAgentID, e.vol)
	if !pair {
		return e
	}
	var started struct {
		Pairings []pairingView `json:"pairings"`
	}
	if code := e.apiCall(t, http.MethodPost, "/api/v1/pairings", map[string]any{"agent_id": testAgentID,
		"product_key": appliance.DemoProductKey}, &started); code != http.StatusCreated || len(started.Pairings) != 1 {
		t.Fatalf("start pairing: HTTP %d %+v", code, started)
	}
	var pr pairingView
	logtest.WaitFor(t, "the pairing", func() bool {
		e.apiCall(t, http.MethodGet, fmt.Sprintf("/api/v1/pairings/%d", started.Pairings[0].ID), nil, &pr)
		return pr.State != "running"
	})
	if pr.State != "done" {
		t.Fatalf("pairing %s: %+v", pr.State, pr.Steps)
	}
	return e
}

// jobs returns the agent's jobs from the API, newest first.
func (e *agentEnv) jobs(t *testing.T) []jobView {
	t.Helper()
	var jobs []jobView
	if code := e.apiCall(t, http.MethodGet, "/api/v1/agents/"+testAgentID+"/backups", nil, &jobs); code != http.StatusOK {
		t.Fatalf("jobs: HTTP %d", code)
	}
	return jobs
}

// points returns the agent's recovery points from the API, newest first.
func (e *agentEnv) points(t *testing.T) []pointView {
	t.Helper()
	var points []pointView
	if code := e.apiCall(t, http.MethodGet, "/api/v1/agents/"+testAgentID+"/recovery-points", nil, &points); code != http.StatusOK {
		t.Fatalf("points: HTTP %d", code)
	}
	return points
}

// htmx sends an htmx request (HX-Request, the CSRF header) as the page's
// script would.
func (b *browser) htmx(method, path string, form url.Values) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, base.ResolveReference(&url.URL{Path: path}).String(), body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("HX-Request", "true")
	req.Header.Set(csrfHeader, b.csrf)
	return b.do(req)
}

// pollProgress polls the progress fragment, as htmx does, until it no
// longer asks to be polled, and returns the last answer.
func (b *browser) pollProgress(agentID string) page {
	b.t.Helper()
	var p page
	logtest.WaitFor(b.t, "the jobs to end", func() bool {
		p = b.htmx(http.MethodGet, "/agents/"+agentID+"/progress", nil)
		if p.Code != http.StatusOK {
			b.t.Fatalf("progress: HTTP %d\n%s", p.Code, p.Body)
		}
		return !strings.Contains(p.Body, `hx-trigger="every 1s"`)
	})
	return p
}

// TestAgentPage goes through the agent page with a real paired agent: the
// page, back up now with live progress (htmx and plain forms), the
// recovery points, download, verify, NBD export, CSRF refusals, API
// errors, unpairing.
func TestAgentPage(t *testing.T) {
	e := newAgentEnv(t, true)
	b := e.browser(t)
	b.setup()

	dash := b.get("/")
	mustContain(t, "dashboard", dash.Body, `<a href="/agents/web-1">web-1</a>`)

	p := b.get("/agents/web-1")
	if p.Code != http.StatusOK {
		t.Fatalf("agent page: HTTP %d\n%s", p.Code, p.Body)
	}
	mustContain(t, "agent page", p.Body, "<h1>Agent web-1</h1>", "test-agent", "reverse mode", "● online",
		`href="/agents/web-1/settings"`, `href="/agents/web-1/unpair"`,
		`<form method="post" action="/agents/web-1/backups" class="backup-now" hx-post="/agents/web-1/backups" hx-target="#progress-body"`,
		`<div id="progress" aria-live="polite">`, "No backup has run yet.", "No recovery points yet", "No jobs yet.",
		`hx-trigger="jobs-done from:body"`)
	mustNotContain(t, "agent page", p.Body, `hx-trigger="every 1s"`, `role="alert"`)

	// Back up now, with htmx: the answer is the progress fragment, polled
	// while the agent holds its blocks back.
	hold := make(chan struct{})
	e.agent.SetFault(&backuptest.Fault{Hold: hold})
	p = b.htmx(http.MethodPost, "/agents/web-1/backups", url.Values{})
	if p.Code != http.StatusOK {
		t.Fatalf("back up now: HTTP %d\n%s", p.Code, p.Body)
	}
	mustContain(t, "back up now", p.Body, `<div id="progress-body" hx-get="/agents/web-1/progress" hx-trigger="every 1s" hx-swap="outerHTML">`,
		"Backup started (job #1).", "Backup #1", "<progress")
	if h := p.Resp.Header.Get("HX-Trigger"); h != "" {
		t.Errorf("running job: HX-Trigger %q", h)
	}
	logtest.WaitFor(t, "live progress", func() bool {
		p = b.htmx(http.MethodGet, "/agents/web-1/progress", nil)
		return strings.Contains(p.Body, "running") && strings.Contains(p.Body, "of 1.0 MiB (")
	})
	mustContain(t, "progress", p.Body, `hx-trigger="every 1s"`, `max="1049353"`, `aria-labelledby="job-1-h"`, "<dt>Time left</dt>")
	// A second backup is refused while one runs: the API's error on the
	// page, not a 500.
	p = b.post("/agents/web-1/backups", nil)
	if p.Code != http.StatusConflict {
		t.Errorf("second backup: HTTP %d, want 409", p.Code)
	}
	mustContain(t, "second backup", p.Body, `role="alert"`, "The backup did not start", "(backup_running)")
	p = b.htmx(http.MethodPost, "/agents/web-1/backups", url.Values{})
	mustContain(t, "second backup (htmx)", p.Body, `role="alert"`, "(backup_running)", `hx-trigger="every 1s"`)

	close(hold)
	p = b.pollProgress("web-1")
	mustContain(t, "progress when done", p.Body, "Last job: backup #1 <strong class=\"state-succeeded\">succeeded</strong>")
	if h := p.Resp.Header.Get("HX-Trigger"); h != "jobs-done" {
		t.Errorf("job done: HX-Trigger %q, want jobs-done", h)
	}
	points := e.points(t)
	if len(points) != 1 || len(points[0].Volumes) != 1 {
		t.Fatalf("points %+v", points)
	}
	pt, im := points[0], points[0].Volumes[0]

	// The recovery points and job history refresh on jobs-done.
	p = b.htmx(http.MethodGet, "/agents/web-1/records", nil)
	href := "/api/v1/agents/web-1/recovery-points/" + pt.Snapshot + "/volumes/" + im.Image
	mustContain(t, "records", p.Body, `<div id="records" hx-get="/agents/web-1/records" hx-trigger="jobs-done from:body"`,
		pt.Snapshot, "1.0 MiB", "<td>never</td>", "<strong>sda</strong>",
		`<a href="`+href+`" download="web-1-`+pt.Snapshot+`-sda.img">Download`,
		`action="/agents/web-1/points/`+pt.Snapshot+`/verify"`,
		`action="/agents/web-1/points/`+pt.Snapshot+`/volumes/`+im.Image+`/nbd"`,
		"#1 backup", `<td class="state-succeeded">succeeded</td>`, "made "+pt.Snapshot)
	mustNotContain(t, "records", p.Body, ".hashes-", `role="alert"`)

	// The download link: the image through the UI with the session
	// cookie; without a session, 401.
	dl := b.get(href)
	if dl.Code != http.StatusOK || dl.Body != string(e.vol) {
		t.Errorf("download: HTTP %d, %d bytes, want the volume's %d", dl.Code, len(dl.Body), len(e.vol))
	}
	if anon := e.browser(t).get(href); anon.Code != http.StatusUnauthorized {
		t.Errorf("download without a session: HTTP %d, want 401", anon.Code)
	}

	// Back up now without JS: 303 to the page, which says so once.
	e.agent.SetVolume("sda", append(e.vol[:0:0], e.vol...))
	p = b.post("/agents/web-1/backups", nil)
	if p.Code != http.StatusSeeOther || p.Location() != "/agents/web-1" {
		t.Fatalf("back up now (form): HTTP %d to %q\n%s", p.Code, p.Location(), p.Body)
	}
	p = b.get("/agents/web-1")
	mustContain(t, "page after back up now", p.Body, `<p role="status" class="msg-ok">Backup started (job #2).</p>`)
	b.pollProgress("web-1")
	p = b.get("/agents/web-1")
	mustNotContain(t, "page reloaded", p.Body, "Backup started (job #2).")
	mustContain(t, "page after two backups", p.Body, "#2 backup", "#1 backup")
	if n := len(e.points(t)); n != 2 {
		t.Fatalf("%d points after two backups", n)
	}

	// Verify, with htmx: the progress fragment shows the job, and the
	// point shows when it passed.
	p = b.htmx(http.MethodPost, "/agents/web-1/points/"+pt.Snapshot+"/verify", url.Values{})
	mustContain(t, "verify", p.Body, "Verification of "+pt.Snapshot+" started (job #3).")
	p = b.pollProgress("web-1")
	mustContain(t, "verify done", p.Body, "Last job: verification #3 <strong class=\"state-succeeded\">succeeded</strong>")
	p = b.htmx(http.MethodGet, "/agents/web-1/records", nil)
	mustContain(t, "records after verify", p.Body, `<span class="state-done">✓ `, "checked "+pt.Snapshot)
	// Verify without JS, of an unknown point: the API's 404 on the page.
	p = b.post("/agents/web-1/points/rp-nope/verify", nil)
	if p.Code != http.StatusNotFound {
		t.Errorf("verify unknown point: HTTP %d, want 404", p.Code)
	}
	mustContain(t, "verify unknown point", p.Body, `role="alert"`, "The verification did not start", "<h1>Agent web-1</h1>")

	// NBD: start with htmx (the records fragment shows the URI), stop
	// with a plain form.
	nbdPath := "/agents/web-1/points/" + pt.Snapshot + "/volumes/" + im.Image + "/nbd"
	p = b.htmx(http.MethodPost, nbdPath, url.Values{})
	mustContain(t, "NBD start", p.Body, "Volume sda of "+pt.Snapshot+" is exported read-only at nbd://127.0.0.1:",
		`action="`+nbdPath+`/stop"`, "Stop export", "nbdcopy nbd://127.0.0.1:", "nbd-client -N "+im.Image+" 127.0.0.1 ")
	var exports []nbdView
	if e.apiCall(t, http.MethodGet, "/api/v1/nbd", nil, &exports) != http.StatusOK || len(exports) != 1 {
		t.Fatalf("exports %+v", exports)
	}
	mustContain(t, "NBD start", p.Body, "<code class=\"uri\">"+exports[0].URI+"</code>")
	conn, err := net.DialTimeout("tcp", exports[0].Address, 5*time.Second)
	if err != nil {
		t.Errorf("the export does not listen: %v", err)
	} else {
		conn.Close()
	}
	p = b.post(nbdPath+"/stop", nil)
	if p.Code != http.StatusSeeOther {
		t.Fatalf("NBD stop: HTTP %d\n%s", p.Code, p.Body)
	}
	p = b.get("/agents/web-1")
	mustContain(t, "page after NBD stop", p.Body, "The NBD export of volume sda of "+pt.Snapshot+" is stopped.", "No volume of this agent is exported.")
	if e.apiCall(t, http.MethodGet, "/api/v1/nbd", nil, &exports); len(exports) != 0 {
		t.Errorf("exports after stop: %+v", exports)
	}
	p = b.htmx(http.MethodPost, nbdPath+"/stop", url.Values{})
	if p.Code != http.StatusOK {
		t.Errorf("stop again (htmx): HTTP %d", p.Code)
	}
	mustContain(t, "stop again", p.Body, `role="alert"`, "The NBD export was not stopped", "is not exported")

	// Every form is refused without the session's CSRF token, and does
	// nothing.
	jobsBefore := len(e.jobs(t))
	for _, path := range []string{"/agents/web-1/backups", "/agents/web-1/points/" + pt.Snapshot + "/verify", nbdPath, nbdPath + "/stop", "/agents/web-1/unpair"} {
		p := b.post(path, url.Values{"csrf": {"forged"}, "dataset": {"destroy"}})
		if p.Code != http.StatusForbidden {
			t.Errorf("POST %s with a wrong CSRF token: HTTP %d, want 403", path, p.Code)
		}
		req := httptest.NewRequest(http.MethodPost, "http://cairn.test"+path, strings.NewReader("dataset=destroy"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("HX-Request", "true")
		if p := b.do(req); p.Code != http.StatusForbidden {
			t.Errorf("htmx POST %s without a CSRF token: HTTP %d, want 403", path, p.Code)
		}
	}
	if n := len(e.jobs(t)); n != jobsBefore {
		t.Errorf("forged forms started %d jobs", n-jobsBefore)
	}
	if e.apiCall(t, http.MethodGet, "/api/v1/nbd", nil, &exports); len(exports) != 0 {
		t.Errorf("a forged form started an export: %+v", exports)
	}

	// Unpair: the confirmation page, a bad choice, then for real.
	p = b.get("/agents/web-1/unpair")
	mustContain(t, "unpair page", p.Body, "<h1>Unpair web-1?</h1>", `name="dataset" value="keep" checked`, `action="/agents/web-1/unpair"`,
		`href="/agents/web-1" role="button" class="secondary">Cancel</a>`)
	p = b.post("/agents/web-1/unpair", url.Values{"dataset": {"maybe"}})
	if p.Code != http.StatusUnprocessableEntity {
		t.Errorf("unpair with a bad choice: HTTP %d", p.Code)
	}
	mustContain(t, "unpair with a bad choice", p.Body, `id="e-dataset"`)
	p = b.post("/agents/web-1/unpair", url.Values{"dataset": {"keep"}})
	if p.Code != http.StatusSeeOther || p.Location() != "/" {
		t.Fatalf("unpair: HTTP %d to %q\n%s", p.Code, p.Location(), p.Body)
	}
	p = b.get("/")
	mustContain(t, "dashboard after unpair", p.Body, "Agent web-1 unpaired. Its license seat is released.", "is kept, with its recovery points.")
	mustNotContain(t, "dashboard after unpair", p.Body, `<a href="/agents/web-1">`)
	if p := b.get("/agents/web-1"); p.Code != http.StatusNotFound {
		t.Errorf("unpaired agent's page: HTTP %d, want 404", p.Code)
	}
}

// TestAgentPageUnknown: an unknown agent is a 404 page on every route.
func TestAgentPageUnknown(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	b.setup()
	for _, tc := range []struct{ method, path string }{
		{"GET", "/agents/nobody"}, {"GET", "/agents/nobody/progress"}, {"GET", "/agents/nobody/records"},
		{"GET", "/agents/nobody/unpair"}, {"POST", "/agents/nobody/backups"}, {"POST", "/agents/nobody/unpair"},
		{"POST", "/agents/nobody/points/rp-x/verify"}, {"POST", "/agents/nobody/points/rp-x/volumes/0/nbd"},
		{"POST", "/agents/nobody/points/rp-x/volumes/0/nbd/stop"},
	} {
		var p page
		if tc.method == "GET" {
			p = b.get(tc.path)
		} else {
			p = b.post(tc.path, nil)
		}
		if p.Code != http.StatusNotFound {
			t.Errorf("%s %s: HTTP %d, want 404", tc.method, tc.path, p.Code)
		}
		mustContain(t, tc.path, p.Body, "There is no page at this address.")
	}
	// htmx (a poll of an agent unpaired meanwhile) goes to the dashboard.
	for _, path := range []string{"/agents/nobody/progress", "/agents/nobody/records"} {
		if p := b.htmx(http.MethodGet, path, nil); p.Code != http.StatusNoContent || p.Resp.Header.Get("HX-Redirect") != "/" {
			t.Errorf("htmx GET %s: HTTP %d to %q, want 204 to /", path, p.Code, p.Resp.Header.Get("HX-Redirect"))
		}
	}
}

// TestAgentPageAPIErrors: what the API refuses or fails is shown on the
// page (role="alert"), never as a 500.
func TestAgentPageAPIErrors(t *testing.T) {
	// A connected agent that is not paired: no dataset, so backups are
	// refused by the real API.
	e := newAgentEnv(t, false)
	b := e.browser(t)
	b.setup()
	p := b.htmx(http.MethodPost, "/agents/web-1/backups", url.Values{})
	if p.Code != http.StatusOK {
		t.Errorf("back up an unpaired agent (htmx): HTTP %d", p.Code)
	}
	mustContain(t, "back up an unpaired agent", p.Body, `role="alert"`, "The backup did not start", "has no dataset yet")
	mustNotContain(t, "back up an unpaired agent", p.Body, `hx-trigger="every 1s"`)
	p = b.post("/agents/web-1/backups", nil)
	if p.Code >= 500 || p.Code < 400 {
		t.Errorf("back up an unpaired agent: HTTP %d, want a 4xx", p.Code)
	}
	mustContain(t, "back up an unpaired agent", p.Body, `role="alert"`, "has no dataset yet", "<h1>Agent web-1</h1>")

	// An API that fails: the page says what failed.
	failing := func(msg string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, `{"code": "internal", "message": %q}`, msg)
		}
	}
	api := stubAPI{next: e.app.Handler(), routes: map[string]http.HandlerFunc{
		"GET /api/v1/agents/web-1/recovery-points": failing("the catalog is unreadable"),
		"GET /api/v1/agents/web-1/backups":         failing("the jobs are unreadable"),
	}}
	e2 := newEnv(t, api)
	b2 := e2.browser(t)
	b2.setup()
	p = b2.get("/agents/web-1")
	if p.Code != http.StatusOK {
		t.Errorf("page with failing reads: HTTP %d", p.Code)
	}
	mustContain(t, "page with failing reads", p.Body, "<h1>Agent web-1</h1>", `role="alert"`,
		"The recovery points could not be read: the catalog is unreadable (internal)",
		"The job history could not be read: the jobs are unreadable (internal)",
		"The jobs could not be read: the jobs are unreadable (internal)")
	p = b2.htmx(http.MethodGet, "/agents/web-1/progress", nil)
	mustContain(t, "progress with failing reads", p.Body, `role="alert"`, `hx-trigger="every 1s"`)

	api.routes["GET /api/v1/agents"] = failing("the agents are unreadable")
	p = b2.get("/agents/web-1")
	if p.Code != http.StatusBadGateway {
		t.Errorf("page without agents: HTTP %d, want 502", p.Code)
	}
	mustContain(t, "page without agents", p.Body, `role="alert"`, "Listing the agents failed: the agents are unreadable (internal)")
}

// TestAgentPageHidesHashes: a point's volumes list only volume images,
// never the images of their block hashes.
func TestAgentPageHidesHashes(t *testing.T) {
	e := newAgentEnv(t, false)
	api := stubAPI{next: e.app.Handler(), routes: map[string]http.HandlerFunc{
		"GET /api/v1/agents/web-1/recovery-points": jsonAnswer(`[{"snapshot": "rp-20261102T100000Z-1", "created_at": "2026-11-02T10:00:00Z",
			"bytes": 2097152, "changed": 1048576, "block_size": 65536, "job_id": 1, "verified_at": null, "volumes": [
			{"volume_id": "C:\\", "image": "vol-0123456789abcdef", "hashes": "vol-0123456789abcdef.hashes-65536", "size": 2097152, "blocks": 32},
			{"volume_id": "", "image": "vol-0123456789abcdef.hashes-65536", "size": 1024}]}]`),
	}}
	e2 := newEnv(t, api)
	b := e2.browser(t)
	b.setup()
	p := b.get("/agents/web-1")
	mustContain(t, "page", p.Body, "2.0 MiB", "1.0 MiB", "<strong>C:\\</strong>",
		`download="web-1-rp-20261102T100000Z-1-C.img"`, "/volumes/vol-0123456789abcdef\"")
	mustNotContain(t, "page", p.Body, ".hashes-")
}

func TestFileSafe(t *testing.T) {
	for in, want := range map[string]string{
		"web-1-rp-20261102T100000Z-1-sda": "web-1-rp-20261102T100000Z-1-sda",
		`web-1-rp-1-C:\`:                  "web-1-rp-1-C",
		"a-rp-1-/dev/sda1":                "a-rp-1-_dev_sda1",
		`a-\\?\Volume{0f3e}\`:             "a-_Volume_0f3e",
		"..":                              "",
	} {
		if got := fileSafe(in); got != want {
			t.Errorf("fileSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestJobRow(t *testing.T) {
	var j jobView
	j.ID, j.Kind, j.State = 4, "backup", "running"
	j.Started = time.Now().Add(-90 * time.Second)
	j.Progress.BytesDone, j.Progress.BytesTotal, j.Progress.Rate, j.Progress.ETASeconds = 512<<20, 2<<30, 40<<20, 3725
	r := newJobRow(j)
	if r.Percent != 25 || r.Read != "512.0 MiB of 2.0 GiB (25%)" || r.Rate != "40.0 MiB/s" || r.ETA != "1h 02m" || !r.Active {
		t.Errorf("row %+v", r)
	}
	if r.Duration != "1m 30s" && r.Duration != "1m 31s" {
		t.Errorf("duration %q", r.Duration)
	}
	j.State, j.Progress = "queued", jobView{}.Progress
	j.Started = time.Time{}
	if r := newJobRow(j); r.Duration != "" || r.Rate != "—" || r.ETA != "—" || r.Read != "0 B" {
		t.Errorf("queued row %+v", r)
	}
}

// TestBrowserAgentPage drives the agent page in headless Chromium: back
// up now shows the live progress and then the new recovery point without
// reloading the page, an NBD export starts in place, the page fits a
// phone, and unpairing goes through its confirmation to the dashboard.
func TestBrowserAgentPage(t *testing.T) {
	br := browsertest.Start(t, filepath.Join("testdata", "screenshots"), 90*time.Second)
	ctx, do, shot := br.Ctx, br.Do, br.Shot
	e := newAgentEnv(t, true)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	type css = chromedp.CSS

	do("setup", chromedp.Navigate(srv.URL+"/setup"),
		chromedp.SendKeys(css(`#f-username`), testUser),
		chromedp.SendKeys(css(`#f-password`), testPassword),
		chromedp.SendKeys(css(`#f-confirm`), testPassword),
		chromedp.Submit(css(`#f-confirm`)),
		chromedp.WaitVisible(css(`#agents`)))
	do("agent page", chromedp.Click(css(`#agents a[href="/agents/web-1"]`)),
		chromedp.WaitVisible(css(`#progress-body`)),
		chromedp.Evaluate[chromedp.Void](`window.cairnMarker = "same page"`))

	hold := make(chan struct{})
	e.agent.SetFault(&backuptest.Fault{Hold: hold})
	do("back up now", chromedp.Click(css(`form[action="/agents/web-1/backups"] button`)),
		chromedp.WaitVisible(css(`#progress-body[hx-trigger="every 1s"] progress`)))
	shot("agent-backup-running")
	close(hold)
	do("backup done", chromedp.WaitVisible(css(`#records table.points a[download]`)),
		chromedp.WaitVisible(css(`#progress-body:not([hx-trigger]) .job-last`)))
	if marker, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.cairnMarker || "reloaded"`)); err != nil || marker != "same page" {
		t.Errorf("the page was reloaded: %q, %v", marker, err)
	}
	last, err := chromedp.Run(ctx, chromedp.Text(css(`#progress-body .job-last`)))
	if err != nil || !strings.Contains(last, "succeeded") {
		t.Errorf("last job: %q, %v", last, err)
	}
	do("NBD export", chromedp.Click(css(`#records form[action$="/nbd"] button`)),
		chromedp.WaitVisible(css(`#records code.uri`)))
	if marker, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.cairnMarker || "reloaded"`)); err != nil || marker != "same page" {
		t.Errorf("the page was reloaded: %q, %v", marker, err)
	}
	shot("agent")
	do("NBD stop", chromedp.Click(css(`#records form[action$="/nbd/stop"] button`)),
		chromedp.WaitVisible(css(`#records form[action$="/nbd"] button`)))
	do("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile),
		chromedp.Navigate(srv.URL+"/agents/web-1"),
		chromedp.WaitVisible(css(`#records table.points`)))
	shot("agent-phone")
	do("unpair", chromedp.Click(css(`a[href="/agents/web-1/unpair"]`)),
		chromedp.WaitVisible(css(`form[action="/agents/web-1/unpair"]`)))
	shot("agent-unpair")
	do("unpaired", chromedp.Click(css(`form[action="/agents/web-1/unpair"] button[type="submit"]`)),
		chromedp.WaitVisible(css(`#agents`)))
	notice, err := chromedp.Run(ctx, chromedp.Text(css(`.msg-ok`)))
	if err != nil || !strings.Contains(notice, "Agent web-1 unpaired.") {
		t.Errorf("dashboard notice %q, %v", notice, err)
	}
	br.CheckConsole()
}

// TestFlashSigned: the one-time notice shows only when this session set
// it; a cookie of the same name planted by another site on the host (or
// copied from another session) shows nothing.
func TestFlashSigned(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	b.setup()
	forge := func(value string) {
		b.jar.SetCookies(b.site, []*http.Cookie{{Name: "cairn_flash", Value: value, Path: "/"}})
	}
	msg := "Call +1 555 0100 to renew your license"
	enc := base64.RawURLEncoding.EncodeToString([]byte(msg))
	for _, v := range []string{enc, enc + "." + flashMAC("another session", msg), enc + ".", enc + ".x"} {
		forge(v)
		if p := b.get("/"); p.Code != http.StatusOK || strings.Contains(p.Body, "555 0100") {
			t.Errorf("forged flash %q: HTTP %d, shown %v", v, p.Code, strings.Contains(p.Body, "555 0100"))
		}
	}
}
