package webui

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cairnbackup/cairn/appliance"
)

// stubAPI answers some routes ("METHOD /path") itself and passes the rest
// to next (a 404 without next). Tests use it only for what a real
// appliance cannot produce without real agents.
type stubAPI struct {
	next   http.Handler
	routes map[string]http.HandlerFunc
}

func (s stubAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := s.routes[r.Method+" "+r.URL.Path]; ok {
		h(w, r)
		return
	}
	if s.next != nil {
		s.next.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, `{"code": "not_found", "message": "not found"}`)
}

func jsonAnswer(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}
}

// validWizard is a wizard form that starts one pairing.
func validWizard() url.Values {
	v := url.Values{"targets": {"web01"}, "product_key": {appliance.DemoProductKey}, "minute": {"0"},
		"keep_last": {"24"}, "keep_daily": {"7"}, "offsite": {"on"}, "offsite_schedule": {"0 2 * * *"}, "off_keep_daily": {"30"}}
	setGrid(v, DefaultGrid())
	return v
}

func setGrid(v url.Values, g Grid) {
	for d := range g {
		for h := range g[d] {
			if g[d][h] {
				v.Set(gridName(d, h), "on")
			} else {
				v.Del(gridName(d, h))
			}
		}
	}
}

func TestWizardValidation(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	b.setup()
	p := b.get("/agents/new")
	mustContain(t, "wizard", p.Body, `name="g1_9" aria-label="Monday 9:00" checked`, `name="g5_18" aria-label="Friday 18:00" checked`,
		`id="f-keep_last" name="keep_last" type="number" value="24"`, `id="f-offsite" name="offsite" role="switch" checked`)
	mustNotContain(t, "wizard", p.Body, `name="g0_9" aria-label="Sunday 9:00" checked`, `name="g1_19" aria-label="Monday 19:00" checked`)

	irregular := DefaultGrid()
	irregular[3][20] = true
	for _, tc := range []struct {
		name  string
		edit  func(url.Values)
		field string
		msg   string
	}{
		{"no target", func(v url.Values) { v.Del("targets") }, "targets", "Name at least one machine"},
		{"bad target", func(v url.Values) { v.Set("targets", "web01,\nbad host!") }, "targets", "Not a host name, FQDN or IP address: &#34;bad host!&#34;."},
		{"target and agent", func(v url.Values) { v.Set("reverse", "nat01") }, "targets", "not both"},
		{"bad port", func(v url.Values) { v.Set("port", "70000") }, "port", "Enter a port from 1 to 65535"},
		{"port for reverse", func(v url.Values) { v.Del("targets"); v.Set("reverse", "nat01"); v.Set("port", "2000") }, "port", "has no port"},
		{"no key", func(v url.Values) { v.Del("product_key") }, "product_key", "Enter the product key."},
		{"bad key", func(v url.Values) { v.Set("product_key", "BFBPF-51RGX-B1MXQ-BGGFQ-Z9PDF") }, "product_key", "check"},
		{"empty grid", func(v url.Values) { setGrid(v, Grid{}) }, "schedule", "Tick at least one hour."},
		{"irregular grid", func(v url.Values) { setGrid(v, irregular) }, "schedule", "Tick the same hours on every day"},
		{"bad minute", func(v url.Values) { v.Set("minute", "60") }, "minute", "Enter a minute from 0 to 59."},
		{"bad cron", func(v url.Values) { v.Set("cron", "61 * * * *") }, "cron", "Minute: &#34;61&#34; is not a value from 0 to 59."},
		{"not a number", func(v url.Values) { v.Set("keep_last", "many") }, "keep_last", "Enter a whole number."},
		{"negative", func(v url.Values) { v.Set("keep_last", "-1") }, "keep_last", "-1 is not between 0 and 10000."},
		{"keeps nothing", func(v url.Values) { v.Set("keep_last", "0"); v.Set("keep_daily", "") }, "retention", "Keeps no recovery point"},
		{"offsite without schedule", func(v url.Values) { v.Set("offsite_schedule", "") }, "offsite_schedule", "Enter a cron spec, or turn offsite copies off."},
		{"offsite keeps nothing", func(v url.Values) { v.Set("off_keep_daily", "0") }, "offsite_retention", "Keeps no offsite copy"},
		{"offsite too many", func(v url.Values) { v.Set("off_keep_monthly", "10001") }, "off_keep_monthly", "10001 is not between 0 and 10000."},
	} {
		v := validWizard()
		tc.edit(v)
		p := b.post("/agents/new", v)
		if p.Code != http.StatusUnprocessableEntity {
			t.Errorf("%s: HTTP %d, want 422", tc.name, p.Code)
			continue
		}
		i := strings.Index(p.Body, `id="e-`+tc.field+`"`)
		if i < 0 {
			t.Errorf("%s: no message for %s", tc.name, tc.field)
			continue
		}
		if end := strings.Index(p.Body[i:], "</"); !strings.Contains(p.Body[i:i+end], tc.msg) {
			t.Errorf("%s: message %q, want %q", tc.name, p.Body[i:i+end], tc.msg)
		}
		if open := strings.Contains(p.Body, "<details open>"); open != (tc.field != "targets" && tc.field != "product_key" && tc.field != "port") {
			t.Errorf("%s: settings unfolded %v", tc.name, open)
		}
		// The input is kept.
		mustContain(t, tc.name, p.Body, `>`+v.Get("targets")+`</textarea>`, `value="`+v.Get("keep_daily")+`"`)
	}
	var ps []json.RawMessage
	if err := e.ui.api(ginContext(t), http.MethodGet, "/api/v1/pairings", nil, &ps); err != nil || len(ps) != 0 {
		t.Fatalf("invalid forms started %d pairings (%v)", len(ps), err)
	}

	p = b.post("/agents/new", validWizard())
	if p.Code != http.StatusSeeOther || p.Location() != "/pairings/1" {
		t.Fatalf("valid wizard: HTTP %d to %q\n%s", p.Code, p.Location(), p.Body)
	}
	var pr pairingView
	if err := e.ui.api(ginContext(t), http.MethodGet, "/api/v1/pairings/1", nil, &pr); err != nil {
		t.Fatal(err)
	}
	s := pr.Settings
	if pr.Target != "web01" || s.BackupSchedule != "0 9-18 * * mon-fri" || s.Retention.KeepLast != 24 || s.Retention.KeepDaily != 7 ||
		s.OffsiteSchedule != "0 2 * * *" || s.OffsiteRetention.KeepDaily != 30 {
		t.Fatalf("pairing %+v", pr)
	}
	p = b.get("/pairings/1")
	mustContain(t, "pairing page", p.Body, "Pairing web01", "resolve", "connect", "license", "inspect", "dataset", "settings")

	v := validWizard()
	v.Set("targets", "fs1\nfs2")
	v.Set("port", "2500")
	p = b.post("/agents/new", v)
	if p.Code != http.StatusCreated {
		t.Fatalf("two targets: HTTP %d", p.Code)
	}
	mustContain(t, "two targets", p.Body, "2 pairing(s) started.", `href="/pairings/2"`, `href="/pairings/3"`)
	if err := e.ui.api(ginContext(t), http.MethodGet, "/api/v1/pairings/3", nil, &pr); err != nil || pr.Target != "fs2" || pr.Port != 2500 {
		t.Fatalf("pairing 3: %+v, %v; want fs2 port 2500", pr, err)
	}
}

