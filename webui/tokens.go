package webui

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// tokensData is the agent tokens page's data.
type tokensData struct {
	Tokens      []tokenView
	SetupTokens []setupTokenView
	Agents      []agentView
	// Duplicates are refused second connections of a live token, newest
	// first, from the audit log.
	Duplicates []auditView
	// Secret is a token just created: shown once.
	Secret *shownSecret
}

// shownSecret is a secret shown once, with what it is.
type shownSecret struct {
	Kind, Name, Value, Note string
}

// auditDuplicate is the gateway's audit action for a refused duplicate
// connection.
const auditDuplicate = "agent.duplicate_connection"

// shownDuplicate bounds the duplicate connections listed.
const shownDuplicate = 50

func (u *UI) loadTokens(c *gin.Context) (tokensData, error) {
	var d tokensData
	if err := u.api(c, http.MethodGet, "/api/tokens", nil, &d.Tokens); err != nil {
		return d, err
	}
	slices.SortFunc(d.Tokens, func(a, b tokenView) int { return b.CreatedAt.Compare(a.CreatedAt) })
	if err := u.api(c, http.MethodGet, "/api/v1/agents", nil, &d.Agents); err != nil {
		return d, err
	}
	if err := u.api(c, http.MethodGet, "/api/setup-tokens", nil, &d.SetupTokens); err != nil {
		return d, err
	}
	q := url.Values{"kind": {auditDuplicate}, "order": {"newest"}, "limit": {strconv.Itoa(shownDuplicate)}}
	if err := u.api(c, http.MethodGet, "/api/audit?"+q.Encode(), nil, &d.Duplicates); err != nil {
		return d, err
	}
	return d, nil
}

func (u *UI) tokensPage(c *gin.Context) {
	d, err := u.loadTokens(c)
	if err != nil {
		u.fail(c, err)
		return
	}
	u.render(c, http.StatusOK, "tokens", pageData{Title: "Agent tokens", Nav: "tokens", Data: d,
		Form: map[string]string{"ttl_hours": "24", "max_uses": "1"}})
}

// tokensResult renders the tokens page after an action.
func (u *UI) tokensResult(c *gin.Context, code int, data pageData, secret *shownSecret) {
	d, err := u.loadTokens(c)
	if err != nil {
		u.fail(c, err)
		return
	}
	d.Secret = secret
	data.Title, data.Nav, data.Data = "Agent tokens", "tokens", d
	if data.Form == nil {
		data.Form = map[string]string{}
	}
	for k, v := range map[string]string{"ttl_hours": "24", "max_uses": "1"} {
		if data.Form[k] == "" {
			data.Form[k] = v
		}
	}
	u.render(c, code, "tokens", data)
}

func (u *UI) createAgentToken(c *gin.Context) {
	agent := strings.TrimSpace(c.PostForm("agent_id"))
	form := map[string]string{"agent_id": agent}
	if agent == "" {
		u.tokensResult(c, http.StatusUnprocessableEntity, pageData{Form: form, Errors: map[string]string{"agent_id": "Name the agent the token is for."}}, nil)
		return
	}
	var created struct {
		AgentID string `json:"agent_id"`
		TokenID uint64 `json:"token_id"`
		Token   string `json:"token"`
	}
	if err := u.api(c, http.MethodPost, "/api/tokens", map[string]string{"agent_id": agent}, &created); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
			u.tokensResult(c, http.StatusUnprocessableEntity, pageData{Form: form, Errors: map[string]string{"agent_id": upperFirst(ae.Message) + "."}}, nil)
			return
		}
		u.fail(c, err)
		return
	}
	u.tokensResult(c, http.StatusCreated, pageData{Notice: "Agent token created."}, &shownSecret{Kind: "Agent token",
		Name: fmt.Sprintf("token %d for %s", created.TokenID, created.AgentID), Value: created.Token,
		Note: "Give it to the agent (CAIRN_AGENT_TOKEN or token = in agent.conf). It is shown only now."})
}

