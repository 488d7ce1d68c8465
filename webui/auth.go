package webui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// Cookie and header names.
const (
	csrfHeader = "X-CSRF-Token"
	csrfField  = "csrf"
	// maxSessions bounds the stored sessions; the oldest go first.
	maxSessions = 64
	// touchEvery is how stale a session's last use may get in the store
	// before a request writes it again.
	touchEvery = time.Minute
)

func (u *UI) sessionCookie() string {
	if u.cfg.Secure {
		return "__Host-cairn_session"
	}
	return "cairn_session"
}

// preCookie holds the double-submit CSRF token of the setup and login
// forms, which come before any session.
func (u *UI) preCookie() string {
	if u.cfg.Secure {
		return "__Host-cairn_pre"
	}
	return "cairn_pre"
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return b
}

func randomToken(n int) string { return base64.RawURLEncoding.EncodeToString(randomBytes(n)) }

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// csrfFor derives a session's CSRF token from its secret ID, so it needs
// no storage and is worth nothing without the session.
func csrfFor(sessionID string) string { return sessionMAC(sessionID, "cairn webui csrf") }

// sessionMAC is HMAC-SHA256 keyed by a session's secret ID over msg:
// anyone can check it who has the session, nobody can make it without.
func sessionMAC(sessionID, msg string) string {
	m := hmac.New(sha256.New, []byte(sessionID))
	m.Write([]byte(msg))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func equalSecret(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func (u *UI) setCookie(c *gin.Context, name, value string, maxAge time.Duration, strict bool) {
	ss := http.SameSiteLaxMode
	if strict {
		ss = http.SameSiteStrictMode
	}
	ck := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: u.cfg.Secure, SameSite: ss}
	switch {
	case maxAge < 0:
		ck.MaxAge = -1
	case maxAge > 0:
		ck.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(c.Writer, ck)
}

// authed is what requireSession and apiAuth leave in the gin context.
type authed struct {
	User      string
	SessionID string // "" for an API token
	CSRF      string
	// Actor names who acts, for the appliance's audit log (actorHeader):
	// "user:<name>" for a session, "api-token:<id>" for an API token.
	Actor string
}

const authedKey = "cairn.authed"

func authOf(c *gin.Context) authed {
	a, _ := c.Get(authedKey)
	v, _ := a.(authed)
	return v
}

// pollPaths are the fragments htmx polls by itself: polling them does
// not count as use, so an open dashboard does not keep a session alive.
var pollPaths = map[string]bool{"/partials/agents": true, "/pairings/:id/steps": true,
	"/agents/:id/progress": true, "/agents/:id/records": true}

func passive(c *gin.Context) bool {
	return c.Request.Method == http.MethodGet && isHTMX(c) && pollPaths[c.FullPath()]
}

// session returns the live session of the request's cookie, touching its
// last use unless the request is a poll, or ok false.
func (u *UI) session(c *gin.Context) (id string, s Session, ok bool) {
	ck, err := c.Request.Cookie(u.sessionCookie())
	if err != nil || ck.Value == "" || len(ck.Value) > 128 {
		return "", Session{}, false
	}
	ctx := c.Request.Context()
	st, err := u.cfg.Store.Load(ctx)
	if err != nil {
		u.log.Error("webui: load sessions", "err", err)
		return "", Session{}, false
	}
	if st.Admin == nil {
		return "", Session{}, false
	}
	want := sha256Hex(ck.Value)
	now := u.cfg.Now()
	for _, s := range st.Sessions {
		if !equalSecret(s.IDHash, want) {
			continue
		}
		if now.Sub(s.LastSeen) > u.cfg.SessionIdle || now.Sub(s.CreatedAt) > u.cfg.SessionMax || s.Username != st.Admin.Username {
			u.dropSession(c, want)
			return "", Session{}, false
		}
		if now.Sub(s.LastSeen) > touchEvery && !passive(c) {
			err := u.cfg.Store.Update(ctx, func(st *State) error {
				for i := range st.Sessions {
					if st.Sessions[i].IDHash == want {
						st.Sessions[i].LastSeen = now
					}
				}
				return nil
			})
			if err != nil {
				u.log.Error("webui: touch session", "err", err)
			}
		}
		return ck.Value, s, true
	}
	return "", Session{}, false
}

func (u *UI) dropSession(c *gin.Context, idHash string) {
	err := u.cfg.Store.Update(c.Request.Context(), func(st *State) error {
		out := st.Sessions[:0]
		for _, s := range st.Sessions {
			if s.IDHash != idHash {
				out = append(out, s)
			}
		}
		st.Sessions = out
		return nil
	})
	if err != nil {
		u.log.Error("webui: drop session", "err", err)
	}
}

// startSession stores a new session for user and sets its cookie; it also
// drops expired sessions and, above maxSessions, the oldest.
func (u *UI) startSession(c *gin.Context, user string) error {
	id := randomToken(32)
	now := u.cfg.Now()
	err := u.cfg.Store.Update(c.Request.Context(), func(st *State) error {
		live := st.Sessions[:0]
		for _, s := range st.Sessions {
			if now.Sub(s.LastSeen) <= u.cfg.SessionIdle && now.Sub(s.CreatedAt) <= u.cfg.SessionMax {
				live = append(live, s)
			}
		}
		if len(live) >= maxSessions {
			live = live[len(live)-maxSessions+1:]
		}
		st.Sessions = append(live, Session{IDHash: sha256Hex(id), Username: user, CreatedAt: now, LastSeen: now})
		return nil
	})
	if err != nil {
		return fmt.Errorf("start session: %w", err)
	}
	u.setCookie(c, u.sessionCookie(), id, u.cfg.SessionMax, false)
	return nil
}

func (u *UI) hasAdmin(c *gin.Context) (bool, error) {
	st, err := u.cfg.Store.Load(c.Request.Context())
	if err != nil {
		return false, fmt.Errorf("load admin: %w", err)
	}
	return st.Admin != nil, nil
}

// adminExists answers the request when whether an admin exists is not
// want: to /setup while there is none, to /login once there is one (500
// when the store cannot say). It reports whether the caller goes on.
func (u *UI) adminExists(c *gin.Context, want bool) bool {
	ok, err := u.hasAdmin(c)
	switch {
	case err != nil:
		u.fail(c, err)
		return false
	case ok == want:
		return true
	case want:
		redirect(c, "/setup")
	default:
		redirect(c, "/login")
	}
	return false
}

func isHTMX(c *gin.Context) bool { return c.GetHeader("HX-Request") == "true" }

// redirect sends the browser to path: 303, or HX-Redirect for htmx.
func redirect(c *gin.Context, path string) {
	if isHTMX(c) {
		c.Header("HX-Redirect", path)
		c.AbortWithStatus(http.StatusNoContent)
		return
	}
	c.Redirect(http.StatusSeeOther, path)
	c.Abort()
}

func stateChanging(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// requireSession lets a request with a live session through, checking the
// CSRF token (form field or header) of state-changing requests; others go
// to /setup (no admin yet) or /login.
func (u *UI) requireSession(c *gin.Context) {
	if !u.adminExists(c, true) {
		return
	}
	id, s, ok := u.session(c)
	if !ok {
		next := "/"
		if c.Request.Method == http.MethodGet && !isHTMX(c) {
			next = c.Request.URL.RequestURI()
		}
		redirect(c, "/login?next="+url.QueryEscape(next))
		return
	}
	a := authed{User: s.Username, SessionID: id, CSRF: csrfFor(id), Actor: "user:" + s.Username}
	if stateChanging(c.Request.Method) {
		got := c.GetHeader(csrfHeader)
		if got == "" {
			got = c.PostForm(csrfField)
		}
		if !equalSecret(got, a.CSRF) {
			u.render(c, http.StatusForbidden, "error", pageData{Title: "Refused", Message: "The form was too old or not sent by this site (CSRF token missing or wrong). Reload the page and try again."})
			c.Abort()
			return
		}
	}
	c.Set(authedKey, a)
	c.Next()
}

// apiAuth guards /api/*: a session cookie (with X-CSRF-Token for
// state-changing methods) or an API token as a bearer token.
func (u *UI) apiAuth(c *gin.Context) {
	deny := func(code int, msg string) {
		c.Header("Cache-Control", "no-store")
		c.AbortWithStatusJSON(code, gin.H{"code": "unauthorized", "message": msg})
	}
	if h := c.GetHeader("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || tok == "" || len(tok) > 256 {
			deny(http.StatusUnauthorized, "Authorization: want a Bearer API token")
			return
		}
		user, ok := u.checkAPIToken(c, tok)
		if !ok {
			c.Header("WWW-Authenticate", `Bearer realm="cairn"`)
			deny(http.StatusUnauthorized, "the API token is unknown or revoked")
			return
		}
		c.Set(authedKey, authed{User: user, Actor: user})
		c.Next()
		return
	}
	id, s, ok := u.session(c)
	if !ok {
		c.Header("WWW-Authenticate", `Bearer realm="cairn"`)
		deny(http.StatusUnauthorized, "log in, or send an API token: Authorization: Bearer <token>")
		return
	}
	if stateChanging(c.Request.Method) && !equalSecret(c.GetHeader(csrfHeader), csrfFor(id)) {
		c.Header("Cache-Control", "no-store")
		c.AbortWithStatusJSON(http.StatusForbidden, gin.H{"code": "csrf", "message": "missing or wrong " + csrfHeader + " header"})
		return
	}
	c.Set(authedKey, authed{User: s.Username, SessionID: id, CSRF: csrfFor(id), Actor: "user:" + s.Username})
	c.Next()
}

// checkAPIToken finds the token among the stored hashes, in constant time
// per token, and records its use (at most once a minute). It returns the
// token's actor name, "api-token:<id>".
func (u *UI) checkAPIToken(c *gin.Context, tok string) (string, bool) {
	st, err := u.cfg.Store.Load(c.Request.Context())
	if err != nil {
		u.log.Error("webui: load API tokens", "err", err)
		return "", false
	}
	want := sha256Hex(tok)
	for _, t := range st.APITokens {
		if !equalSecret(t.Hash, want) {
			continue
		}
		now := u.cfg.Now()
		if now.Sub(t.LastUsed) > touchEvery {
			if err := u.cfg.Store.Update(c.Request.Context(), func(st *State) error {
				for i := range st.APITokens {
					if st.APITokens[i].ID == t.ID {
						st.APITokens[i].LastUsed = now
					}
				}
				return nil
			}); err != nil {
				u.log.Error("webui: record API token use", "token", t.ID, "err", err)
			}
		}
		return "api-token:" + t.ID, true
	}
	return "", false
}

// preToken returns the double-submit CSRF token of the setup and login
// forms, setting its cookie when there is none.
func (u *UI) preToken(c *gin.Context) string {
	if ck, err := c.Request.Cookie(u.preCookie()); err == nil && len(ck.Value) >= 32 && len(ck.Value) <= 64 {
		return ck.Value
	}
	t := randomToken(32)
	u.setCookie(c, u.preCookie(), t, 0, true)
	return t
}

func (u *UI) preTokenOK(c *gin.Context) bool {
	ck, err := c.Request.Cookie(u.preCookie())
	return err == nil && ck.Value != "" && equalSecret(c.PostForm(csrfField), ck.Value)
}

// setupForm is the first-start form.
type setupForm struct {
	Username, Password, Confirm string
}

func (f setupForm) validate() map[string]string {
	errs := map[string]string{}
	switch {
	case f.Username == "":
		errs["username"] = "Choose a user name."
	case len(f.Username) > 64 || !utf8.ValidString(f.Username) || strings.IndexFunc(f.Username, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}) >= 0:
		// As the appliance's audit log requires of an actor's name.
		errs["username"] = "Use up to 64 characters without spaces."
	}
	switch n := utf8.RuneCountInString(f.Password); {
	case n < MinPasswordLen:
		errs["password"] = fmt.Sprintf("Use at least %d characters.", MinPasswordLen)
	case len(f.Password) > maxPasswordLen:
		errs["password"] = fmt.Sprintf("Use at most %d bytes.", maxPasswordLen)
	}
	if f.Confirm != f.Password {
		errs["confirm"] = "The two passwords differ."
	}
	return errs
}

func (u *UI) setupPage(c *gin.Context) {
	if !u.adminExists(c, false) {
		return
	}
	u.render(c, http.StatusOK, "setup", pageData{Title: "Create the administrator", CSRF: u.preToken(c)})
}

var errAdminExists = errors.New("an administrator exists already")

func (u *UI) setupSubmit(c *gin.Context) {
	if !u.adminExists(c, false) {
		return
	}
	if !u.preTokenOK(c) {
		u.render(c, http.StatusForbidden, "setup", pageData{Title: "Create the administrator", CSRF: u.preToken(c),
			Message: "The form expired. Please fill it in again."})
		return
	}
	f := setupForm{Username: strings.TrimSpace(c.PostForm("username")), Password: c.PostForm("password"), Confirm: c.PostForm("confirm")}
	if errs := f.validate(); len(errs) > 0 {
		u.render(c, http.StatusUnprocessableEntity, "setup", pageData{Title: "Create the administrator", CSRF: u.preToken(c),
			Errors: errs, Form: map[string]string{"username": f.Username}})
		return
	}
	hash, err := hashPassword(f.Password, u.argon)
	if err != nil {
		u.fail(c, err)
		return
	}
	err = u.cfg.Store.Update(c.Request.Context(), func(st *State) error {
		if st.Admin != nil {
			return errAdminExists
		}
		st.Admin = &Admin{Username: f.Username, PasswordHash: hash, CreatedAt: u.cfg.Now().UTC()}
		return nil
	})
	if errors.Is(err, errAdminExists) {
		redirect(c, "/login")
		return
	}
	if err != nil {
		u.fail(c, fmt.Errorf("create admin: %w", err))
		return
	}
	u.log.Info("webui: administrator created", "user", f.Username)
	if err := u.startSession(c, f.Username); err != nil {
		u.fail(c, err)
		return
	}
	redirect(c, "/")
}

func (u *UI) loginPage(c *gin.Context) {
	if !u.adminExists(c, true) {
		return
	}
	u.render(c, http.StatusOK, "login", pageData{Title: "Log in", CSRF: u.preToken(c), Next: safeNext(c.Query("next"))})
}

// safeNext keeps a post-login destination on this site: a path that
// starts with one '/', without a scheme, host, backslash or control
// character (browsers drop tabs and newlines, so "/\t/evil.example"
// would become "//evil.example").
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || len(next) > 512 || strings.ContainsRune(next, '\\') {
		return "/"
	}
	for _, r := range next {
		if r < ' ' || r == 0x7f || unicode.IsControl(r) || unicode.IsSpace(r) {
			return "/"
		}
	}
	if u, err := url.Parse(next); err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "/"
	}
	return next
}