func TestWizardAPIRefusal(t *testing.T) {
	api := stubAPI{routes: map[string]http.HandlerFunc{
		"GET /api/v1/agents": jsonAnswer(`[{"id": "nat01", "hostname": "NAT01", "mode": "reverse", "connected": true}]`),
		"POST /api/v1/pairings": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"pairings": [], "errors": [{"target": "", "code": "mode_mismatch", "message": "agent \"nat01\" is a direct-mode agent"}]}`)
		},
	}}
	e := newEnv(t, api)
	b := e.browser(t)
	b.setup()
	p := b.get("/agents/new")
	mustContain(t, "wizard", p.Body, `<option value="nat01">nat01 (NAT01)</option>`)
	v := validWizard()
	v.Del("targets")
	v.Set("reverse", "nat01")
	p = b.post("/agents/new", v)
	if p.Code != http.StatusUnprocessableEntity {
		t.Fatalf("refused: HTTP %d", p.Code)
	}
	mustContain(t, "refused", p.Body, "No pairing started.", "nat01: agent &#34;nat01&#34; is a direct-mode agent", `<option value="nat01" selected>`)
}

// pairingJSON is a pairing that failed at the dataset step, after the
// Connect and Inspect steps found what the page shows.
const pairingJSON = `{"id": 7, "target": "web01", "port": 25568, "agent_id": "web01", "mode": "direct", "state": "%s",
 "settings": {"backup_schedule": "30 8-17 * * mon-fri", "retention": {"keep_last": 10}, "offsite_schedule": "", "volumes": ["D:"]},
 "steps": [
  {"step": "resolve", "status": "ok", "detail": "web01 is 10.0.0.5"},
  {"step": "connect", "status": "ok", "detail": "connected", "data": {"address": "10.0.0.5:25568",
    "fingerprint": "SHA256:7f3a9c0e4b1d2f5a6c7e8d9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3", "short": "7F3A-9C0E", "hostname": "WEB01", "os": "windows", "agent_version": "0.4.0"}},
  {"step": "license", "status": "ok", "detail": "activated"},
  {"step": "inspect", "status": "warning", "code": "writer_failed", "detail": "1 VSS writer failed", "remedy": "restart SQL Server VSS Writer",
   "data": {"volumes": [{"id": "C:", "path": "\\\\?\\Volume{1}", "size_bytes": 107374182400, "filesystem": "NTFS", "mount_points": ["C:\\"]},
                        {"id": "D:", "size_bytes": 536870912000, "filesystem": "ReFS", "mount_points": ["D:\\"]}],
            "writers": [{"name": "SqlServerWriter", "state": "[8] Failed", "last_error": "Non-retryable error"},
                        {"name": "System Writer", "state": "[1] Stable", "last_error": "No error"}], "snapshot_provider": "vss"}},
  {"step": "dataset", "status": "%s", "code": "create_failed", "detail": "the dataset could not be created: no space", "remedy": "free space in the pool, then retry"},
  {"step": "settings", "status": "pending"}],
 "created_at": "2026-11-02T09:00:00Z", "updated_at": "2026-11-02T09:01:00Z"}`

func pairingAnswer(state, dataset string) string {
	return strings.Replace(strings.Replace(pairingJSON, "%s", state, 1), "%s", dataset, 1)
}

func TestPairingLiveView(t *testing.T) {
	var mu sync.Mutex
	retried := 0
	api := stubAPI{routes: map[string]http.HandlerFunc{
		"GET /api/v1/pairings/7": jsonAnswer(pairingAnswer("failed", "failed")),
		"GET /api/v1/pairings/8": jsonAnswer(strings.Replace(pairingAnswer("running", "running"), `"id": 7`, `"id": 8`, 1)),
		"POST /api/v1/pairings/7/retry": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			retried++
			mu.Unlock()
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, pairingAnswer("running", "running"))
		},
	}}
	e := newEnv(t, api)
	b := e.browser(t)
	b.setup()

	p := b.get("/pairings/7")
	if p.Code != http.StatusOK {
		t.Fatalf("GET /pairings/7: HTTP %d", p.Code)
	}
	mustContain(t, "failed pairing", p.Body,
		`<strong class="state-failed">failed</strong>`,
		"the dataset could not be created: no space", "<strong>What to do:</strong> free space in the pool, then retry",
		"SHA256:7f3a9c0e4b1d2f5a6c7e8d9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3", "short form 7F3A-9C0E", "WEB01",
		`<tr class="writer-bad"><th scope="row">SqlServerWriter</th><td>[8] Failed</td><td>Non-retryable error</td></tr>`,
		`<th scope="row">System Writer</th>`, "100.0 GiB", "500.0 GiB", "Retry from the failed step")
	mustNotContain(t, "failed pairing", p.Body, "hx-trigger", "Choose volumes and schedule")

	p = b.get("/pairings/8")
	mustContain(t, "running pairing", p.Body, `hx-get="/pairings/8/steps" hx-trigger="every 1s" hx-swap="outerHTML"`, "updates by itself")
	mustNotContain(t, "running pairing", p.Body, "Retry from the failed step")
	p = b.get("/pairings/8/steps")
	if p.Code != http.StatusOK || !strings.HasPrefix(strings.TrimSpace(p.Body), `<div id="steps" hx-get="/pairings/8/steps"`) || strings.Contains(p.Body, "<html") {
		t.Fatalf("steps fragment: HTTP %d\n%s", p.Code, p.Body)
	}
	// Once the pairing stops running, the fragment stops the polling.
	p = b.get("/pairings/7/steps")
	if !strings.HasPrefix(strings.TrimSpace(p.Body), `<div id="steps">`) {
		t.Fatalf("finished steps fragment still polls:\n%s", p.Body)
	}

	if p := b.post("/pairings/7/retry", nil); p.Code != http.StatusSeeOther || p.Location() != "/pairings/7" {
		t.Fatalf("retry: HTTP %d to %q", p.Code, p.Location())
	}
	mu.Lock()
	if retried != 1 {
		t.Fatalf("retry called the API %d times", retried)
	}
	mu.Unlock()
	for _, path := range []string{"/pairings/9", "/pairings/x"} {
		if p := b.get(path); p.Code != http.StatusNotFound {
			t.Errorf("GET %s: HTTP %d, want 404", path, p.Code)
		}
	}
}

func TestSettingsForm(t *testing.T) {
	var mu sync.Mutex
	var put []byte
	api := stubAPI{routes: map[string]http.HandlerFunc{
		"GET /api/v1/agents": jsonAnswer(`[{"id": "web01", "mode": "direct", "connected": false,
			"settings": {"agent_id": "web01", "backup_schedule": "30 8-17 * * mon-fri", "retention": {"keep_last": 10, "keep_daily": 3},
			"offsite_schedule": "", "offsite_retention": {}, "volumes": ["D:"]}}]`),
		"GET /api/v1/pairings": jsonAnswer(`[` + pairingAnswer("done", "ok") + `]`),
		"PUT /api/v1/agents/web01/settings": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			put, _ = io.ReadAll(r.Body)
			mu.Unlock()
			jsonAnswer(`{}`)(w, r)
		},
	}}
	e := newEnv(t, api)
	b := e.browser(t)
	b.setup()
	p := b.get("/agents/web01/settings")
	if p.Code != http.StatusOK {
		t.Fatalf("settings page: HTTP %d", p.Code)
	}
	// The stored cron spec is shown on the grid; the volumes come from
	// the Inspect step.
	mustContain(t, "settings page", p.Body, `name="g1_8" aria-label="Monday 8:00" checked`, `name="g5_17" aria-label="Friday 17:00" checked`,
		`id="f-minute" name="minute" type="number" value="30"`, `id="f-cron" name="cron" type="text" value=""`,
		`<input type="checkbox" name="volume" value="C:">`, `<input type="checkbox" name="volume" value="D:" checked>`,
		"the pairing&#39;s Inspect step", `id="f-keep_daily" name="keep_daily" type="number" value="3"`)
	mustNotContain(t, "settings page", p.Body, `name="g1_18" aria-label="Monday 18:00" checked`, `id="f-offsite" name="offsite" role="switch" checked`)

	form := url.Values{"minute": {"30"}, "keep_last": {"10"}, "volume": {"C:", "E:"}}
	setGrid(form, gridOf(weekdays, span(8, 17)...))
	p = b.post("/agents/web01/settings", form)
	if p.Code != http.StatusUnprocessableEntity {
		t.Fatalf("unknown volume: HTTP %d", p.Code)
	}
	mustContain(t, "unknown volume", p.Body, `id="e-volumes"`, "The agent has no volume &#34;E:&#34; (it has C:, D:).",
		`<input type="checkbox" name="volume" value="C:" checked>`)

	form["volume"] = []string{"C:"}
	form.Set("cron", "0 */4 * * *")
	p = b.post("/agents/web01/settings", form)
	if p.Code != http.StatusOK {
		t.Fatalf("valid settings: HTTP %d\n%s", p.Code, p.Body)
	}
	mustContain(t, "saved", p.Body, "Settings saved.")
	var got struct {
		BackupSchedule string   `json:"backup_schedule"`
		Volumes        []string `json:"volumes"`
		Retention      struct {
			KeepLast int `json:"keep_last"`
		} `json:"retention"`
		OffsiteSchedule string `json:"offsite_schedule"`
	}
	mu.Lock()
	err := json.Unmarshal(put, &got)
	mu.Unlock()
	if err != nil || got.BackupSchedule != "0 */4 * * *" || len(got.Volumes) != 1 || got.Volumes[0] != "C:" || got.Retention.KeepLast != 10 || got.OffsiteSchedule != "" {
		t.Fatalf("PUT body %+v, %v", got, err)
	}
	if p := b.get("/agents/nobody/settings"); p.Code != http.StatusNotFound {
		t.Errorf("unknown agent: HTTP %d", p.Code)
	}
}

// TestSettingsRefusedByAPI: the real API refuses settings of an agent it
// does not know; the page says so and keeps the input.
func TestSettingsRefusedByAPI(t *testing.T) {
	real := newAppliance(t)
	api := stubAPI{next: real.Handler(), routes: map[string]http.HandlerFunc{
		"GET /api/v1/agents": jsonAnswer(`[{"id": "web01", "mode": "direct"}]`),
	}}
	e := newEnv(t, api)
	b := e.browser(t)
	b.setup()
	form := url.Values{"minute": {"0"}, "keep_last": {"5"}}
	setGrid(form, DefaultGrid())
	p := b.post("/agents/web01/settings", form)
	if p.Code != http.StatusUnprocessableEntity {
		t.Fatalf("HTTP %d, want 422", p.Code)
	}
	mustContain(t, "refused", p.Body, "The appliance refused the settings")
}

func TestTokensPage(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	b.setup()
	b.get("/tokens")
	p := b.post("/tokens/agent", url.Values{"agent_id": {"Bad Agent!"}})
	if p.Code != http.StatusUnprocessableEntity || !strings.Contains(p.Body, `id="e-agent_id"`) || !strings.Contains(p.Body, `value="Bad Agent!"`) {
		t.Fatalf("bad agent ID: HTTP %d\n%s", p.Code, p.Body)
	}
	p = b.post("/tokens/agent", url.Values{"agent_id": {"nat01"}})
	if p.Code != http.StatusCreated {
		t.Fatalf("create agent token: HTTP %d\n%s", p.Code, p.Body)
	}
	secret := regexpFind(`id="secret-value" readonly value="([^"]+)"`, p.Body)
	if secret == "" {
		t.Fatalf("no secret shown:\n%s", p.Body)
	}
	mustContain(t, "created", p.Body, "Agent token created: token 1 for nat01", `data-copy="secret-value"`)
	if p.Resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q on a page with a secret", p.Resp.Header.Get("Cache-Control"))
	}
	p = b.get("/tokens")
	mustNotContain(t, "tokens page", p.Body, secret, "secret-value")
	mustContain(t, "tokens page", p.Body, `<th scope="row">1</th><td>nat01</td><td>operator</td>`, `action="/tokens/1/revoke"`)

	for _, tc := range []struct {
		form  url.Values
		field string
	}{
		{url.Values{"label": {""}, "ttl_hours": {"24"}, "max_uses": {"1"}}, "label"},
		{url.Values{"label": {"roll-out"}, "ttl_hours": {"0"}, "max_uses": {"1"}}, "ttl_hours"},
		{url.Values{"label": {"roll-out"}, "ttl_hours": {"24"}, "max_uses": {"lots"}}, "max_uses"},
	} {
		p := b.post("/tokens/setup", tc.form)
		if p.Code != http.StatusUnprocessableEntity || !strings.Contains(p.Body, `id="e-`+tc.field+`"`) {
			t.Errorf("setup token %v: HTTP %d, no message for %s", tc.form, p.Code, tc.field)
		}
	}
	p = b.post("/tokens/setup", url.Values{"label": {"roll-out"}, "ttl_hours": {"48"}, "max_uses": {"20"}})
	if p.Code != http.StatusCreated {
		t.Fatalf("create setup token: HTTP %d", p.Code)
	}
	mustContain(t, "setup token", p.Body, "Setup token created: roll-out", "for 20 agent(s)")
	if regexpFind(`id="secret-value" readonly value="([^"]+)"`, p.Body) == "" {
		t.Fatal("setup token not shown")
	}

	p = b.post("/tokens/1/revoke", nil)
	if p.Code != http.StatusOK {
		t.Fatalf("revoke: HTTP %d", p.Code)
	}
	mustContain(t, "revoked", p.Body, "Token 1 revoked", "revoked 2")
	mustNotContain(t, "revoked", p.Body, `action="/tokens/1/revoke"`)
}