func (u *UI) createSetupToken(c *gin.Context) {
	form := map[string]string{"label": strings.TrimSpace(c.PostForm("label")),
		"ttl_hours": strings.TrimSpace(c.PostForm("ttl_hours")), "max_uses": strings.TrimSpace(c.PostForm("max_uses"))}
	errs := map[string]string{}
	if n := utf8.RuneCountInString(form["label"]); n == 0 || n > 100 {
		errs["label"] = "Enter a label of 1 to 100 characters (what the token is for)."
	}
	hours, err := strconv.Atoi(form["ttl_hours"])
	if err != nil || hours < 1 || hours > 24*90 {
		errs["ttl_hours"] = "Enter a whole number of hours from 1 to 2160 (90 days)."
	}
	uses, err := strconv.Atoi(form["max_uses"])
	if err != nil || uses < 1 || uses > 10000 {
		errs["max_uses"] = "Enter a whole number from 1 to 10000."
	}
	if len(errs) > 0 {
		u.tokensResult(c, http.StatusUnprocessableEntity, pageData{Form: form, Errors: errs}, nil)
		return
	}
	var created struct {
		ID        string    `json:"id"`
		Token     string    `json:"setup_token"`
		ExpiresAt time.Time `json:"expires_at"`
		MaxUses   int       `json:"max_uses"`
	}
	body := map[string]any{"label": form["label"], "ttl_seconds": hours * 3600, "max_uses": uses}
	if err := u.api(c, http.MethodPost, "/api/setup-tokens", body, &created); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
			u.tokensResult(c, http.StatusUnprocessableEntity, pageData{Form: form, Message: "The appliance refused the setup token: " + ae.Message}, nil)
			return
		}
		u.fail(c, err)
		return
	}
	u.tokensResult(c, http.StatusCreated, pageData{Notice: "Setup token created."}, &shownSecret{Kind: "Setup token",
		Name: fmt.Sprintf("%s (%s)", form["label"], created.ID), Value: created.Token,
		Note: fmt.Sprintf("For install scripts (CAIRN_SETUP_TOKEN); valid until %s for %d agent(s). It is shown only now.",
			when(created.ExpiresAt), created.MaxUses)})
}

func (u *UI) revokeAgentToken(c *gin.Context) {
	id, err := strconv.ParseUint(c.Param("id"), 10, 64)
	if err != nil {
		u.notFound(c)
		return
	}
	if err := u.api(c, http.MethodPost, "/api/tokens/"+strconv.FormatUint(id, 10)+"/revoke", nil, nil); err != nil {
		u.tokensResult(c, http.StatusConflict, pageData{Message: "Revoking failed: " + err.Error()}, nil)
		return
	}
	u.tokensResult(c, http.StatusOK, pageData{Notice: fmt.Sprintf("Token %d revoked; its live connection, if any, is closed.", id)}, nil)
}

// setupTokenID is the public part of a setup token.
var setupTokenID = regexp.MustCompile(`^[0-9A-Za-z]{12}$`)

func (u *UI) revokeSetupToken(c *gin.Context) {
	id := c.Param("id")
	if !setupTokenID.MatchString(id) {
		u.notFound(c)
		return
	}
	var st setupTokenView
	if err := u.api(c, http.MethodPost, "/api/setup-tokens/"+id+"/revoke", nil, &st); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			u.notFound(c)
			return
		}
		u.tokensResult(c, http.StatusConflict, pageData{Message: "Revoking failed: " + err.Error()}, nil)
		return
	}
	u.tokensResult(c, http.StatusOK, pageData{Notice: fmt.Sprintf("Setup token %s (%s) revoked: it enrols no more agents; the agents it enrolled keep their tokens.", st.Label, st.ID)}, nil)
}

// API tokens for scripts.

// apiTokenPrefix starts every API token, so that it is recognizable in a
// secret scanner.
const apiTokenPrefix = "cairn_api_"

