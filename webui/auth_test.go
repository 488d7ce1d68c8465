package webui

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

func TestFirstStartSetup(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	for _, path := range []string{"/", "/agents/new", "/tokens", "/login"} {
		if p := b.get(path); p.Code != http.StatusSeeOther || p.Location() != "/setup" {
			t.Errorf("GET %s before setup: HTTP %d to %q, want 303 to /setup", path, p.Code, p.Location())
		}
	}
	p := b.get("/setup")
	if p.Code != http.StatusOK {
		t.Fatalf("GET /setup: HTTP %d", p.Code)
	}
	mustContain(t, "setup page", p.Body, `<label for="f-username">`, `autocomplete="new-password"`)

	for _, tc := range []struct {
		name, user, pass, confirm, field, msg string
	}{
		{"no user", "", testPassword, testPassword, "username", "Choose a user name."},
		{"space in user", "a b", testPassword, testPassword, "username", "without spaces"},
		{"vertical tab in user", "a\vb", testPassword, testPassword, "username", "without spaces"},
		{"no-break space in user", "a\u00a0b", testPassword, testPassword, "username", "without spaces"},
		{"short password", testUser, "elevenchars", "elevenchars", "password", "at least 12 characters"},
		{"confirm differs", testUser, testPassword, testPassword + "x", "confirm", "The two passwords differ."},
	} {
		p := b.post("/setup", url.Values{"username": {tc.user}, "password": {tc.pass}, "confirm": {tc.confirm}})
		if p.Code != http.StatusUnprocessableEntity {
			t.Errorf("%s: HTTP %d, want 422", tc.name, p.Code)
		}
		mustContain(t, tc.name, p.Body, `id="e-`+tc.field+`"`, tc.msg, `value="`+tc.user+`"`)
		mustNotContain(t, tc.name, p.Body, tc.pass)
	}
	if st, _ := e.store.Load(context.Background()); st.Admin != nil {
		t.Fatal("an invalid form created the admin")
	}
	// Without the form's token (another site posting) nothing happens.
	other := e.browser(t)
	if p := other.post("/setup", url.Values{"username": {"evil"}, "password": {testPassword}, "confirm": {testPassword}}); p.Code != http.StatusForbidden {
		t.Errorf("setup without the form token: HTTP %d, want 403", p.Code)
	}

	p = b.post("/setup", url.Values{"username": {testUser}, "password": {testPassword}, "confirm": {testPassword}})
	if p.Code != http.StatusSeeOther || p.Location() != "/" {
		t.Fatalf("setup: HTTP %d to %q", p.Code, p.Location())
	}
	var session *http.Cookie
	for _, c := range p.Resp.Cookies() {
		if c.Name == "cairn_session" {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Lax, not Secure without TLS", session)
	}
	st, err := e.store.Load(context.Background())
	if err != nil || st.Admin == nil || st.Admin.Username != testUser || !strings.HasPrefix(st.Admin.PasswordHash, "$argon2id$v=19$") {
		t.Fatalf("stored admin %+v, %v", st.Admin, err)
	}
	if len(st.Sessions) != 1 || st.Sessions[0].IDHash != sha256Hex(session.Value) {
		t.Fatalf("stored sessions %+v: want the cookie's SHA-256", st.Sessions)
	}
	raw, _ := os.ReadFile(e.store.path)
	mustNotContain(t, "store file", string(raw), testPassword, session.Value)
	if p := b.get("/"); p.Code != http.StatusOK {
		t.Fatalf("dashboard after setup: HTTP %d", p.Code)
	}
	// Setup is over: the page and the form go to login, the admin stays.
	if p := other.get("/setup"); p.Code != http.StatusSeeOther || p.Location() != "/login" {
		t.Errorf("GET /setup after setup: HTTP %d to %q", p.Code, p.Location())
	}
	other.post("/setup", url.Values{"username": {"evil"}, "password": {testPassword}, "confirm": {testPassword}})
	if st, _ := e.store.Load(context.Background()); st.Admin.Username != testUser {
		t.Fatalf("a second setup replaced the admin: %+v", st.Admin)
	}
}

func TestLoginLogout(t *testing.T) {
	e := newEnv(t, nil)
	e.browser(t).setup()
	b := e.browser(t)
	if p := b.get("/tokens"); p.Code != http.StatusSeeOther || p.Location() != "/login?next=%2Ftokens" {
		t.Fatalf("GET /tokens logged out: HTTP %d to %q", p.Code, p.Location())
	}
	for _, tc := range []struct{ user, pass string }{{testUser, "wrong password!"}, {"root", testPassword}, {"", ""}} {
		p := b.login(tc.user, tc.pass)
		if p.Code != http.StatusUnauthorized {
			t.Errorf("login %q: HTTP %d, want 401", tc.user, p.Code)
		}
		mustContain(t, "failed login", p.Body, "Wrong user name or password.")
	}
	b.get("/login?next=/tokens")
	p := b.post("/login", url.Values{"username": {testUser}, "password": {testPassword}, "next": {"/tokens"}})
	if p.Code != http.StatusSeeOther || p.Location() != "/tokens" {
		t.Fatalf("login: HTTP %d to %q", p.Code, p.Location())
	}
	if p := b.get("/tokens"); p.Code != http.StatusOK {
		t.Fatalf("GET /tokens logged in: HTTP %d", p.Code)
	}
	old := b.jar.Cookies(base)

	if p := b.post("/logout", url.Values{"csrf": {""}}); p.Code != http.StatusForbidden {
		t.Fatalf("logout without CSRF token: HTTP %d, want 403", p.Code)
	}
	if p := b.post("/logout", nil); p.Code != http.StatusSeeOther || p.Location() != "/login" {
		t.Fatalf("logout: HTTP %d to %q", p.Code, p.Location())
	}
	// The old cookie is dead on the server, not only in the browser.
	replay := e.browser(t)
	replay.jar.SetCookies(base, old)
	if p := replay.get("/"); p.Code != http.StatusSeeOther || !strings.HasPrefix(p.Location(), "/login") {
		t.Fatalf("old session after logout: HTTP %d to %q", p.Code, p.Location())
	}
}

func TestLoginNextStaysOnSite(t *testing.T) {
	for in, want := range map[string]string{"/tokens": "/tokens", "/agents/web-1?x=1": "/agents/web-1?x=1",
		"//evil.example/": "/", "https://evil.example/": "/", "/\\evil": "/", "": "/",
		// Browsers drop tabs and newlines: these would be //evil.example.
		"/\t/evil.example": "/", "/\n/evil.example": "/", "/\r/evil.example": "/", "/ /evil.example": "/"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoginRateLimit(t *testing.T) {
	e := newEnv(t, nil)
	e.browser(t).setup()

	// Five failures from one address block it, even with the right
	// password, until the window has passed.
	b := e.browser(t)
	for i := range 5 {
		if p := b.login(testUser, "wrong password!"); p.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: HTTP %d", i+1, p.Code)
		}
	}
	p := b.login(testUser, testPassword)
	if p.Code != http.StatusTooManyRequests || p.Resp.Header.Get("Retry-After") != "300" {
		t.Fatalf("6th attempt: HTTP %d Retry-After %q, want 429 300", p.Code, p.Resp.Header.Get("Retry-After"))
	}
	mustContain(t, "429 page", p.Body, "Too many failed logins. Wait 5 minute(s)")
	// Another address may try other names; the blocked name is blocked
	// from everywhere.
	c := e.browser(t)
	c.addr = "127.0.0.2:40000"
	if p := c.login(testUser, testPassword); p.Code != http.StatusTooManyRequests {
		t.Fatalf("blocked user from another address: HTTP %d, want 429", p.Code)
	}
	if p := c.login("someone", "x"); p.Code != http.StatusUnauthorized {
		t.Fatalf("other user from another address: HTTP %d, want 401", p.Code)
	}
	e.clock.Advance(5*time.Minute - time.Second)
	if p := b.login(testUser, testPassword); p.Code != http.StatusTooManyRequests {
		t.Fatalf("before the window ends: HTTP %d, want 429", p.Code)
	}
	e.clock.Advance(time.Second)
	if p := b.login(testUser, testPassword); p.Code != http.StatusSeeOther {
		t.Fatalf("after the window: HTTP %d, want 303", p.Code)
	}
}

func TestCSRF(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	b.setup()
	b.get("/api-tokens")
	for name, tok := range map[string]string{"missing": "", "wrong": strings.Repeat("A", len(b.csrf)), "other session's": csrfFor("another session id")} {
		p := b.post("/api-tokens", url.Values{"name": {"ci"}, "csrf": {tok}})
		if p.Code != http.StatusForbidden {
			t.Errorf("%s CSRF token: HTTP %d, want 403", name, p.Code)
		}
	}
	if st, _ := e.store.Load(context.Background()); len(st.APITokens) != 0 {
		t.Fatalf("a refused form created %d API tokens", len(st.APITokens))
	}
	if p := b.post("/api-tokens", url.Values{"name": {"ci"}}); p.Code != http.StatusCreated {
		t.Fatalf("with the CSRF token: HTTP %d", p.Code)
	}
	// htmx sends it as a header.
	req := httptest.NewRequest(http.MethodPost, "/api-tokens", strings.NewReader("name=hx"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-CSRF-Token", b.csrf)
	req.Header.Set("HX-Request", "true")
	if p := b.do(req); p.Code != http.StatusCreated {
		t.Fatalf("with the CSRF header: HTTP %d", p.Code)
	}

	// The API under the session: state-changing calls need the header.
	call := func(method, path, csrf string) int {
		req := httptest.NewRequest(method, path, strings.NewReader(`{"label": "x"}`))
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		return b.do(req).Code
	}
	if code := call(http.MethodPost, "/api/setup-tokens", ""); code != http.StatusForbidden {
		t.Errorf("API POST without X-CSRF-Token: HTTP %d, want 403", code)
	}
	if code := call(http.MethodPost, "/api/setup-tokens", "nope"); code != http.StatusForbidden {
		t.Errorf("API POST with a wrong X-CSRF-Token: HTTP %d, want 403", code)
	}
	if code := call(http.MethodPost, "/api/setup-tokens", b.csrf); code != http.StatusCreated {
		t.Errorf("API POST with X-CSRF-Token: HTTP %d, want 201", code)
	}
	if code := call(http.MethodGet, "/api/v1/agents", ""); code != http.StatusOK {
		t.Errorf("API GET with the session: HTTP %d, want 200", code)
	}
}

func TestSessionExpiry(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.SessionIdle, c.SessionMax = 10*time.Minute, time.Hour })
	b := e.browser(t)
	b.setup()

	// Idle: used within the idle time it lives on, past it it ends.
	e.clock.Advance(9 * time.Minute)
	if p := b.get("/"); p.Code != http.StatusOK {
		t.Fatalf("after 9 idle minutes: HTTP %d", p.Code)
	}
	e.clock.Advance(10*time.Minute + time.Second)
	if p := b.get("/"); p.Code != http.StatusSeeOther || !strings.HasPrefix(p.Location(), "/login") {
		t.Fatalf("after 10 idle minutes: HTTP %d to %q", p.Code, p.Location())
	}
	if st, _ := e.store.Load(context.Background()); len(st.Sessions) != 0 {
		t.Fatalf("the expired session is still stored: %+v", st.Sessions)
	}

	// Absolute: a session in use ends an hour after login all the same.
	if p := b.login(testUser, testPassword); p.Code != http.StatusSeeOther {
		t.Fatalf("login: HTTP %d", p.Code)
	}
	for i := range 7 {
		e.clock.Advance(8 * time.Minute)
		if p := b.get("/"); p.Code != http.StatusOK {
			t.Fatalf("in use after %d minutes: HTTP %d", 8*(i+1), p.Code)
		}
	}
	e.clock.Advance(5 * time.Minute) // 61 minutes after login
	if p := b.get("/"); p.Code != http.StatusSeeOther {
		t.Fatalf("61 minutes after login: HTTP %d, want 303 to login", p.Code)
	}
}

func TestSecureCookies(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.Secure = true })
	b := e.browser(t)
	b.site, _ = url.Parse("https://cairn.test/")
	b.get("/setup")
	p := b.post("/setup", url.Values{"username": {testUser}, "password": {testPassword}, "confirm": {testPassword}})
	found := false
	for _, c := range p.Resp.Cookies() {
		if c.Name == "__Host-cairn_session" {
			found = true
			if !c.Secure || !c.HttpOnly || c.Path != "/" || c.Domain != "" {
				t.Errorf("session cookie %+v: want Secure, HttpOnly, Path=/, no Domain", c)
			}
		}
	}
	if !found {
		t.Fatalf("no __Host-cairn_session cookie in %v", p.Resp.Cookies())
	}
}