// TestTokensPageDuplicates: the tokens page asks the audit log for the
// newest duplicate connections only, and lists them as they come.
func TestTokensPageDuplicates(t *testing.T) {
	var mu sync.Mutex
	var asked url.Values
	api := stubAPI{routes: map[string]http.HandlerFunc{
		"GET /api/tokens":       jsonAnswer(`[]`),
		"GET /api/setup-tokens": jsonAnswer(`[]`),
		"GET /api/v1/agents":    jsonAnswer(`[]`),
		"GET /api/audit": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			asked = r.URL.Query()
			mu.Unlock()
			var events []string
			for _, i := range []int{1001, 3} {
				events = append(events, `{"seq": `+strconv.Itoa(i)+`, "time": "2026-11-02T09:00:00Z", "actor": "gateway", "action": "agent.duplicate_connection", "target": "nat01", "detail": "event `+strconv.Itoa(i)+`"}`)
			}
			jsonAnswer("["+strings.Join(events, ",")+"]")(w, r)
		},
	}}
	e := newEnv(t, api)
	b := e.browser(t)
	b.setup()
	p := b.get("/tokens")
	i3, i1001 := strings.Index(p.Body, "event 3<"), strings.Index(p.Body, "event 1001<")
	if i3 < 0 || i1001 < 0 || i1001 > i3 {
		t.Fatalf("duplicates not listed newest first (positions %d, %d)", i1001, i3)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked.Get("kind") != "agent.duplicate_connection" || asked.Get("order") != "newest" || asked.Get("limit") != "50" {
		t.Errorf("audit query %v", asked)
	}
}

