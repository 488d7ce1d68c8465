package webui

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
)

// auditPageSize is how many events the audit page shows by default.
const auditPageSize = 100

// auditData is the audit page's data.
type auditData struct {
	Events []auditRow
	// Older is the address of the next page (older events); "" on the last.
	Older string
	// Filtered is set when a filter is in use.
	Filtered bool
}

// auditRow is an event with its actor put in words.
type auditRow struct {
	auditView
	Who, WhoDetail string
}

// actorWords puts an audit actor in words: the admin of the web UI, an
// API token by its name, or a part of the appliance.
func actorWords(actor string, tokenNames map[string]string) (who, detail string) {
	kind, name, _ := strings.Cut(actor, ":")
	switch {
	case kind == "user" && name != "":
		return name, "web UI"
	case kind == "api-token" && name != "":
		if n, ok := tokenNames[name]; ok {
			return "API token " + n, name
		}
		return "API token " + name, "revoked"
	case actor == "api":
		return "API", "no user named"
	case actor == "":
		return "—", ""
	}
	return actor, "appliance"
}

// auditQuery turns the page's filter form into the API's query, checking
// what the page can check; the API checks the rest.
func auditQuery(form map[string]string) (url.Values, map[string]string) {
	q := url.Values{"order": {"newest"}, "limit": {strconv.Itoa(auditPageSize)}}
	errs := map[string]string{}
	if v := form["kind"]; v != "" {
		q.Set("kind", v)
	}
	if v := form["agent"]; v != "" {
		q.Set("agent", v)
	}
	if v := form["limit"]; v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 1000 {
			errs["limit"] = "Enter a number from 1 to 1000."
		} else {
			q.Set("limit", v)
		}
	}
	if v := form["before"]; v != "" {
		if n, err := strconv.ParseUint(v, 10, 64); err != nil || n == 0 {
			errs["before"] = "Not an event number."
		} else {
			q.Set("before", v)
		}
	}
	return q, errs
}

func (u *UI) auditPage(c *gin.Context) {
	form := map[string]string{}
	for _, k := range []string{"kind", "agent", "limit", "before"} {
		form[k] = strings.TrimSpace(c.Query(k))
	}
	data := pageData{Title: "Audit log", Nav: "audit", Form: form}
	q, errs := auditQuery(form)
	if len(errs) > 0 {
		data.Errors, data.Data = errs, auditData{}
		u.render(c, http.StatusUnprocessableEntity, "audit", data)
		return
	}
	var events []auditView
	if err := u.api(c, http.MethodGet, "/api/audit?"+q.Encode(), nil, &events); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
			data.Message, data.Data = "The filter was refused: "+strings.TrimPrefix(ae.Message, "bad request: ")+".", auditData{}
			u.render(c, http.StatusUnprocessableEntity, "audit", data)
			return
		}
		u.fail(c, err)
		return
	}
	st, err := u.cfg.Store.Load(c.Request.Context())
	if err != nil {
		u.fail(c, err)
		return
	}
	names := make(map[string]string, len(st.APITokens))
	for _, t := range st.APITokens {
		names[t.ID] = t.Name
	}
	d := auditData{Filtered: form["kind"] != "" || form["agent"] != ""}
	for _, e := range events {
		who, detail := actorWords(e.Actor, names)
		d.Events = append(d.Events, auditRow{auditView: e, Who: who, WhoDetail: detail})
	}
	limit, _ := strconv.Atoi(q.Get("limit"))
	if n := len(events); n > 0 && n == limit && events[n-1].Seq > 1 {
		older := url.Values{"before": {strconv.FormatUint(events[n-1].Seq, 10)}}
		for _, k := range []string{"kind", "agent", "limit"} {
			if form[k] != "" {
				older.Set(k, form[k])
			}
		}
		d.Older = "/audit?" + older.Encode()
	}
	data.Data = d
	u.render(c, http.StatusOK, "audit", data)
}
