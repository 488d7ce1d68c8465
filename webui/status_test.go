package webui

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/appliance"
	"github.com/cairnbackup/cairn/appliance/appliancetest"
	"github.com/cairnbackup/cairn/appliance/backup/backuptest"
	"github.com/cairnbackup/cairn/internal/logtest"
)

// servedEnv is a UI over a real appliance that serves its agent gateway,
// so that in-process agents (backuptest) connect with agent tokens and
// pair for real.
type servedEnv struct {
	*env
	gw string
}

func newServedEnv(t *testing.T) *servedEnv {
	t.Helper()
	a := newAppliance(t)
	e := newEnv(t, a.Handler())
	e.app = a
	return &servedEnv{env: e, gw: appliancetest.ServeGateway(t, a)}
}

// connect starts an in-process agent with a token for agentID.
func (s *servedEnv) connect(t *testing.T, agentID string) *backuptest.Agent {
	t.Helper()
	return appliancetest.ConnectAgent(t, s.app, s.gw, agentID, nil)
}

// pairInUI pairs a connected reverse-mode agent through the add-agent
// form and waits until the pairing is done; it returns the pairing's page
// path.
func (s *servedEnv) pairInUI(t *testing.T, b *browser, agentID string) string {
	t.Helper()
	v := validWizard()
	v.Del("targets")
	v.Set("reverse", agentID)
	p := b.post("/agents/new", v)
	if p.Code != http.StatusSeeOther || !strings.HasPrefix(p.Location(), "/pairings/") {
		t.Fatalf("pair %s: HTTP %d to %q\n%s", agentID, p.Code, p.Location(), p.Body)
	}
	path := p.Location()
	logtest.WaitFor(t, "pairing done", func() bool {
		var pr pairingView
		if err := s.ui.api(ginContext(t), http.MethodGet, "/api/v1"+path, nil, &pr); err != nil {
			t.Fatal(err)
		}
		if pr.State == "failed" {
			t.Fatalf("pairing failed: %+v", pr.Steps)
		}
		return pr.State == "done"
	})
	return path
}

// TestDashboardBackupsAndStorage: the dashboard shows each agent's last
// and next backup, recovery points and space used, the appliance's
// storage, and marks an agent whose key is not confirmed.
func TestDashboardBackupsAndStorage(t *testing.T) {
	s := newServedEnv(t)
	b := s.browser(t)
	b.setup()
	p := b.get("/")
	mustContain(t, "empty dashboard", p.Body, "Appliance storage", `<progress value="`, "used of", "free · pool <code>cairn</code> (embedded)")

	s.connect(t, "web-1")
	path := s.pairInUI(t, b, "web-1")
	p = b.get("/partials/agents")
	mustContain(t, "paired, no backup", p.Body, `<span class="pending">never</span>`, `<a href="`+path+`">key not confirmed</a>`,
		"<td>0</td>", "Appliance storage")
	// The wizard's default schedule runs on weekdays from 9:00 to 18:00:
	// the next backup is one of those times.
	next := regexpFind(`</td>\s*<td>(\d{4}-\d\d-\d\d \d\d:\d\d UTC)</td>\s*<td>0</td>`, p.Body)
	// The page shows UTC; the schedule is in the appliance's time zone.
	tm, err := time.Parse("2006-01-02 15:04 MST", next)
	if l := tm.Local(); err != nil || l.Minute() != 0 || l.Hour() < 9 || l.Hour() > 18 || l.Weekday() == time.Saturday || l.Weekday() == time.Sunday {
		t.Errorf("next backup %q (%v; %v here), want a full hour from 9 to 18, Monday to Friday", next, err, l)
	}

	var job struct {
		ID uint64 `json:"id"`
	}
	c := ginContext(t)
	if err := s.ui.api(c, http.MethodPost, "/api/v1/agents/web-1/backups", nil, &job); err != nil {
		t.Fatal(err)
	}
	logtest.WaitFor(t, "backup done", func() bool {
		var j struct {
			State string `json:"state"`
		}
		if err := s.ui.api(c, http.MethodGet, fmt.Sprintf("/api/v1/jobs/%d", job.ID), nil, &j); err != nil {
			t.Fatal(err)
		}
		return j.State != "queued" && j.State != "running"
	})
	p = b.get("/partials/agents")
	mustContain(t, "after a backup", p.Body, `<span class="state-succeeded">succeeded</span>`, "<td>1</td>")
	if !regexp.MustCompile(`<small>\d+(\.\d)? [KM]iB written</small>`).MatchString(p.Body) {
		t.Errorf("no size written:\n%s", p.Body)
	}
	mustNotContain(t, "after a backup", p.Body, `<span class="pending">never</span>`, `title="shown once backups run"`)
	if used := regexpFind(`<td>1</td>\s*<td>([^<]+)</td>`, p.Body); used == "—" || used == "" || used == "0 B" {
		t.Errorf("storage used %q", used)
	}
}

