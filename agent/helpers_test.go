package agent

// Test fixtures shared by the agent's tests: a log sink to wait on, a
// bounded poll, appliances (real gateway.Gateway on a real catalog) and
// agents run in-process on 127.0.0.1. No test sleeps to synchronise.

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/gateway"
	"github.com/cairnbackup/cairn/internal/logtest"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/token"
)

// waitTimeout bounds every wait for something that should happen.
const waitTimeout = logtest.Timeout

type (
	logRecord = logtest.Record
	logSink   = logtest.Sink
)

var (
	newLogSink = logtest.NewSink
	msgIs      = logtest.MsgIs
	waitFor    = logtest.WaitFor
)

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
	g, err := gateway.New(gateway.Config{Catalog: cat, Identity: id, Name: name, Logger: logs.Logger(),
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
	a, err := New(cfg, logs.Logger())
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
	return func(r logRecord) bool { return r.Msg == msg && errors.Is(r.Err(), target) }
}
