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
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/agent"
	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/internal/logtest"
	"github.com/cairnbackup/cairn/internal/testclock"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/token"
)

// waitTimeout bounds every wait for something that should happen.
const waitTimeout = logtest.Timeout

func newFakeClock() *testclock.Clock { return testclock.New(time.Now()) }

type (
	logRecord = logtest.Record
	logSink   = logtest.Sink
)

var (
	newLogSink = logtest.NewSink
	msgIs      = logtest.MsgIs
	waitFor    = logtest.WaitFor
)

// testGateway is a Gateway serving reverse-mode agents on 127.0.0.1.
type testGateway struct {
	*Gateway
	t     *testing.T
	cat   *catalog.Catalog
	addr  string
	clock *testclock.Clock
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
	cfg := Config{Catalog: cat, Identity: id, Name: "test-appliance", Logger: logs.Logger(),
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
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Version: "test"}, logs.Logger())
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
