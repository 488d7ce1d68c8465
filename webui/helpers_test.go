package webui

import (
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/appliance"
	"github.com/cairnbackup/cairn/appliance/appliancetest"
	"github.com/cairnbackup/cairn/internal/testclock"
	"github.com/gin-gonic/gin"
)

// testArgon keeps password hashing cheap in tests; TestPasswordDefaults
// checks the real parameters.
var testArgon = argonParams{Memory: 1024, Time: 1, Threads: 1}

type env struct {
	ui    *UI
	h     http.Handler
	store *FileStore
	clock *testclock.Clock
	app   *appliance.Appliance
}

// newAppliance starts a real appliance on a temporary data directory;
// pairing's Resolve step asks a closed loopback port, so it fails fast
// and never asks the machine's resolvers.
func newAppliance(t *testing.T) *appliance.Appliance {
	t.Helper()
	return appliancetest.New(t, appliance.Config{})
}

// newEnv makes a UI over api (nil: a real appliance's handler).
func newEnv(t *testing.T, api http.Handler, mod ...func(*Config)) *env {
	t.Helper()
	e := &env{clock: testclock.New(time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC))}
	if api == nil {
		e.app = newAppliance(t)
		api = e.app.Handler()
	}
	var err error
	if e.store, err = OpenFileStore(filepath.Join(t.TempDir(), "webui.json")); err != nil {
		t.Fatal(err)
	}
	cfg := Config{API: api, Store: e.store, Now: e.clock.Now}
	for _, m := range mod {
		m(&cfg)
	}
	if e.ui, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	e.ui.argon = testArgon
	e.h = e.ui.Handler()
	return e
}

// browser sends requests to the handler in process, keeping cookies.
type browser struct {
	t    *testing.T
	h    http.Handler
	jar  *cookiejar.Jar
	addr string // RemoteAddr
	// site is the URL the cookies belong to: https for Secure cookies.
	site *url.URL
	// csrf is the last CSRF token seen in a page.
	csrf string
}

func (e *env) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, h: e.h, jar: jar, addr: "127.0.0.1:50000", site: base}
}

var base, _ = url.Parse("http://cairn.test/")

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

type page struct {
	Code int
	Body string
	Resp *http.Response
}

func (p page) Location() string { return p.Resp.Header.Get("Location") }

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	req.RemoteAddr = b.addr
	for _, c := range b.jar.Cookies(b.site) {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	b.h.ServeHTTP(rec, req)
	resp := rec.Result()
	b.jar.SetCookies(b.site, resp.Cookies())
	body, _ := io.ReadAll(resp.Body)
	p := page{Code: resp.StatusCode, Body: string(body), Resp: resp}
	if m := csrfRE.FindStringSubmatch(p.Body); m != nil {
		b.csrf = html.UnescapeString(m[1])
	}
	return p
}

func (b *browser) get(path string) page {
	b.t.Helper()
	req := httptest.NewRequest(http.MethodGet, base.ResolveReference(&url.URL{Path: pathOnly(path), RawQuery: query(path)}).String(), nil)
	return b.do(req)
}

func pathOnly(p string) string { s, _, _ := strings.Cut(p, "?"); return s }
func query(p string) string    { _, q, _ := strings.Cut(p, "?"); return q }

// post sends a form with the browser's CSRF token (unless the form sets
// csrf itself).
func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.csrf)
	}
	req := httptest.NewRequest(http.MethodPost, base.ResolveReference(&url.URL{Path: path}).String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

const (
	testUser     = "admin"
	testPassword = "correct horse battery"
)

// setup creates the admin through the setup page and leaves b logged in.
func (b *browser) setup() {
	b.t.Helper()
	b.get("/setup")
	p := b.post("/setup", url.Values{"username": {testUser}, "password": {testPassword}, "confirm": {testPassword}})
	if p.Code != http.StatusSeeOther || p.Location() != "/" {
		b.t.Fatalf("setup: HTTP %d to %q\n%s", p.Code, p.Location(), p.Body)
	}
	b.get("/") // for the session's CSRF token
}

// login logs b in.
func (b *browser) login(user, pass string) page {
	b.t.Helper()
	b.get("/login")
	return b.post("/login", url.Values{"username": {user}, "password": {pass}, "next": {"/"}})
}

func mustContain(t *testing.T, what, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("%s does not contain %q", what, w)
		}
	}
}

func mustNotContain(t *testing.T, what, body string, bad ...string) {
	t.Helper()
	for _, w := range bad {
		if strings.Contains(body, w) {
			t.Errorf("%s contains %q", what, w)
		}
	}
}

// regexpFind returns the first group of re's first match in s, or "".
func regexpFind(re, s string) string {
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

// ginContext is a gin context for calling the UI's API client in tests.
func ginContext(t *testing.T) *gin.Context {
	t.Helper()
	c, _ := gin.CreateTestContext(httptest.NewRecorder())
	c.Request = httptest.NewRequest(http.MethodGet, "/", nil)
	return c
}
