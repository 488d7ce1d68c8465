package agent

// Test fixtures shared by the agent's tests: a log sink to wait on, a
// bounded poll, appliances (real gateway.Gateway on a real catalog) and
// agents run in-process on 127.0.0.1. No test sleeps to synchronise.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/gateway"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/token"
)

// waitTimeout bounds every wait for something that should happen.
const waitTimeout = 10 * time.Second

// logRecord is one captured log line.
type logRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]slog.Value
}

// err returns the record's "err" attribute, if it is an error.
func (r logRecord) err() error {
	v, ok := r.Attrs["err"]
	if !ok || v.Kind() != slog.KindAny {
		return nil
	}
	err, _ := v.Any().(error)
	return err
}

func (r logRecord) String() string {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Msg)
	keys := make([]string, 0, len(r.Attrs))
	for k := range r.Attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString(" " + k + "=" + r.Attrs[k].String())
	}
	return b.String()
}

// logSink captures log records so that tests can wait for them.
type logSink struct {
	mu      sync.Mutex
	recs    []logRecord
	changed chan struct{} // closed and replaced on every record
}

// newLogSink makes a sink whose records are printed if t fails.
func newLogSink(t testing.TB, name string) *logSink {
	s := &logSink{changed: make(chan struct{})}
	t.Cleanup(func() {
		if t.Failed() {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, r := range s.recs {
				if r.Level >= slog.LevelInfo {
					t.Logf("%s log: %s", name, r)
				}
			}
		}
	})
	return s
}

func (s *logSink) logger() *slog.Logger { return slog.New(sinkHandler{s: s}) }

type sinkHandler struct {
	s     *logSink
	attrs []slog.Attr
}

func (h sinkHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h sinkHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{Level: r.Level, Msg: r.Message, Attrs: make(map[string]slog.Value)}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.Resolve()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.Resolve()
		return true
	})
	h.s.mu.Lock()
	h.s.recs = append(h.s.recs, rec)
	close(h.s.changed)
	h.s.changed = make(chan struct{})
	h.s.mu.Unlock()
	return nil
}

func (h sinkHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return sinkHandler{s: h.s, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h sinkHandler) WithGroup(string) slog.Handler { return h }

// wait returns the first record (ever logged) that match accepts, waiting
// up to waitTimeout for it.
func (s *logSink) wait(t testing.TB, what string, match func(logRecord) bool) logRecord {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	seen := 0
	for {
		s.mu.Lock()
		for ; seen < len(s.recs); seen++ {
			if r := s.recs[seen]; match(r) {
				s.mu.Unlock()
				return r
			}
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for a log record: %s", waitTimeout, what)
		}
	}
}

// count returns how many records match.
func (s *logSink) count(match func(logRecord) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.recs {
		if match(r) {
			n++
		}
	}
	return n
}

func msgIs(msg string) func(logRecord) bool {
	return func(r logRecord) bool { return r.Msg == msg }
}

// waitFor polls cond until it holds, for at most waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		<-tick.C
	}
}

// testAppliance is an appliance's gateway on its own catalog.
type testAppliance struct {
	*gateway.Gateway
	t    *testing.T
	cat  *catalog.Catalog
	logs *logSink
	addr string // of its agent gateway, once serve was called
}

func newAppliance(t *testing.T, name string) *testAppliance {
	t.Helper()
	cat, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.New(name)
	if err != nil {
		t.Fatal(err)
	}
	logs := newLogSink(t, "appliance "+name)
	g, err := gateway.New(gateway.Config{Catalog: cat, Identity: id, Name: name, Logger: logs.logger(),
		HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.Close()
		cat.Close()
	})
	return &testAppliance{Gateway: g, t: t, cat: cat, logs: logs}
}

// serve starts the appliance's agent gateway on 127.0.0.1.
func (ap *testAppliance) serve() {
	t := ap.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ap.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Serve did not return within %s", waitTimeout)
		}
	})
	ap.addr = ln.Addr().String()
}

