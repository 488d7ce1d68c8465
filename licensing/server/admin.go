package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/cairnbackup/cairn/licensing"
)

// Admin is the vendor's operations on keys and seats. *Store does them
// directly; *AdminClient asks a running Service through its admin socket.
type Admin interface {
	CreateKey(ctx context.Context, req CreateKeyRequest) (licensing.Key, KeyInfo, error)
	ListKeys(ctx context.Context) ([]KeyInfo, error)
	ShowKey(ctx context.Context, keyID string) (KeyDetail, error)
	RevokeKey(ctx context.Context, keyID, actor, reason string) (KeyInfo, error)
	ForceRelease(ctx context.Context, req ForceReleaseRequest) (ActivationInfo, error)
}

var (
	_ Admin = (*Store)(nil)
	_ Admin = (*AdminClient)(nil)
)

// OpenAdmin returns the admin operations on the service whose data directory
// is dir: through the admin socket if the service is running, on the store
// directly otherwise. Only with create may it make a new store; otherwise a
// directory without one is an error (a mistyped -data). Call closeFn when done.
//
// Why a socket: bbolt locks its file, so while the service runs no other
// process can open the store, and the vendor must not stop the service to
// create a key. The socket is a Unix socket in dir (mode 0600, in a 0700
// directory): the file system decides who is an admin, and nothing listens
// on the network for admin requests.
func OpenAdmin(dir string, create bool) (a Admin, closeFn func() error, err error) {
	sock := filepath.Join(dir, AdminSocketName)
	if conn, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		conn.Close()
		return NewAdminClient(sock), func() error { return nil }, nil
	}
	path := filepath.Join(dir, StoreFileName)
	if !create {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("no activation store in %s (create a key there first, or fix -data)", dir)
		}
	}
	st, err := Open(path, Options{})
	if errors.Is(err, ErrLocked) {
		return nil, nil, fmt.Errorf("%w, and its admin socket %s does not answer: is another cairn-activation using %s?", err, sock, dir)
	}
	if err != nil {
		return nil, nil, err
	}
	return st, st.Close, nil
}

// Codes of the admin API's errors, mapped to the store's sentinel errors.
const (
	adminNotFound = "not_found"
	adminExists   = "exists"
	adminInvalid  = "invalid_argument"
	adminInternal = "internal"
)

// adminError is an admin API error on the client side: its message is the
// service's, and it matches the sentinel of its code.
type adminError struct {
	sentinel error
	msg      string
}

func (e *adminError) Error() string { return e.msg }
func (e *adminError) Unwrap() error { return e.sentinel }

// AdminHandler serves the admin API on the admin socket. The key of a
// created key is in its reply, and is logged by ID only.
func AdminHandler(st *Store, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &adminHandler{st: st, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/keys", h.create)
	mux.HandleFunc("GET /admin/keys", h.list)
	mux.HandleFunc("GET /admin/keys/{id}", h.show)
	mux.HandleFunc("POST /admin/keys/{id}/revoke", h.revoke)
	mux.HandleFunc("POST /admin/release", h.release)
	return mux
}

type adminHandler struct {
	st  *Store
	log *slog.Logger
}

type createReply struct {
	Key  string  `json:"key"` // in clear: shown to the vendor once
	Info KeyInfo `json:"info"`
}

type revokeBody struct {
	Actor  string `json:"actor"`
	Reason string `json:"reason"`
}

func (h *adminHandler) create(w http.ResponseWriter, r *http.Request) {
	var req CreateKeyRequest
	if !decodeAdmin(w, r, &req) {
		return
	}
	key, info, err := h.st.CreateKey(r.Context(), req)
	if err != nil {
		h.answerErr(w, "create key", err)
		return
	}
	h.log.Info("admin: key created", "key", key, "edition", info.Edition, "seats", info.Seats, "expires", info.Expires, "actor", req.Actor)
	writeJSON(w, http.StatusOK, createReply{Key: key.Reveal(), Info: info})
}

func (h *adminHandler) list(w http.ResponseWriter, r *http.Request) {
	keys, err := h.st.ListKeys(r.Context())
	if err != nil {
		h.answerErr(w, "list keys", err)
		return
	}
	if keys == nil {
		keys = []KeyInfo{}
	}
	writeJSON(w, http.StatusOK, keys)
}

func (h *adminHandler) show(w http.ResponseWriter, r *http.Request) {
	d, err := h.st.ShowKey(r.Context(), r.PathValue("id"))
	if err != nil {
		h.answerErr(w, "show key", err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *adminHandler) revoke(w http.ResponseWriter, r *http.Request) {
	var b revokeBody
	if !decodeAdmin(w, r, &b) {
		return
	}
	info, err := h.st.RevokeKey(r.Context(), r.PathValue("id"), b.Actor, b.Reason)
	if err != nil {
		h.answerErr(w, "revoke key", err)
		return
	}
	h.log.Info("admin: key revoked", "key_id", info.ID, "actor", b.Actor, "reason", b.Reason)
	writeJSON(w, http.StatusOK, info)
}

func (h *adminHandler) release(w http.ResponseWriter, r *http.Request) {
	var req ForceReleaseRequest
	if !decodeAdmin(w, r, &req) {
		return
	}
	a, err := h.st.ForceRelease(r.Context(), req)
	if err != nil {
		h.answerErr(w, "force release", err)
		return
	}
	h.log.Info("admin: activation released", "key_id", a.KeyID, "agent", a.AgentFingerprint, "appliance", a.ApplianceID,
		"actor", req.Actor, "reason", req.Reason)
	writeJSON(w, http.StatusOK, a)
}

func decodeAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestLen))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]*licensing.ServiceError{"error": {Code: adminInvalid, Message: "bad request body: " + err.Error()}})
		return false
	}
	return true
}

