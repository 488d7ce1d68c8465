package appliance

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/gateway"
	"github.com/cairnbackup/cairn/appliance/pairer"
	"github.com/cairnbackup/cairn/pairing"
)

// The v1 API: pairings and agents (docs/api.md). Errors are
// {"code": "...", "message": "..."} with a stable code.
func (a *Appliance) routeV1(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/pairings", a.v1StartPairings)
	mux.HandleFunc("GET /api/v1/pairings", a.v1Pairings)
	mux.HandleFunc("GET /api/v1/pairings/{id}", a.v1Pairing)
	mux.HandleFunc("POST /api/v1/pairings/{id}/retry", a.v1Retry)
	mux.HandleFunc("POST /api/v1/pairings/{id}/confirm-fingerprint", a.v1ConfirmFingerprint)
	mux.HandleFunc("GET /api/v1/agents", a.apiAgents)
	mux.HandleFunc("DELETE /api/v1/agents/{id}", a.v1Unpair)
	mux.HandleFunc("GET /api/v1/agents/{id}/settings", a.v1Settings)
	mux.HandleFunc("PUT /api/v1/agents/{id}/settings", a.v1PutSettings)
	mux.HandleFunc("GET /api/v1/storage", a.v1Storage)
	a.routeBackup(mux)
}

// V1Error is the body of every v1 error answer.
type V1Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Target  string `json:"target,omitempty"`
	// Remedy says what to do, where the code alone does not.
	Remedy string `json:"remedy,omitempty"`
}

func v1Err(w http.ResponseWriter, err error) {
	code, status := "internal", http.StatusInternalServerError
	var re *pairer.RequestError
	switch {
	case errors.As(err, &re):
		code, status = re.Code, http.StatusBadRequest
	case errors.Is(err, catalog.ErrNotFound):
		code, status = "not_found", http.StatusNotFound
	case errors.Is(err, catalog.ErrInvalid), errors.Is(err, errBadRequest):
		code, status = "bad_request", http.StatusBadRequest
	case errors.Is(err, gateway.ErrNotConnected):
		code, status = "not_connected", http.StatusConflict
	}
	writeJSON(w, status, V1Error{Code: code, Message: err.Error()})
}

// StartPairingsRequest is the body of POST /api/v1/pairings. Target may
// list several targets (comma- or newline-separated): one pairing each.
type StartPairingsRequest struct {
	Target     string            `json:"target"`
	Port       int               `json:"port,omitempty"`
	AgentID    string            `json:"agent_id,omitempty"`
	ProductKey string            `json:"product_key"`
	Settings   *pairing.Settings `json:"settings,omitempty"`
}

// UnmarshalJSON fills the settings the request leaves out with
// pairing.DefaultSettings, so that {"settings": {"volumes": [...]}} keeps
// the default schedule and retention; unknown fields are refused.
func (r *StartPairingsRequest) UnmarshalJSON(b []byte) error {
	type plain StartPairingsRequest
	var probe struct {
		Settings json.RawMessage `json:"settings"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return err
	}
	p := plain{}
	if len(probe.Settings) > 0 && string(probe.Settings) != "null" {
		d := pairing.DefaultSettings()
		p.Settings = &d
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return err
	}
	*r = StartPairingsRequest(p)
	return nil
}

// StartPairingsReply is the answer: the pairings started and the targets
// refused.
type StartPairingsReply struct {
	Pairings []pairer.Pairing `json:"pairings"`
	Errors   []V1Error        `json:"errors,omitempty"`
}

func splitTargets(s string) []string {
	var out []string
	for _, t := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func (a *Appliance) v1StartPairings(w http.ResponseWriter, r *http.Request) {
	var req StartPairingsRequest
	if err := readJSON(r, &req); err != nil {
		v1Err(w, err)
		return
	}
	targets := splitTargets(req.Target)
	if len(targets) == 0 {
		targets = []string{""} // a reverse-mode agent named by agent_id
	}
	if len(targets) > 1 && req.AgentID != "" {
		v1Err(w, &pairer.RequestError{Code: "bad_request", Msg: "agent_id names one agent; leave it out to pair several targets"})
		return
	}
	var reply StartPairingsReply
	for _, t := range targets {
		pr, err := a.pairer.Start(r.Context(), pairer.Request{Target: t, Port: req.Port, AgentID: req.AgentID,
			ProductKey: req.ProductKey, Settings: req.Settings, Actor: actorOf(r)})
		if err != nil {
			e := V1Error{Code: "internal", Message: err.Error(), Target: t}
			var re *pairer.RequestError
			if errors.As(err, &re) {
				e.Code = re.Code
			}
			reply.Errors = append(reply.Errors, e)
			continue
		}
		reply.Pairings = append(reply.Pairings, pr)
	}
	status := http.StatusCreated
	if len(reply.Pairings) == 0 {
		status = http.StatusBadRequest
	}
	writeJSON(w, status, reply)
}

func (a *Appliance) v1Pairings(w http.ResponseWriter, r *http.Request) {
	ps, err := a.pairer.List(r.Context())
	if err != nil {
		v1Err(w, err)
		return
	}
	if ps == nil {
		ps = []pairer.Pairing{}
	}
	writeJSON(w, http.StatusOK, ps)
}

func pathID(r *http.Request) (uint64, error) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		return 0, &pairer.RequestError{Code: "bad_request", Msg: "pairing id: not a number"}
	}
	return id, nil
}

func (a *Appliance) v1Pairing(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err == nil {
		var pr pairer.Pairing
		if pr, err = a.pairer.Get(r.Context(), id); err == nil {
			writeJSON(w, http.StatusOK, pr)
			return
		}
	}
	v1Err(w, err)
}

func (a *Appliance) v1Retry(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err == nil {
		var pr pairer.Pairing
		if pr, err = a.pairer.Retry(r.Context(), id); err == nil {
			writeJSON(w, http.StatusAccepted, pr)
			return
		}
	}
	v1Err(w, err)
}

func (a *Appliance) v1Unpair(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var destroy bool
	switch q.Get("dataset") {
	case "", "keep":
	case "destroy":
		destroy = true
	default:
		v1Err(w, &pairer.RequestError{Code: "bad_request", Msg: `dataset: "keep" (default) or "destroy"`})
		return
	}
	force := q.Get("force") == "1" || q.Get("force") == "true"
	// Unpairing ends the agent's NBD exports: its recovery points are no
	// longer reachable through the API. Destroying the dataset needs
	// their holds gone first; keeping it, they end only once the unpair
	// is done, so that a refused unpair leaves them running.
	stopExports := func() {
		if err := a.nbd.stopAgent(a.pool, r.PathValue("id")); err != nil {
			a.log.Warn("unpair: stop the agent's NBD exports", "agent", r.PathValue("id"), "err", err)
		}
	}
	if destroy {
		stopExports()
	}
	res, err := a.pairer.Unpair(r.Context(), r.PathValue("id"), destroy, force, actorOf(r))
	if err != nil {
		v1Err(w, err)
		return
	}
	if !destroy {
		stopExports()
	}
	writeJSON(w, http.StatusOK, res)
}
