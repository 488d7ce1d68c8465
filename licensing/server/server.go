// Package server is the vendor's activation service: it keeps product keys
// (as hashes), hands out seats as activations signed with its Ed25519 key,
// and records every change in an audit log, all in one bbolt store.
//
// The HTTP API (Server) is what appliances call: POST /v1/activate,
// /v1/deactivate and /v1/status with the key in the JSON body, never in the
// URL, and GET /v1/public-key. The admin operations (create, list, show,
// revoke keys, force a release) are methods of Store, reached by the
// cairn-activation CLI directly or, while the service runs, through an admin
// socket in its data directory (Admin, OpenAdmin). Service runs both.
package server

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/cairnbackup/cairn/licensing"
)

// DefaultActivationTTL is how long an activation lasts unless renewed, by
// default. The appliance renews daily (licensing.RenewEvery).
const DefaultActivationTTL = 30 * 24 * time.Hour

// maxRequestLen bounds a request body.
const maxRequestLen = 64 << 10

// Config configures a Server.
type Config struct {
	Store         *Store
	SigningKey    ed25519.PrivateKey // signs every activation
	Logger        *slog.Logger       // nil: discard
	Now           func() time.Time   // nil: time.Now
	ActivationTTL time.Duration      // 0: DefaultActivationTTL; capped by the key's expiry
}

// Server is the activation service's HTTP API.
type Server struct {
	store *Store
	priv  ed25519.PrivateKey
	log   *slog.Logger
	now   func() time.Time
	ttl   time.Duration
	mux   *http.ServeMux
}

var _ http.Handler = (*Server)(nil)

// New returns the HTTP API of the service.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("activation server: no store")
	}
	if len(cfg.SigningKey) != ed25519.PrivateKeySize {
		return nil, errors.New("activation server: the signing key is not an Ed25519 private key")
	}
	if cfg.ActivationTTL < 0 {
		return nil, fmt.Errorf("activation server: negative activation TTL %s", cfg.ActivationTTL)
	}
	s := &Server{store: cfg.Store, priv: cfg.SigningKey, log: cfg.Logger, now: cfg.Now, ttl: cfg.ActivationTTL}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.ttl == 0 {
		s.ttl = DefaultActivationTTL
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /v1/activate", s.handleActivate)
	s.mux.HandleFunc("POST /v1/deactivate", s.handleDeactivate)
	s.mux.HandleFunc("POST /v1/status", s.handleStatus)
	s.mux.HandleFunc("GET /v1/public-key", s.handlePublicKey)
	return s, nil
}

// PublicKey returns the public half of the signing key: what appliances
// must be configured with.
func (s *Server) PublicKey() ed25519.PublicKey { return s.priv.Public().(ed25519.PublicKey) }

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// request is the JSON body of the POST endpoints (licensing.Client sends it).
type request struct {
	Key              string `json:"key"`
	ApplianceID      string `json:"appliance_id"`
	AgentFingerprint string `json:"agent_fingerprint"`
	Hostname         string `json:"hostname"`
}

// parsed is a request with its key parsed.
type parsed struct {
	key licensing.Key
	request
}

// read decodes and checks the body of r. needAgent: the request names an
// agent (activate, deactivate). Its errors are ServiceErrors that never
// quote the key.
func read(w http.ResponseWriter, r *http.Request, needAgent bool) (parsed, *licensing.ServiceError) {
	var req request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestLen))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		// json's errors can quote a string value, which may be the key.
		return parsed{}, badRequest("the body is not a JSON request of this API")
	}
	if dec.More() {
		return parsed{}, badRequest("the body has data after the request")
	}
	key, err := licensing.ParseKey(req.Key)
	if err != nil {
		return parsed{}, &licensing.ServiceError{Code: licensing.CodeKeyInvalid, Message: err.Error()}
	}
	if err := licensing.CheckID("appliance_id", req.ApplianceID); err != nil {
		return parsed{}, badRequest(err.Error())
	}
	if needAgent {
		if err := licensing.CheckID("agent_fingerprint", req.AgentFingerprint); err != nil {
			return parsed{}, badRequest(err.Error())
		}
	}
	if err := licensing.CheckHostname(req.Hostname); err != nil {
		return parsed{}, badRequest(err.Error())
	}
	return parsed{key: key, request: req}, nil
}