// TestPairingFingerprintConfirmation: the pairing page shows the pinned
// fingerprint with "It matches" (CSRF-protected) and "It does not match";
// confirming is recorded for the admin, and makes "Choose volumes and
// schedule" the next step. A fingerprint the operator reads elsewhere
// leads to the mismatch page, which unpairs the agent.
func TestPairingFingerprintConfirmation(t *testing.T) {
	s := newServedEnv(t)
	b := s.browser(t)
	b.setup()
	ag := s.connect(t, "web-1")
	path := s.pairInUI(t, b, "web-1")
	fp := ag.ID.Fingerprint()

	shown := strings.ReplaceAll(fp.String(), "+", "&#43;") // as html/template writes it
	p := b.get(path)
	mustContain(t, "unconfirmed pairing", p.Body, shown, "short form "+fp.Short(), "cairn-agent fingerprint",
		`action="`+path+`/confirm-fingerprint"`, `name="fingerprint" value="`+shown+`"`, ">It matches</button>",
		`href="`+path+`/mismatch">It does not match</a>`, `<a role="button" href="#fingerprint">Confirm the fingerprint</a>`,
		"still unconfirmed")
	mustNotContain(t, "unconfirmed pairing", p.Body, `<a role="button" href="/agents/web-1/settings">`)

	// Without the CSRF token: refused, nothing recorded.
	if p := b.post(path+"/confirm-fingerprint", url.Values{"csrf": {"forged"}, "fingerprint": {fp.String()}}); p.Code != http.StatusForbidden {
		t.Fatalf("confirm without CSRF: HTTP %d", p.Code)
	}
	if p := b.get(path); !strings.Contains(p.Body, ">It matches</button>") {
		t.Fatal("confirmed without a CSRF token")
	}
	p = b.post(path+"/confirm-fingerprint", url.Values{"fingerprint": {fp.String()}})
	if p.Code != http.StatusSeeOther || p.Location() != path {
		t.Fatalf("confirm: HTTP %d to %q\n%s", p.Code, p.Location(), p.Body)
	}
	p = b.get(path)
	mustContain(t, "confirmed pairing", p.Body, "You confirmed this fingerprint on", `<a role="button" href="/agents/web-1/settings">Choose volumes and schedule</a>`)
	mustNotContain(t, "confirmed pairing", p.Body, ">It matches</button>", "still unconfirmed")
	mustNotContain(t, "dashboard", b.get("/").Body, "key not confirmed")
	var events []auditView
	if err := s.ui.api(ginContext(t), http.MethodGet, "/api/audit?kind=agent.fingerprint_confirmed", nil, &events); err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Actor != "user:"+testUser || events[0].Target != "web-1" {
		t.Fatalf("audit %+v", events)
	}

	// A second agent whose key the operator does not recognise.
	s.connect(t, "web-2")
	path2 := s.pairInUI(t, b, "web-2")
	p = b.get(path2 + "/mismatch")
	mustContain(t, "mismatch page", p.Body, "Do not protect this machine yet", `action="`+path2+`/unpair"`, "Unpair web-2", `id="f-fingerprint"`)
	other := backuptest.New(t).ID.Fingerprint()
	p = b.post(path2+"/confirm-fingerprint", url.Values{"fingerprint": {other.Short()}})
	if p.Code != http.StatusConflict {
		t.Fatalf("another key: HTTP %d\n%s", p.Code, p.Body)
	}
	mustContain(t, "refused key", p.Body, "The fingerprint does not match", "<strong>What to do:</strong>", "unpair the agent", `value="`+other.Short()+`"`)
	p = b.post(path2+"/confirm-fingerprint", url.Values{"fingerprint": {"not a fingerprint"}})
	if p.Code != http.StatusUnprocessableEntity || !strings.Contains(p.Body, `id="e-fingerprint"`) {
		t.Fatalf("a malformed fingerprint: HTTP %d\n%s", p.Code, p.Body)
	}
	if p := b.post(path2+"/unpair", url.Values{"csrf": {""}}); p.Code != http.StatusForbidden {
		t.Fatalf("unpair without CSRF: HTTP %d", p.Code)
	}
	p = b.post(path2+"/unpair", nil)
	if p.Code != http.StatusOK {
		t.Fatalf("unpair: HTTP %d\n%s", p.Code, p.Body)
	}
	mustContain(t, "unpaired", p.Body, "Agent web-2 unpaired", "license seat is released", "cairn-agent unpair")
	var agents []agentView
	if err := s.ui.api(ginContext(t), http.MethodGet, "/api/v1/agents", nil, &agents); err != nil {
		t.Fatal(err)
	}
	if len(agents) != 1 || agents[0].ID != "web-1" || agents[0].FingerprintConfirmedAt == nil {
		t.Fatalf("agents after unpairing web-2: %+v", agents)
	}
	if p := b.get(path2); p.Code != http.StatusNotFound {
		t.Errorf("the unpaired agent's pairing: HTTP %d", p.Code)
	}
	if p := b.post("/pairings/99/confirm-fingerprint", url.Values{"fingerprint": {fp.String()}}); p.Code != http.StatusNotFound {
		t.Errorf("unknown pairing: HTTP %d", p.Code)
	}
}