func (ap *testAppliance) agentToken(agentID string) token.AgentToken {
	ap.t.Helper()
	tok, err := ap.CreateAgentToken(context.Background(), agentID, "test")
	if err != nil {
		ap.t.Fatal(err)
	}
	return tok
}

// agentRecord reads an agent's record; ok is false if there is none.
func (ap *testAppliance) agentRecord(id string) (a catalog.Agent, ok bool) {
	ap.t.Helper()
	err := ap.cat.View(context.Background(), func(tx *catalog.Tx) error {
		var err error
		a, err = tx.Agent(id)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.Agent{}, false
	}
	if err != nil {
		ap.t.Fatal(err)
	}
	return a, true
}

func (ap *testAppliance) tokenRecord(id uint64) catalog.AgentToken {
	ap.t.Helper()
	var rec catalog.AgentToken
	if err := ap.cat.View(context.Background(), func(tx *catalog.Tx) error {
		var err error
		rec, err = tx.AgentToken(id)
		return err
	}); err != nil {
		ap.t.Fatal(err)
	}
	return rec
}

func (ap *testAppliance) waitConnected(agentID string) gateway.Status {
	ap.t.Helper()
	var st gateway.Status
	waitFor(ap.t, "agent "+agentID+" to be connected", func() bool {
		for _, s := range ap.Connected() {
			if s.AgentID == agentID {
				st = s
				return true
			}
		}
		return false
	})
	return st
}

func (ap *testAppliance) assertNoneConnected() {
	ap.t.Helper()
	if c := ap.Connected(); len(c) != 0 {
		ap.t.Errorf("connected agents: %+v, want none", c)
	}
}

// testAgent is an Agent running in-process.
type testAgent struct {
	*Agent
	dir  string
	addr string // of its direct-mode listener, if it has one
	logs *logSink
	stop func()
}

// run starts a (Config'd) agent; direct mode listens on 127.0.0.1:0.
func run(t *testing.T, cfg Config) *testAgent {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	cfg.BackoffMin, cfg.BackoffMax, cfg.Version = 10*time.Millisecond, 100*time.Millisecond, "test"
	logs := newLogSink(t, "agent")
	direct := cfg.Listen != ""
	if direct {
		cfg.Listen = "127.0.0.1:0"
	}
	a, err := New(cfg, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	ta := &testAgent{Agent: a, dir: cfg.StateDir, logs: logs}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if direct {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ta.addr = ln.Addr().String()
		go func() {
			if err := a.ServeDirect(ctx, ln); !errors.Is(err, context.Canceled) {
				done <- err
				return
			}
			done <- nil
		}()
	} else {
		go func() { done <- a.Run(ctx) }()
	}
	var once sync.Once
	ta.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("agent: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("agent did not stop within %s", waitTimeout)
			}
		})
	}
	t.Cleanup(ta.stop)
	return ta
}

// startDirect runs a direct-mode agent with a short handshake timeout.
func startDirect(t *testing.T) *testAgent {
	return run(t, Config{Listen: "on", HandshakeTimeout: 300 * time.Millisecond})
}

// pin reads the agent's pin.
func (ta *testAgent) pin(t *testing.T) (Pin, bool) {
	t.Helper()
	p, ok, err := ReadPin(ta.dir)
	if err != nil {
		t.Fatal(err)
	}
	return p, ok
}

// rawDial dials addr over TCP.
func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitClosed reads c until the peer closes it (EOF or reset) and returns
// how long that took; it fails if c is still open after limit.
func waitClosed(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %s", limit)
	}
	return took
}

// refusedFor matches the agent's log of a refused appliance connection
// whose error matches target.
func refusedFor(msg string, target error) func(logRecord) bool {
	return func(r logRecord) bool { return r.Msg == msg && errors.Is(r.err(), target) }
}