// clientIP is the address the request came from; headers such as
// X-Forwarded-For are not trusted.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// dummyHash is checked for unknown user names, so that a wrong name costs
// as long as a wrong password.
var (
	dummyOnce sync.Once
	dummyHash string
)

func (u *UI) loginSubmit(c *gin.Context) {
	st, err := u.cfg.Store.Load(c.Request.Context())
	if err != nil {
		u.fail(c, fmt.Errorf("load admin: %w", err))
		return
	}
	if st.Admin == nil {
		redirect(c, "/setup")
		return
	}
	user, pass := strings.TrimSpace(c.PostForm("username")), c.PostForm("password")
	next := safeNext(c.PostForm("next"))
	data := pageData{Title: "Log in", CSRF: u.preToken(c), Next: next, Form: map[string]string{"username": user}}
	if !u.preTokenOK(c) {
		data.Message = "The form expired. Please log in again."
		u.render(c, http.StatusForbidden, "login", data)
		return
	}
	now := u.cfg.Now()
	ipKey, userKey := clientIP(c.Request), strings.ToLower(user)
	if len(userKey) > 64 {
		userKey = userKey[:64]
	}
	if wait := max(u.byIP.blocked(ipKey, now), u.byUser.blocked(userKey, now)); wait > 0 {
		mins := int((wait + time.Minute - 1) / time.Minute)
		c.Header("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		data.Message = fmt.Sprintf("Too many failed logins. Wait %d minute(s), then try again.", mins)
		u.render(c, http.StatusTooManyRequests, "login", data)
		return
	}
	good, nameOK := false, equalSecret(user, st.Admin.Username)
	if len(pass) <= maxPasswordLen {
		hash := st.Admin.PasswordHash
		if !nameOK {
			dummyOnce.Do(func() { dummyHash, _ = hashPassword("not the password", u.argon) })
			hash = dummyHash
		}
		match, err := checkPassword(pass, hash)
		if err != nil {
			u.fail(c, fmt.Errorf("check password: %w", err))
			return
		}
		good = nameOK && match
	}
	if !good {
		u.byIP.fail(ipKey, now)
		u.byUser.fail(userKey, now)
		logged := "(unknown)" // a mistyped name may be a password
		if nameOK {
			logged = user
		}
		u.log.Warn("webui: failed login", "user", logged, "client", ipKey)
		data.Message = "Wrong user name or password."
		u.render(c, http.StatusUnauthorized, "login", data)
		return
	}
	u.byIP.reset(ipKey)
	u.byUser.reset(userKey)
	if err := u.startSession(c, st.Admin.Username); err != nil {
		u.fail(c, err)
		return
	}
	u.log.Info("webui: login", "user", st.Admin.Username, "client", ipKey)
	redirect(c, next)
}

func (u *UI) logout(c *gin.Context) {
	u.dropSession(c, sha256Hex(authOf(c).SessionID))
	u.setCookie(c, u.sessionCookie(), "", -1, false)
	redirect(c, "/login")
}

// limiter counts failures per key in a sliding window.
type limiter struct {
	max    int
	window time.Duration

	mu    sync.Mutex
	fails map[string][]time.Time
}

// maxLimiterKeys bounds the keys a limiter remembers.
const maxLimiterKeys = 10000

func newLimiter(max int, window time.Duration) *limiter {
	return &limiter{max: max, window: window, fails: make(map[string][]time.Time)}
}

// recent drops the failures of key older than the window.
func (l *limiter) recent(key string, now time.Time) []time.Time {
	ts := l.fails[key]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= l.window {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.fails, key)
	} else {
		l.fails[key] = ts
	}
	return ts
}

// blocked returns how long key must still wait; 0 if it may try.
func (l *limiter) blocked(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.recent(key, now)
	if len(ts) < l.max {
		return 0
	}
	return l.window - now.Sub(ts[len(ts)-l.max])
}

func (l *limiter) fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.fails) >= maxLimiterKeys {
		for k := range l.fails {
			l.recent(k, now)
		}
		if len(l.fails) >= maxLimiterKeys {
			clear(l.fails) // flooded with keys: forget rather than grow
		}
	}
	ts := append(l.recent(key, now), now)
	if len(ts) > l.max {
		ts = ts[len(ts)-l.max:]
	}
	l.fails[key] = ts
}

func (l *limiter) reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, key)
}
