package webui

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// pageData is what every template gets.
type pageData struct {
	Title string
	// User and CSRF come from the session (CSRF is the pre-session token
	// on the setup and login pages).
	User, CSRF string
	// Nav names the current navigation entry.
	Nav string
	// Message is a page-level message; Notice a success message.
	Message, Notice string
	// Errors are per field messages and Form the submitted values,
	// by field name.
	Errors map[string]string
	Form   map[string]string
	Next   string
	// Data is the page's own data.
	Data any
}

// pageNames are the templates/<name>.html files that are pages.
var pageNames = []string{"setup", "login", "error", "dashboard", "wizard", "pairing", "settings", "tokens", "apitokens", "agent", "unpair", "audit", "mismatch"}

var funcs = template.FuncMap{
	"ago":   ago,
	"when":  when,
	"join":  strings.Join,
	"bytes": humanBytes,
	// size is bytes for a signed count (the API's int64 sizes).
	"size": func(n int64) string { return humanBytes(uint64(max(n, 0))) },
	"hours": func() []int {
		h := make([]int, 24)
		for i := range h {
			h[i] = i
		}
		return h
	},
	// days are the grid's rows, Monday first.
	"days": func() []time.Weekday {
		return []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday, time.Sunday}
	},
	"weekday":    func(d time.Weekday) int { return int(d) },
	"keepFields": func() any { return keepFields },
	"short": func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		return s[:n] + "…"
	},
	// dict makes the argument map of a sub-template: key, value, ...
	"dict": func(kv ...any) (map[string]any, error) {
		if len(kv)%2 != 0 {
			return nil, errors.New("dict: odd number of arguments")
		}
		m := make(map[string]any, len(kv)/2)
		for i := 0; i < len(kv); i += 2 {
			k, ok := kv[i].(string)
			if !ok {
				return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
			}
			m[k] = kv[i+1]
		}
		return m, nil
	},
}

func parsePages() (map[string]*template.Template, error) {
	pages := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS,
			"templates/layout.html", "templates/partials.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// render writes the page, or, with block, one named template of it (an
// htmx fragment).
func (u *UI) renderBlock(c *gin.Context, code int, page, block string, data pageData) {
	a := authOf(c)
	if data.User == "" {
		data.User = a.User
	}
	if data.CSRF == "" {
		data.CSRF = a.CSRF
	}
	if block == "layout.html" && data.Notice == "" {
		data.Notice = u.takeFlash(c)
	}
	var buf bytes.Buffer
	if err := u.pages[page].ExecuteTemplate(&buf, block, data); err != nil {
		u.log.Error("webui: render", "page", page, "block", block, "err", err)
		c.AbortWithStatus(http.StatusInternalServerError)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.Data(code, "text/html; charset=utf-8", buf.Bytes())
}

func (u *UI) render(c *gin.Context, code int, page string, data pageData) {
	u.renderBlock(c, code, page, "layout.html", data)
}

// fail logs err and shows it on an error page.
func (u *UI) fail(c *gin.Context, err error) {
	u.log.Error("webui: request failed", "method", c.Request.Method, "path", c.Request.URL.Path, "err", err)
	u.render(c, http.StatusInternalServerError, "error", pageData{Title: "Something went wrong", Message: err.Error()})
	c.Abort()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
