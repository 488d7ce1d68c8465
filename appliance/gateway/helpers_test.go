package gateway

// Test fixtures: a gateway serving reverse-mode agents on 127.0.0.1 with a
// real bbolt catalog, real agents run in-process, a fake clock and a log
// sink to wait on. No test sleeps to synchronise: they wait on channels,
// log records or polled conditions, each with a bounded deadline.

import (
	"context"
	"crypto/tls"
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

	"github.com/cairnbackup/cairn/agent"
	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/token"
)

// waitTimeout bounds every wait for something that should happen.
const waitTimeout = 10 * time.Second

// fakeClock is Config.Now for tests that move time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

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

// testGateway is a Gateway serving reverse-mode agents on 127.0.0.1.
type testGateway struct {
	*Gateway
	t     *testing.T
	cat   *catalog.Catalog
	addr  string
	clock *fakeClock
	logs  *logSink
}

// startGateway starts a gateway on a new catalog; tweak may change its
// configuration before New.
func startGateway(t *testing.T, tweak func(*Config)) *testGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startGatewayOn(t, ln, tweak)
}

func startGatewayOn(t *testing.T, ln net.Listener, tweak func(*Config)) *testGateway {
	t.Helper()
	cat, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.New("appliance")
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	logs := newLogSink(t, "gateway")
	cfg := Config{Catalog: cat, Identity: id, Name: "test-appliance", Logger: logs.logger(),
		HandshakeTimeout: 5 * time.Second, Now: clock.Now}
	if tweak != nil {
		tweak(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Serve did not return within %s of its context's end", waitTimeout)
		}
		g.Close()
		cat.Close()
	})
	return &testGateway{Gateway: g, t: t, cat: cat, addr: ln.Addr().String(), clock: clock, logs: logs}
}

// agentToken creates an agent token for agentID.
func (g *testGateway) agentToken(agentID string) token.AgentToken {
	g.t.Helper()
	tok, err := g.CreateAgentToken(context.Background(), agentID, "test")
	if err != nil {
		g.t.Fatal(err)
	}
	return tok
}

// tokenRecord reads an agent token's record.
func (g *testGateway) tokenRecord(id uint64) catalog.AgentToken {
	g.t.Helper()
	var rec catalog.AgentToken
	if err := g.cat.View(context.Background(), func(tx *catalog.Tx) error {
		var err error
		rec, err = tx.AgentToken(id)
		return err
	}); err != nil {
		g.t.Fatal(err)
	}
	return rec
}

// agentRecord reads an agent's record.
func (g *testGateway) agentRecord(id string) catalog.Agent {
	g.t.Helper()
	var rec catalog.Agent
	if err := g.cat.View(context.Background(), func(tx *catalog.Tx) error {
		var err error
		rec, err = tx.Agent(id)
		return err
	}); err != nil {
		g.t.Fatal(err)
	}
	return rec
}

// counts returns the numbers of agents and agent tokens in the catalog.
func (g *testGateway) counts() (agents, tokens int) {
	g.t.Helper()
	if err := g.cat.View(context.Background(), func(tx *catalog.Tx) error {
		as, err := tx.Agents()
		if err != nil {
			return err
		}
		ts, err := tx.AgentTokens("")
		agents, tokens = len(as), len(ts)
		return err
	}); err != nil {
		g.t.Fatal(err)
	}
	return agents, tokens
}

// audit returns the audit log.
func (g *testGateway) audit() []catalog.AuditEvent {
	g.t.Helper()
	var events []catalog.AuditEvent
	if err := g.cat.View(context.Background(), func(tx *catalog.Tx) error {
		var err error
		events, err = tx.AuditLog(0, 0)
		return err
	}); err != nil {
		g.t.Fatal(err)
	}
	return events
}

// connectedIDs lists the IDs of the connected agents.
func (g *testGateway) connectedIDs() []string {
	var ids []string
	for _, st := range g.Connected() {
		ids = append(ids, st.AgentID)
	}
	return ids
}

// waitConnected waits until agentID is connected and returns its status.
func (g *testGateway) waitConnected(agentID string) Status {
	g.t.Helper()
	var st Status
	waitFor(g.t, "agent "+agentID+" to be connected", func() bool {
		for _, s := range g.Connected() {
			if s.AgentID == agentID {
				st = s
				return true
			}
		}
		return false
	})
	return st
}

// waitNoneConnected waits until no agent is connected.
func (g *testGateway) waitNoneConnected() {
	g.t.Helper()
	waitFor(g.t, "no agent to be connected", func() bool { return len(g.Connected()) == 0 })
}