func TestPagesAndAssets(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	b.setup()
	for _, path := range []string{"/", "/agents/new", "/tokens", "/api-tokens"} {
		p := b.get(path)
		if p.Code != http.StatusOK {
			t.Errorf("GET %s: HTTP %d", path, p.Code)
			continue
		}
		h := p.Resp.Header
		if !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") || h.Get("X-Frame-Options") != "DENY" ||
			h.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("GET %s: headers %v", path, h)
		}
		mustContain(t, path, p.Body, `<html lang="en">`, `name="viewport"`, `<main id="main"`, `hx-headers='{"X-CSRF-Token": "`+b.csrf+`"}'`,
			`/static/htmx.min.js`, `/static/pico.min.css`, `aria-current="page"`)
	}
	p := b.get("/partials/agents")
	if !strings.HasPrefix(strings.TrimSpace(p.Body), `<div id="agents" hx-get="/partials/agents" hx-trigger="every 10s"`) {
		t.Errorf("agents fragment:\n%s", p.Body)
	}
	for path, want := range map[string]string{
		"/static/htmx.min.js":  "htmx",
		"/static/pico.min.css": "Pico CSS ✨ v2.1.1",
		"/static/app.js":       "data-copy",
	} {
		p := e.browser(t).get(path) // no login needed
		if p.Code != http.StatusOK || !strings.Contains(p.Body, want) {
			t.Errorf("GET %s: HTTP %d", path, p.Code)
		}
	}
	for _, path := range []string{"/static/", "/static/update.sh", "/static/../ui.go", "/static/nope.js"} {
		if p := b.get(path); p.Code != http.StatusNotFound {
			t.Errorf("GET %s: HTTP %d, want 404", path, p.Code)
		}
	}
}