// TestSetupTokensList: the tokens page lists setup tokens with their
// state and a revoke button (CSRF-protected); the secret is shown only
// when created.
func TestSetupTokensList(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	b.setup()
	b.get("/tokens")
	p := b.post("/tokens/setup", url.Values{"label": {"roll-out"}, "ttl_hours": {"48"}, "max_uses": {"20"}})
	secret := regexpFind(`id="secret-value" readonly value="([^"]+)"`, p.Body)
	id := regexpFind(`<th scope="row">roll-out</th><td><code>([0-9A-Za-z]{12})</code>`, p.Body)
	if p.Code != http.StatusCreated || secret == "" || id == "" {
		t.Fatalf("create: HTTP %d, id %q\n%s", p.Code, id, p.Body)
	}
	p = b.get("/tokens")
	mustContain(t, "tokens page", p.Body, "<td>0 of 20</td>", "active", `action="/setup-tokens/`+id+`/revoke"`)
	mustNotContain(t, "tokens page", p.Body, secret)

	if p := b.post("/setup-tokens/"+id+"/revoke", url.Values{"csrf": {"forged"}}); p.Code != http.StatusForbidden {
		t.Fatalf("revoke without CSRF: HTTP %d", p.Code)
	}
	p = b.post("/setup-tokens/"+id+"/revoke", nil)
	if p.Code != http.StatusOK {
		t.Fatalf("revoke: HTTP %d\n%s", p.Code, p.Body)
	}
	mustContain(t, "revoked", p.Body, "Setup token roll-out ("+id+") revoked", "revoked 2")
	mustNotContain(t, "revoked", p.Body, `action="/setup-tokens/`+id+`/revoke"`, secret)
	for _, bad := range []string{"AAAAAAAAAAAA", "short", url.PathEscape(secret)} {
		if p := b.post("/setup-tokens/"+bad+"/revoke", nil); p.Code != http.StatusNotFound {
			t.Errorf("revoke %q: HTTP %d, want 404", bad, p.Code)
		}
	}
}

