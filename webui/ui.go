package webui

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

//go:generate sh static/update.sh

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/*.js static/*.css
var staticFS embed.FS

// Config is what the UI works with.
type Config struct {
	// API is the appliance's HTTP handler (appliance.Handler): the UI
	// calls it in process for every read and action, and serves it
	// under /api/ (authenticated) and /healthz (open).
	API http.Handler
	// Store keeps the admin account, sessions and API tokens.
	Store Store
	// Secure marks cookies Secure (and names them __Host-...): set it
	// when the UI is served over TLS.
	Secure bool
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// SessionIdle ends a session not used for this long (default 30
	// minutes); SessionMax ends any session this long after login
	// (default 12 hours).
	SessionIdle, SessionMax time.Duration
	// LoginFailures failed logins per client address, and per user name,
	// within LoginWindow block further attempts until the window has
	// passed (defaults 5 and 5 minutes).
	LoginFailures int
	LoginWindow   time.Duration
}

// UI is the web interface.
type UI struct {
	cfg   Config
	log   *slog.Logger
	pages map[string]*template.Template
	// argon are the parameters of new password hashes.
	argon argonParams
	// byIP and byUser count failed logins.
	byIP, byUser *limiter
}

var ginMode sync.Once

// New checks the configuration and parses the templates.
func New(cfg Config) (*UI, error) {
	if cfg.API == nil || cfg.Store == nil {
		return nil, errors.New("webui: API and Store are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 30 * time.Minute
	}
	if cfg.SessionMax <= 0 {
		cfg.SessionMax = 12 * time.Hour
	}
	if cfg.LoginFailures <= 0 {
		cfg.LoginFailures = 5
	}
	if cfg.LoginWindow <= 0 {
		cfg.LoginWindow = 5 * time.Minute
	}
	pages, err := parsePages()
	if err != nil {
		return nil, fmt.Errorf("webui: %w", err)
	}
	ginMode.Do(func() { gin.SetMode(gin.ReleaseMode) })
	return &UI{cfg: cfg, log: cfg.Logger, pages: pages, argon: defaultArgon,
		byIP:   newLimiter(cfg.LoginFailures, cfg.LoginWindow),
		byUser: newLimiter(cfg.LoginFailures, cfg.LoginWindow)}, nil
}

// Handler serves the pages, the static files, /healthz (open) and the
// REST API under /api/ (authenticated). Mount it at the root of the
// appliance's HTTP listener.
func (u *UI) Handler() http.Handler {
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.Use(u.recover, securityHeaders, limitBody)

	static, _ := fs.Sub(staticFS, "static")
	r.GET("/static/*file", func(c *gin.Context) {
		// Files only: no directory listing.
		name := strings.TrimPrefix(c.Param("file"), "/")
		if fi, err := fs.Stat(static, name); err != nil || fi.IsDir() || !fs.ValidPath(name) {
			u.notFound(c)
			return
		}
		c.Header("Cache-Control", "public, max-age=3600")
		c.FileFromFS(name, http.FS(static))
	})
	r.GET("/healthz", gin.WrapH(u.cfg.API))
	r.Any("/api/*path", u.apiAuth, stripCredentials, gin.WrapH(u.cfg.API))

	r.GET("/setup", u.setupPage)
	r.POST("/setup", u.setupSubmit)
	r.GET("/login", u.loginPage)
	r.POST("/login", u.loginSubmit)

	p := r.Group("/", u.requireSession)
	p.POST("/logout", u.logout)
	p.GET("/", u.dashboard)
	p.GET("/partials/agents", u.agentsPartial)
	p.GET("/agents/new", u.wizardPage)
	p.POST("/agents/new", u.wizardSubmit)
	p.GET("/agents/:id", u.agentPage)
	p.GET("/agents/:id/progress", u.agentProgress)
	p.GET("/agents/:id/records", u.agentRecords)
	p.POST("/agents/:id/backups", u.agentBackup)
	p.POST("/agents/:id/points/:snap/verify", u.pointVerify)
	p.POST("/agents/:id/points/:snap/volumes/:vol/nbd", u.nbdStart)
	p.POST("/agents/:id/points/:snap/volumes/:vol/nbd/stop", u.nbdStop)
	p.GET("/agents/:id/unpair", u.unpairPage)
	p.POST("/agents/:id/unpair", u.unpairSubmit)
	p.GET("/agents/:id/settings", u.settingsPage)
	p.POST("/agents/:id/settings", u.settingsSubmit)
	p.GET("/pairings/:id", u.pairingPage)
	p.GET("/pairings/:id/steps", u.pairingSteps)
	p.POST("/pairings/:id/retry", u.pairingRetry)
	p.POST("/pairings/:id/confirm-fingerprint", u.confirmFingerprint)
	p.GET("/pairings/:id/mismatch", u.mismatchPage)
	p.POST("/pairings/:id/unpair", u.unpairMismatch)
	p.GET("/tokens", u.tokensPage)
	p.POST("/tokens/agent", u.createAgentToken)
	p.POST("/tokens/setup", u.createSetupToken)
	p.POST("/tokens/:id/revoke", u.revokeAgentToken)
	p.POST("/setup-tokens/:id/revoke", u.revokeSetupToken)
	p.GET("/audit", u.auditPage)
	p.GET("/api-tokens", u.apiTokensPage)
	p.POST("/api-tokens", u.createAPIToken)
	p.POST("/api-tokens/:id/revoke", u.revokeAPIToken)
	r.NoRoute(u.notFound)
	return r
}

// recover turns a panic into a 500 page, logging it without the request's
// headers or body (they may hold secrets).
func (u *UI) recover(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			u.log.Error("webui: panic", "path", c.Request.URL.Path, "panic", fmt.Sprint(v))
			c.AbortWithStatus(http.StatusInternalServerError)
		}
	}()
	c.Next()
}

// securityHeaders forbid framing, inline scripts and styles, and sniffing.
func securityHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	c.Next()
}

// actorHeader tells the API who a request acts for, for its audit log
// (appliance.ActorHeader): the UI sets it on every request it passes on,
// after deleting any the client sent.
const actorHeader = "X-Cairn-Actor"

// stripCredentials keeps the UI's cookies and the bearer token from the
// API handler, which does not need them and must not log them, and says
// who the request acts for instead.
func stripCredentials(c *gin.Context) {
	c.Request.Header.Del("Authorization")
	c.Request.Header.Del("Cookie")
	c.Request.Header.Del(actorHeader)
	if a := authOf(c).Actor; a != "" {
		c.Request.Header.Set(actorHeader, a)
	}
	c.Next()
}

// maxFormBody bounds the body of a page's form.
const maxFormBody = 1 << 20

func limitBody(c *gin.Context) {
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, maxFormBody)
	c.Next()
}

func (u *UI) notFound(c *gin.Context) {
	u.render(c, http.StatusNotFound, "error", pageData{Title: "Not found", Message: "There is no page at this address."})
}
