package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/testclock"
	"github.com/cairnbackup/cairn/licensing"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// syncBuffer is a bytes.Buffer safe for concurrent writes, for logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is an activation service on 127.0.0.1 over a real store.
type env struct {
	t      *testing.T
	clock  *testclock.Clock
	store  *Store
	pub    ed25519.PublicKey
	url    string
	logs   *syncBuffer
	client *licensing.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clk := testclock.New(t0)
	st, err := Open(filepath.Join(t.TempDir(), StoreFileName), Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	srv, err := New(Config{Store: st, SigningKey: priv, Logger: slog.New(slog.NewTextHandler(logs, nil)), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	pub := srv.PublicKey()
	return &env{t: t, clock: clk, store: st, pub: pub, url: hs.URL, logs: logs,
		client: &licensing.Client{BaseURL: hs.URL, PublicKey: pub, Now: clk.Now, HTTP: hs.Client()}}
}

// key creates a key of edition std with seats, expiring in a year.
func (e *env) key(seats int) licensing.Key {
	e.t.Helper()
	k, info, err := e.store.CreateKey(context.Background(), CreateKeyRequest{Edition: "std", Seats: seats, Expires: t0.AddDate(1, 0, 0), Actor: "test"})
	if err != nil {
		e.t.Fatal(err)
	}
	if info.ID != k.ID() || info.Seats != seats || info.State != licensing.KeyActive {
		e.t.Fatalf("CreateKey = %+v", info)
	}
	return k
}

func (e *env) activate(k licensing.Key, appliance, agent string) (licensing.Activation, error) {
	e.t.Helper()
	a, _, err := e.client.Activate(context.Background(), licensing.ActivateRequest{
		Key: k, ApplianceID: appliance, AgentFingerprint: agent, Hostname: "host-" + agent})
	return a, err
}

func (e *env) deactivate(k licensing.Key, appliance, agent string) error {
	e.t.Helper()
	return e.client.Deactivate(context.Background(), licensing.DeactivateRequest{Key: k, ApplianceID: appliance, AgentFingerprint: agent})
}

// used returns the key's used seats as the store counts them.
func (e *env) used(k licensing.Key) int {
	e.t.Helper()
	d, err := e.store.ShowKey(context.Background(), k.ID())
	if err != nil {
		e.t.Fatal(err)
	}
	return d.Key.Used
}

// wantCode fails unless err is a ServiceError with code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var se *licensing.ServiceError
	if !errors.As(err, &se) || se.Code != code {
		t.Fatalf("error %v, want service error %s", err, code)
	}
	if errors.Is(err, licensing.ErrUnreachable) {
		t.Fatalf("error %v is ErrUnreachable", err)
	}
}