func (h *adminHandler) answerErr(w http.ResponseWriter, op string, err error) {
	code, status := adminInternal, http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		code, status = adminNotFound, http.StatusNotFound
	case errors.Is(err, ErrExists):
		code, status = adminExists, http.StatusConflict
	case errors.Is(err, ErrInvalidArgument):
		code, status = adminInvalid, http.StatusBadRequest
	default:
		h.log.Error("admin: "+op+" failed", "err", err)
	}
	writeJSON(w, status, map[string]*licensing.ServiceError{"error": {Code: code, Message: err.Error()}})
}

// AdminClient does the admin operations through a running service's admin
// socket.
type AdminClient struct {
	hc *http.Client
}

// NewAdminClient returns a client of the admin socket at socketPath.
func NewAdminClient(socketPath string) *AdminClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
	}
	return &AdminClient{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// CreateKey implements Admin.
func (c *AdminClient) CreateKey(ctx context.Context, req CreateKeyRequest) (licensing.Key, KeyInfo, error) {
	if !req.Key.IsZero() {
		return licensing.Key{}, KeyInfo{}, fmt.Errorf("create key: %w: a given key is not sent over the admin socket", ErrInvalidArgument)
	}
	var rep createReply
	if err := c.do(ctx, http.MethodPost, "/admin/keys", req, &rep); err != nil {
		return licensing.Key{}, KeyInfo{}, err
	}
	key, err := licensing.ParseKey(rep.Key)
	if err != nil {
		return licensing.Key{}, KeyInfo{}, fmt.Errorf("create key: the service's reply: %w", err)
	}
	return key, rep.Info, nil
}

// ListKeys implements Admin.
func (c *AdminClient) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	var keys []KeyInfo
	err := c.do(ctx, http.MethodGet, "/admin/keys", nil, &keys)
	return keys, err
}

// ShowKey implements Admin.
func (c *AdminClient) ShowKey(ctx context.Context, keyID string) (KeyDetail, error) {
	var d KeyDetail
	err := c.do(ctx, http.MethodGet, "/admin/keys/"+url.PathEscape(keyID), nil, &d)
	return d, err
}

// RevokeKey implements Admin.
func (c *AdminClient) RevokeKey(ctx context.Context, keyID, actor, reason string) (KeyInfo, error) {
	var info KeyInfo
	err := c.do(ctx, http.MethodPost, "/admin/keys/"+url.PathEscape(keyID)+"/revoke", revokeBody{Actor: actor, Reason: reason}, &info)
	return info, err
}

// ForceRelease implements Admin.
func (c *AdminClient) ForceRelease(ctx context.Context, req ForceReleaseRequest) (ActivationInfo, error) {
	var a ActivationInfo
	err := c.do(ctx, http.MethodPost, "/admin/release", req, &a)
	return a, err
}

func (c *AdminClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://admin"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error *licensing.ServiceError `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == nil {
			return fmt.Errorf("admin socket: HTTP status %d", resp.StatusCode)
		}
		sentinel := map[string]error{adminNotFound: ErrNotFound, adminExists: ErrExists, adminInvalid: ErrInvalidArgument}[e.Error.Code]
		return &adminError{sentinel: sentinel, msg: e.Error.Message}
	}
	return json.Unmarshal(data, out)
}