func TestAPIAuthRequired(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	// Before and after setup, /api/* without credentials is refused.
	check := func(when string) {
		for _, r := range []struct{ method, path string }{
			{http.MethodGet, "/api/v1/agents"}, {http.MethodGet, "/api/appliance"}, {http.MethodPost, "/api/tokens"},
			{http.MethodPost, "/api/v1/pairings"}, {http.MethodDelete, "/api/v1/agents/x"}, {http.MethodGet, "/api/audit"},
		} {
			p := b.do(httptest.NewRequest(r.method, r.path, strings.NewReader("{}")))
			if p.Code != http.StatusUnauthorized || p.Resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: %s %s without credentials: HTTP %d", when, r.method, r.path, p.Code)
			}
			var body struct{ Code string }
			if json.Unmarshal([]byte(p.Body), &body); body.Code != "unauthorized" {
				t.Errorf("%s: %s %s: body %s", when, r.method, r.path, p.Body)
			}
		}
	}
	check("before setup")
	e.browser(t).setup()
	check("after setup")
	if p := b.get("/healthz"); p.Code != http.StatusOK || !strings.Contains(p.Body, `"status":"ok"`) {
		t.Errorf("/healthz: HTTP %d %s", p.Code, p.Body)
	}
}

func TestAPIBearerToken(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	b.setup()
	p := b.post("/api-tokens", url.Values{"name": {"nightly report"}})
	if p.Code != http.StatusCreated {
		t.Fatalf("create API token: HTTP %d", p.Code)
	}
	m := regexpFind(`id="secret-value" readonly value="(cairn_api_[^"]+)"`, p.Body)
	if m == "" {
		t.Fatalf("the token is not shown:\n%s", p.Body)
	}
	st, _ := e.store.Load(context.Background())
	if len(st.APITokens) != 1 || st.APITokens[0].Hash != sha256Hex(m) || st.APITokens[0].Name != "nightly report" {
		t.Fatalf("stored %+v: want the token's SHA-256", st.APITokens)
	}
	raw, _ := os.ReadFile(e.store.path)
	mustNotContain(t, "store file", string(raw), m)
	// Shown once: the list does not show it again.
	list := b.get("/api-tokens")
	mustContain(t, "API tokens page", list.Body, "nightly report", st.APITokens[0].ID)
	mustNotContain(t, "API tokens page", list.Body, m)

	script := e.browser(t) // no cookies
	call := func(method, path, auth string) page {
		req := httptest.NewRequest(method, path, strings.NewReader(`{"label": "from a script"}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return script.do(req)
	}
	if p := call(http.MethodGet, "/api/v1/agents", "Bearer "+m); p.Code != http.StatusOK || strings.TrimSpace(p.Body) != "[]" {
		t.Fatalf("GET with the token: HTTP %d %s", p.Code, p.Body)
	}
	if p := call(http.MethodPost, "/api/setup-tokens", "Bearer "+m); p.Code != http.StatusCreated {
		t.Fatalf("POST with the token (no CSRF needed): HTTP %d %s", p.Code, p.Body)
	}
	for _, bad := range []string{"Bearer " + m + "x", "Bearer ", "Basic " + m, m} {
		if p := call(http.MethodGet, "/api/v1/agents", bad); p.Code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: HTTP %d, want 401", bad[:min(len(bad), 12)], p.Code)
		}
	}
	if st, _ := e.store.Load(context.Background()); !st.APITokens[0].LastUsed.Equal(e.clock.Now()) {
		t.Errorf("last use %v, want %v", st.APITokens[0].LastUsed, e.clock.Now())
	}
	if p := b.post("/api-tokens/"+st.APITokens[0].ID+"/revoke", nil); p.Code != http.StatusOK {
		t.Fatalf("revoke: HTTP %d", p.Code)
	}
	if p := call(http.MethodGet, "/api/v1/agents", "Bearer "+m); p.Code != http.StatusUnauthorized {
		t.Fatalf("revoked token: HTTP %d, want 401", p.Code)
	}
}

// TestAPIGetsNoCredentials: the API handler never sees the session
// cookie or the bearer token.
func TestAPIGetsNoCredentials(t *testing.T) {
	var got []string
	api := stubAPI{routes: map[string]http.HandlerFunc{
		"GET /api/v1/agents": func(w http.ResponseWriter, r *http.Request) {
			got = append(got, r.Header.Get("Cookie")+r.Header.Get("Authorization"))
			jsonAnswer(`[]`)(w, r)
		},
	}}
	e := newEnv(t, api)
	b := e.browser(t)
	b.setup()
	got = nil
	if p := b.get("/api/v1/agents"); p.Code != http.StatusOK {
		t.Fatalf("HTTP %d", p.Code)
	}
	if len(got) != 1 || got[0] != "" {
		t.Fatalf("the API saw credentials: %q", got)
	}
}

func TestFormBodyLimit(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser(t)
	b.get("/setup")
	huge := url.Values{"username": {strings.Repeat("a", 2<<20)}, "password": {testPassword}, "confirm": {testPassword}}
	if p := b.post("/setup", huge); p.Code < 400 {
		t.Fatalf("a 2 MiB form: HTTP %d", p.Code)
	}
	if st, _ := e.store.Load(context.Background()); st.Admin != nil {
		t.Fatal("a 2 MiB form created the admin")
	}
}

// TestPollingIsNotUse: the fragments htmx polls do not keep a session
// alive; when it has ended, htmx is told to go to the login page.
func TestPollingIsNotUse(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.SessionIdle, c.SessionMax = 10*time.Minute, time.Hour })
	b := e.browser(t)
	b.setup()
	poll := func() page {
		req := httptest.NewRequest(http.MethodGet, "/partials/agents", nil)
		req.Header.Set("HX-Request", "true")
		return b.do(req)
	}
	for i := range 2 {
		e.clock.Advance(4 * time.Minute)
		if p := poll(); p.Code != http.StatusOK {
			t.Fatalf("poll %d: HTTP %d", i, p.Code)
		}
	}
	e.clock.Advance(3 * time.Minute) // 11 minutes without a page
	p := poll()
	if p.Code != http.StatusNoContent || p.Resp.Header.Get("HX-Redirect") != "/login?next=%2F" {
		t.Fatalf("poll after the idle time: HTTP %d HX-Redirect %q", p.Code, p.Resp.Header.Get("HX-Redirect"))
	}
}