// newAPIToken makes an API token: the record to store (the secret's
// SHA-256 only) and the secret, cairn_api_<id>_<43 base64url characters>,
// to show once.
func (u *UI) newAPIToken(name, by string) (APIToken, string) {
	id := hex.EncodeToString(randomBytes(4))
	secret := apiTokenPrefix + id + "_" + randomToken(32)
	return APIToken{ID: id, Name: name, Hash: sha256Hex(secret), CreatedAt: u.cfg.Now().UTC(), CreatedBy: by}, secret
}

// scriptTokens counts the API tokens made on the API tokens page: the
// command line's (Local) is not one of them.
func scriptTokens(ts []APIToken) int {
	n := 0
	for _, t := range ts {
		if !t.Local {
			n++
		}
	}
	return n
}

// maxAPITokens bounds the API tokens made on the API tokens page.
const maxAPITokens = 100

type apiTokensData struct {
	Tokens []APIToken
	Secret *shownSecret
}

func (u *UI) apiTokensResult(c *gin.Context, code int, data pageData, secret *shownSecret) {
	st, err := u.cfg.Store.Load(c.Request.Context())
	if err != nil {
		u.fail(c, fmt.Errorf("load API tokens: %w", err))
		return
	}
	slices.SortFunc(st.APITokens, func(a, b APIToken) int { return b.CreatedAt.Compare(a.CreatedAt) })
	data.Title, data.Nav, data.Data = "API tokens", "apitokens", apiTokensData{Tokens: st.APITokens, Secret: secret}
	u.render(c, code, "apitokens", data)
}

func (u *UI) apiTokensPage(c *gin.Context) { u.apiTokensResult(c, http.StatusOK, pageData{}, nil) }

var errTooManyTokens = fmt.Errorf("there are %d API tokens already; revoke one first", maxAPITokens)

func (u *UI) createAPIToken(c *gin.Context) {
	name := strings.TrimSpace(c.PostForm("name"))
	if n := utf8.RuneCountInString(name); n == 0 || n > 64 {
		u.apiTokensResult(c, http.StatusUnprocessableEntity, pageData{Form: map[string]string{"name": name},
			Errors: map[string]string{"name": "Enter a name of 1 to 64 characters (which script uses it)."}}, nil)
		return
	}
	tok, secret := u.newAPIToken(name, authOf(c).User)
	err := u.cfg.Store.Update(c.Request.Context(), func(st *State) error {
		if scriptTokens(st.APITokens) >= maxAPITokens {
			return errTooManyTokens
		}
		st.APITokens = append(st.APITokens, tok)
		return nil
	})
	if errors.Is(err, errTooManyTokens) {
		u.apiTokensResult(c, http.StatusConflict, pageData{Message: upperFirst(err.Error()) + "."}, nil)
		return
	}
	if err != nil {
		u.fail(c, fmt.Errorf("store API token: %w", err))
		return
	}
	u.log.Info("webui: API token created", "token", tok.ID, "name", name, "user", authOf(c).User)
	u.apiTokensResult(c, http.StatusCreated, pageData{Notice: "API token created."}, &shownSecret{Kind: "API token", Name: name + " (" + tok.ID + ")",
		Value: secret, Note: "Scripts send it as: Authorization: Bearer <token>. It is shown only now."})
}

func (u *UI) revokeAPIToken(c *gin.Context) {
	id := c.Param("id")
	found := false
	err := u.cfg.Store.Update(c.Request.Context(), func(st *State) error {
		st.APITokens = slices.DeleteFunc(st.APITokens, func(t APIToken) bool {
			found = found || t.ID == id
			return t.ID == id
		})
		return nil
	})
	if err != nil {
		u.fail(c, fmt.Errorf("revoke API token: %w", err))
		return
	}
	if !found {
		u.notFound(c)
		return
	}
	u.log.Info("webui: API token revoked", "token", id, "user", authOf(c).User)
	u.apiTokensResult(c, http.StatusOK, pageData{Notice: "API token " + id + " revoked."}, nil)
}