func badRequest(msg string) *licensing.ServiceError {
	return &licensing.ServiceError{Code: licensing.CodeBadRequest, Message: msg}
}

func (s *Server) handleActivate(w http.ResponseWriter, r *http.Request) {
	req, serr := read(w, r, true)
	if serr != nil {
		s.refuse(w, "activate", req, serr)
		return
	}
	serial, err := newSerial()
	if err != nil {
		s.fail(w, "activate", req, err)
		return
	}
	a, err := s.store.activate(s.now(), activateParams{
		key: req.key, appliance: req.ApplianceID, agent: req.AgentFingerprint, hostname: req.Hostname,
		ttl: s.ttl, serial: serial,
	})
	if err != nil {
		s.answer(w, "activate", req, err)
		return
	}
	signed, err := licensing.Sign(s.priv, a)
	if err != nil {
		s.fail(w, "activate", req, err)
		return
	}
	s.log.Info("activate", "key", req.key, "agent", req.AgentFingerprint, "appliance", req.ApplianceID,
		"serial", a.Serial, "expires", a.Expires)
	writeJSON(w, http.StatusOK, signed)
}

func (s *Server) handleDeactivate(w http.ResponseWriter, r *http.Request) {
	req, serr := read(w, r, true)
	if serr != nil {
		s.refuse(w, "deactivate", req, serr)
		return
	}
	released, err := s.store.deactivate(s.now(), req.key, req.ApplianceID, req.AgentFingerprint)
	if err != nil {
		s.answer(w, "deactivate", req, err)
		return
	}
	s.log.Info("deactivate", "key", req.key, "agent", req.AgentFingerprint, "appliance", req.ApplianceID, "released", released)
	writeJSON(w, http.StatusOK, map[string]bool{"released": released})
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	req, serr := read(w, r, false)
	if serr != nil {
		s.refuse(w, "status", req, serr)
		return
	}
	st, err := s.store.status(req.key, req.ApplianceID)
	if err != nil {
		s.answer(w, "status", req, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) handlePublicKey(w http.ResponseWriter, _ *http.Request) {
	pub := s.PublicKey()
	writeJSON(w, http.StatusOK, map[string]string{
		"public_key": licensing.FormatPublicKey(pub),
		"signer_id":  licensing.SignerID(pub),
	})
}

// answer answers a failed store operation: a refusal or an internal error.
func (s *Server) answer(w http.ResponseWriter, op string, req parsed, err error) {
	var serr *licensing.ServiceError
	if errors.As(err, &serr) {
		s.refuse(w, op, req, serr)
		return
	}
	s.fail(w, op, req, err)
}

// refuse answers a refusal and logs it (by key ID).
func (s *Server) refuse(w http.ResponseWriter, op string, req parsed, serr *licensing.ServiceError) {
	s.log.Info(op+" refused", "key", req.key, "agent", req.AgentFingerprint, "appliance", req.ApplianceID, "code", serr.Code)
	writeJSON(w, statusOf(serr.Code), map[string]*licensing.ServiceError{"error": serr})
}

// fail answers an internal error without details and logs it.
func (s *Server) fail(w http.ResponseWriter, op string, req parsed, err error) {
	s.log.Error(op+" failed", "key", req.key, "agent", req.AgentFingerprint, "appliance", req.ApplianceID, "err", err)
	serr := &licensing.ServiceError{Code: licensing.CodeInternal, Message: "the activation service failed; try again later"}
	writeJSON(w, http.StatusInternalServerError, map[string]*licensing.ServiceError{"error": serr})
}

// statusOf maps an error code to its HTTP status.
func statusOf(code string) int {
	switch code {
	case licensing.CodeBadRequest:
		return http.StatusBadRequest
	case licensing.CodeKeyInvalid, licensing.CodeKeyRevoked, licensing.CodeKeyExpired:
		return http.StatusForbidden
	case licensing.CodeNoSeats, licensing.CodeActiveElsewhere:
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