// assertNoneConnected fails unless no agent is connected and no session is
// held (not even one still in Hello).
func (g *testGateway) assertNoneConnected() {
	g.t.Helper()
	if ids := g.connectedIDs(); len(ids) != 0 {
		g.t.Errorf("connected agents: %v, want none", ids)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.conns) != 0 || len(g.byToken) != 0 {
		g.t.Errorf("gateway holds %d sessions (%d by token), want none", len(g.conns), len(g.byToken))
	}
}

// ping checks that a connected agent answers through Gateway.Client.
func (g *testGateway) ping(agentID string) {
	g.t.Helper()
	c, err := g.Client(agentID)
	if err != nil {
		g.t.Fatalf("Client(%q): %v", agentID, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := c.Ping(ctx, &agentv1.PingRequest{SentUnixNano: 4242})
	if err != nil {
		g.t.Fatalf("Ping %q: %v", agentID, err)
	}
	if resp.GetSentUnixNano() != 4242 {
		g.t.Fatalf("Ping %q echoed %d, want 4242", agentID, resp.GetSentUnixNano())
	}
}

// testAgent is a real agent.Agent running in reverse mode.
type testAgent struct {
	*agent.Agent
	dir  string
	logs *logSink
	stop func()
}

// agentDir makes an agent state directory with its key in it, and
// returns the key: the one an agent.Agent on that directory will use.
func agentDir(t *testing.T) (string, *identity.Identity) {
	t.Helper()
	dir := t.TempDir()
	id, err := identity.LoadOrCreate(dir, "agent")
	if err != nil {
		t.Fatal(err)
	}
	return dir, id
}

// startAgent runs a reverse-mode agent on dir against addr until the test
// ends or stop is called.
func startAgent(t *testing.T, addr, dir string, tok *token.AgentToken, st *token.SetupToken) *testAgent {
	t.Helper()
	logs := newLogSink(t, "agent")
	a, err := agent.New(agent.Config{StateDir: dir, Appliance: addr, Token: tok, SetupToken: st,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Version: "test"}, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("agent Run: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("agent did not stop within %s", waitTimeout)
			}
		})
	}
	t.Cleanup(stop)
	return &testAgent{Agent: a, dir: dir, logs: logs, stop: stop}
}

// newKey makes an in-memory agent key.
func newKey(t *testing.T) *identity.Identity {
	t.Helper()
	id, err := identity.New("other-agent")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func agentHello(text string) *agentv1.GatewayHello {
	return &agentv1.GatewayHello{ProtocolVersion: agentv1.ProtocolVersion, Hostname: "host-1",
		Credential: &agentv1.GatewayHello_AgentToken{AgentToken: text}}
}

func setupHello(text string) *agentv1.GatewayHello {
	return &agentv1.GatewayHello{ProtocolVersion: agentv1.ProtocolVersion, Hostname: "host-1",
		Credential: &agentv1.GatewayHello_SetupToken{SetupToken: text}}
}

// dial runs the agent's side of the reverse handshake (channel.DialGateway)
// with key id. A session it returns is closed when the test ends.
func dial(t *testing.T, addr string, id *identity.Identity, hello *agentv1.GatewayHello) (*channel.Session, *agentv1.GatewayWelcome, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, w, err := channel.DialGateway(ctx, addr, id, identity.AnyPeer(), hello, nil)
	if s != nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, w, err
}

// wantRefused checks that a dial was refused with status and a message
// containing msg, and returns the welcome.
func wantRefused(t *testing.T, s *channel.Session, err error, status agentv1.GatewayWelcome_Status, msg string) *agentv1.GatewayWelcome {
	t.Helper()
	if s != nil {
		t.Fatalf("dial got a session; want %s %q", status, msg)
	}
	var re *channel.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("dial error = %v; want a *channel.RefusedError with %s %q", err, status, msg)
	}
	w := re.Welcome
	if w.GetStatus() != status || !strings.Contains(w.GetMessage(), msg) {
		t.Fatalf("welcome = %s %q; want %s %q", w.GetStatus(), w.GetMessage(), status, msg)
	}
	if status != agentv1.GatewayWelcome_STATUS_ENROLLED && (w.GetAgentToken() != "" || w.GetAgentId() != "") {
		t.Errorf("refusal carries agent token %q, agent ID %q; want neither", w.GetAgentToken(), w.GetAgentId())
	}
	return w
}

// rawDial dials the gateway over TCP from 127.0.0.1.
func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tlsDial completes TLS with the gateway, and nothing more.
func tlsDial(t *testing.T, addr string, id *identity.Identity) *tls.Conn {
	t.Helper()
	conn := tls.Client(rawDial(t, addr), identity.ClientConfig(id, channel.ALPN, identity.AnyPeer()))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	return conn
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