// TestAuditPageAndActor: the UI tells the API who acts — the admin for a
// session, the API token for a script — whatever the client claims; the
// audit page shows it, filters and pages.
func TestAuditPageAndActor(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	b.setup()
	b.get("/tokens")
	b.post("/tokens/agent", url.Values{"agent_id": {"nat-1"}}) // a page: apiRaw
	// The API under the session, with a forged actor.
	req := httptest.NewRequest(http.MethodPost, "/api/tokens", strings.NewReader(`{"agent_id": "nat-2"}`))
	req.Header.Set("X-CSRF-Token", b.csrf)
	req.Header.Set(actorHeader, "user:mallory")
	if p := b.do(req); p.Code != http.StatusCreated {
		t.Fatalf("API with a session: HTTP %d %s", p.Code, p.Body)
	}
	// A script with an API token, with a forged actor.
	p := b.post("/api-tokens", url.Values{"name": {"nightly report"}})
	tok := regexpFind(`id="secret-value" readonly value="(cairn_api_[^"]+)"`, p.Body)
	tokID := regexp.MustCompile(`^cairn_api_([0-9a-f]+)_`).FindStringSubmatch(tok)
	if tokID == nil {
		t.Fatalf("no API token:\n%s", p.Body)
	}
	req = httptest.NewRequest(http.MethodPost, "/api/tokens", strings.NewReader(`{"agent_id": "nat-3"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set(actorHeader, "user:mallory")
	if p := e.browser(t).do(req); p.Code != http.StatusCreated {
		t.Fatalf("API with a token: HTTP %d %s", p.Code, p.Body)
	}

	var events []auditView
	if err := e.ui.api(ginContext(t), http.MethodGet, "/api/audit?kind=agent_token.created", nil, &events); err != nil {
		t.Fatal(err)
	}
	want := []string{"user:" + testUser, "user:" + testUser, "api-token:" + tokID[1]}
	if len(events) != 3 {
		t.Fatalf("events %+v", events)
	}
	for i, ev := range events {
		if ev.Actor != want[i] {
			t.Errorf("event %d (%s) by %q, want %q", i, ev.Target, ev.Actor, want[i])
		}
	}

	p = b.get("/audit")
	if p.Code != http.StatusOK {
		t.Fatalf("audit page: HTTP %d", p.Code)
	}
	mustContain(t, "audit page", p.Body, `href="/audit" aria-current="page"`, "<code>agent_token.created</code>", "<td>nat-3</td>",
		testUser+"<br><small>web UI</small>", "API token nightly report<br><small>"+tokID[1]+"</small>")
	mustNotContain(t, "audit page", p.Body, "mallory")
	if i3, i1 := strings.Index(p.Body, "<td>nat-3</td>"), strings.Index(p.Body, "<td>nat-1</td>"); i3 > i1 {
		t.Errorf("not newest first")
	}
	p = b.get("/audit?agent=nat-2")
	mustContain(t, "filtered", p.Body, "<td>nat-2</td>", `value="nat-2"`)
	mustNotContain(t, "filtered", p.Body, "<td>nat-1</td>", "<td>nat-3</td>")
	p = b.get("/audit?limit=1")
	older := regexpFind(`<a href="(/audit\?[^"]+)">Older events</a>`, p.Body)
	if !strings.Contains(older, "before=3") || !strings.Contains(older, "limit=1") {
		t.Fatalf("no link to older events:\n%s", p.Body)
	}
	p = b.get(older)
	mustContain(t, "older page", p.Body, "<td>nat-2</td>")
	mustNotContain(t, "older page", p.Body, "<td>nat-3</td>")

	if p := b.get("/audit?kind=Not+A+Kind"); p.Code != http.StatusUnprocessableEntity || !strings.Contains(p.Body, "The filter was refused: kind") {
		t.Errorf("bad kind: HTTP %d", p.Code)
	}
	if p := b.get("/audit?limit=0"); p.Code != http.StatusUnprocessableEntity || !strings.Contains(p.Body, `id="e-limit"`) {
		t.Errorf("bad limit: HTTP %d", p.Code)
	}
	if p := b.get("/audit?kind=license"); p.Code != http.StatusOK || !strings.Contains(p.Body, "No events match the filter.") {
		t.Errorf("no match: HTTP %d", p.Code)
	}
}

// TestActorHeaderReplaced: whatever the client sends as X-Cairn-Actor,
// the API sees the UI's own.
func TestActorHeaderReplaced(t *testing.T) {
	var got []string
	api := stubAPI{routes: map[string]http.HandlerFunc{
		"GET /api/v1/agents": func(w http.ResponseWriter, r *http.Request) {
			got = append(got, r.Header.Values(actorHeader)...)
			jsonAnswer(`[]`)(w, r)
		},
		"GET /api/v1/pairings": jsonAnswer(`[]`),
		"GET /api/v1/storage":  jsonAnswer(`{"pool": "cairn", "kind": "embedded", "used_bytes": 1, "available_bytes": 3, "total_bytes": 4}`),
	}}
	e := newEnv(t, api)
	b := e.browser(t)
	b.setup()
	got = nil
	for _, path := range []string{"/api/v1/agents", "/"} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set(actorHeader, "user:mallory")
		if p := b.do(req); p.Code != http.StatusOK {
			t.Fatalf("%s: HTTP %d", path, p.Code)
		}
	}
	if len(got) != 2 || got[0] != "user:"+testUser || got[1] != "user:"+testUser {
		t.Fatalf("the API saw actors %q", got)
	}
	p := b.get("/")
	mustContain(t, "storage", p.Body, `<progress value="1" max="4"`, "1 B used of 4 B (25%), 3 B free")
}

func TestActorHeaderName(t *testing.T) {
	if actorHeader != appliance.ActorHeader {
		t.Fatalf("the UI sets %q, the appliance reads %q", actorHeader, appliance.ActorHeader)
	}
}
