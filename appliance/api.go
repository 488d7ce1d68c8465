package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/gateway"
	"github.com/cairnbackup/cairn/pairing/identity"
)

// The REST API (JSON). It has no authentication yet: the HTTP listener is
// on loopback by default. docs/api.md lists the endpoints.
func (a *Appliance) routeAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/appliance", a.apiAppliance)
	mux.HandleFunc("GET /api/agents", a.apiAgents)
	mux.HandleFunc("POST /api/agents/direct", a.apiPairDirect)
	mux.HandleFunc("GET /api/agents/{id}/hello", a.apiAgentCall)
	mux.HandleFunc("GET /api/agents/{id}/ping", a.apiAgentCall)
	mux.HandleFunc("GET /api/agents/{id}/volumes", a.apiAgentCall)
	mux.HandleFunc("GET /api/agents/{id}/writers", a.apiAgentCall)
	mux.HandleFunc("POST /api/tokens", a.apiCreateToken)
	mux.HandleFunc("GET /api/tokens", a.apiTokens)
	mux.HandleFunc("POST /api/tokens/{id}/revoke", a.apiRevokeToken)
	mux.HandleFunc("POST /api/setup-tokens", a.apiCreateSetupToken)
	mux.HandleFunc("GET /api/setup-tokens", a.apiSetupTokens)
	mux.HandleFunc("POST /api/setup-tokens/{id}/revoke", a.apiRevokeSetupToken)
	mux.HandleFunc("GET /api/audit", a.apiAudit)
}

// apiActor names an API caller that did not say who it acts for.
const apiActor = "api"

// ActorHeader names who an API request acts for, for the audit log:
// "user:<name>" (a web UI session) or "api-token:<id>" (a script with an
// API token). The web UI sets it on every request it passes to the API,
// after deleting any the client sent; the API trusts it, as it trusts
// everything on its listener. A request without it, or with a malformed
// one, is recorded as "api".
const ActorHeader = "X-Cairn-Actor"

// actorOf returns who r acts for (see ActorHeader).
func actorOf(r *http.Request) string {
	v := r.Header.Get(ActorHeader)
	kind, name, ok := strings.Cut(v, ":")
	if !ok || kind != "user" && kind != "api-token" || name == "" || len(v) > 128 || !utf8.ValidString(v) {
		return apiActor
	}
	for _, c := range name {
		if c <= ' ' || unicode.IsSpace(c) || unicode.IsControl(c) {
			return apiActor
		}
	}
	return v
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, catalog.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, catalog.ErrInvalid), errors.Is(err, errBadRequest):
		code = http.StatusBadRequest
	case errors.Is(err, gateway.ErrNotConnected):
		code = http.StatusConflict
	case errors.Is(err, identity.ErrPinMismatch):
		code = http.StatusConflict
	}
	writeJSON(w, code, apiError{Error: err.Error()})
}

var errBadRequest = errors.New("bad request")

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return nil
}

// ApplianceInfo is the body of GET /api/appliance.
type ApplianceInfo struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"`
	Short       string `json:"short"`
	Gateway     string `json:"gateway"`
}

func (a *Appliance) apiAppliance(w http.ResponseWriter, r *http.Request) {
	fp := a.id.Fingerprint()
	writeJSON(w, http.StatusOK, ApplianceInfo{Name: a.cfg.Name, Fingerprint: fp.String(), Short: fp.Short(), Gateway: a.cfg.GatewayListen})
}

// LicenseInfo is an agent's activation as the agents listing shows it.
type LicenseInfo struct {
	KeyID       string    `json:"key_id"`
	Expires     time.Time `json:"expires"`
	ValidatedAt time.Time `json:"validated_at"`
	// State is "valid", "in grace" or "invalid" (checked offline now);
	// Reason says why it is not valid, or warns.
	State      string    `json:"state"`
	Reason     string    `json:"reason,omitempty"`
	GraceUntil time.Time `json:"grace_until,omitzero"`
}

// PairDirectRequest is the body of POST /api/agents/direct.
type PairDirectRequest struct {
	AgentID string `json:"agent_id"`
	Address string `json:"address"` // host:port of the agent's listener
	// Fingerprint, if set, is the agent key the operator read on the agent.
	Fingerprint string `json:"fingerprint,omitempty"`
}

func (a *Appliance) apiPairDirect(w http.ResponseWriter, r *http.Request) {
	var req PairDirectRequest
	if err := readJSON(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	var expect identity.Fingerprint
	if req.Fingerprint != "" {
		fp, err := identity.ParseFingerprint(req.Fingerprint)
		if err != nil {
			writeErr(w, fmt.Errorf("%w: fingerprint: %v", errBadRequest, err))
			return
		}
		expect = fp
	}
	st, err := a.gw.PairDirect(r.Context(), req.AgentID, req.Address, expect, actorOf(r))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// apiAgentCall runs one agent API call on a connected agent.
func (a *Appliance) apiAgentCall(w http.ResponseWriter, r *http.Request) {
	client, err := a.gw.Client(r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	var resp any
	switch path := r.URL.Path; {
	case hasSuffix(path, "/hello"):
		resp, err = client.Hello(ctx, &agentv1.HelloRequest{ProtocolVersion: agentv1.ProtocolVersion, ApplianceFingerprint: a.id.Fingerprint().String()})
	case hasSuffix(path, "/ping"):
		start := time.Now()
		_, err = client.Ping(ctx, &agentv1.PingRequest{SentUnixNano: start.UnixNano()})
		resp = map[string]any{"rtt_ns": time.Since(start).Nanoseconds()}
	case hasSuffix(path, "/volumes"):
		resp, err = client.ListVolumes(ctx, &agentv1.ListVolumesRequest{})
	case hasSuffix(path, "/writers"):
		resp, err = client.ListWriters(ctx, &agentv1.ListWritersRequest{})
	}
	if err != nil {
		writeJSON(w, http.StatusBadGateway, apiError{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}

// CreateTokenRequest is the body of POST /api/tokens.
type CreateTokenRequest struct {
	AgentID string `json:"agent_id"`
}

// CreatedToken is the answer to POST /api/tokens: the only time the
// token's secret is shown.
type CreatedToken struct {
	AgentID string `json:"agent_id"`
	TokenID uint64 `json:"token_id"`
	Token   string `json:"token"`
}

func (a *Appliance) apiCreateToken(w http.ResponseWriter, r *http.Request) {
	var req CreateTokenRequest
	if err := readJSON(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	t, err := a.gw.CreateAgentToken(r.Context(), req.AgentID, actorOf(r))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, CreatedToken{AgentID: req.AgentID, TokenID: t.ID, Token: t.Reveal()})
}

func (a *Appliance) apiTokens(w http.ResponseWriter, r *http.Request) {
	type tokenInfo struct {
		ID          uint64    `json:"id"`
		AgentID     string    `json:"agent_id"`
		Fingerprint string    `json:"fingerprint,omitempty"`
		Source      string    `json:"source"`
		CreatedAt   time.Time `json:"created_at"`
		BoundAt     time.Time `json:"bound_at,omitzero"`
		RevokedAt   time.Time `json:"revoked_at,omitzero"`
		LastSeenAt  time.Time `json:"last_seen_at,omitzero"`
		LastAddr    string    `json:"last_addr,omitempty"`
	}
	var out []tokenInfo
	if err := a.catalog.View(r.Context(), func(tx *catalog.Tx) error {
		ts, err := tx.AgentTokens(r.URL.Query().Get("agent"))
		for _, t := range ts {
			out = append(out, tokenInfo{ID: t.ID, AgentID: t.AgentID, Fingerprint: t.Fingerprint, Source: t.Source,
				CreatedAt: t.CreatedAt, BoundAt: t.BoundAt, RevokedAt: t.RevokedAt, LastSeenAt: t.LastSeenAt, LastAddr: t.LastAddr})
		}
		return err
	}); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Appliance) apiRevokeToken(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeErr(w, fmt.Errorf("%w: token id", errBadRequest))
		return
	}
	if err := a.gw.RevokeAgentToken(r.Context(), id, actorOf(r)); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"revoked": id})
}

// CreateSetupTokenRequest is the body of POST /api/setup-tokens.
type CreateSetupTokenRequest struct {
	Label      string `json:"label"`
	TTLSeconds int64  `json:"ttl_seconds"` // default one day
	MaxUses    int    `json:"max_uses"`    // default 1
}

func (a *Appliance) apiCreateSetupToken(w http.ResponseWriter, r *http.Request) {
	var req CreateSetupTokenRequest
	if err := readJSON(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if req.TTLSeconds == 0 {
		ttl = 24 * time.Hour
	}
	if req.MaxUses == 0 {
		req.MaxUses = 1
	}
	st, expires, err := a.gw.CreateSetupToken(r.Context(), req.Label, ttl, req.MaxUses, actorOf(r))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": st.ID, "setup_token": st.Reveal(), "expires_at": expires, "max_uses": req.MaxUses})
}
