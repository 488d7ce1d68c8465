package gateway

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/pairing/channel"
)

// hookListener calls onWrite before every write the gateway makes on an
// accepted connection.
type hookListener struct {
	net.Listener
	onWrite func()
}

func (l hookListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return hookConn{Conn: c, onWrite: l.onWrite}, nil
}

type hookConn struct {
	net.Conn
	onWrite func()
}

func (c hookConn) Write(b []byte) (int, error) {
	c.onWrite()
	return c.Conn.Write(b)
}

// admitting starts a gateway and a real agent and returns once the
// gateway has admitted the agent's connection (token checked, session
// reserved) but not yet sent its welcome; resume lets it go on.
func admitting(t *testing.T) (g *testGateway, a *testAgent, tok uint64, resume func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		gw        atomic.Pointer[Gateway]
		tokenID   atomic.Uint64
		once      sync.Once
		inWindow  = make(chan struct{})
		release   = make(chan struct{})
		releaseFn = sync.OnceFunc(func() { close(release) })
	)
	t.Cleanup(releaseFn)
	onWrite := func() {
		g := gw.Load()
		if g == nil {
			return
		}
		g.mu.Lock()
		c := g.byToken[tokenID.Load()]
		admitting := c != nil && c.s == nil
		g.mu.Unlock()
		if admitting {
			// This write is the welcome of the reserved connection.
			once.Do(func() {
				close(inWindow)
				<-release
			})
		}
	}
	g = startGatewayOn(t, hookListener{Listener: ln, onWrite: onWrite}, func(c *Config) { c.FailLimit = 1000 })
	at := g.agentToken("web-1")
	tokenID.Store(at.ID)
	gw.Store(g.Gateway)

	dir, _ := agentDir(t)
	a = startAgent(t, g.addr, dir, &at, nil)
	select {
	case <-inWindow:
	case <-time.After(waitTimeout):
		t.Fatal("the agent's connection was not admitted")
	}
	return g, a, at.ID, releaseFn
}

// TestRevokeWhileAdmitting revokes a token while the gateway is between
// admitting its connection and sending the welcome: the session must not
// outlive the revocation.
func TestRevokeWhileAdmitting(t *testing.T) {
	g, a, tok, resume := admitting(t)
	if err := g.RevokeAgentToken(context.Background(), tok, "test"); err != nil {
		t.Fatal(err)
	}
	resume()

	// The agent is told its token is revoked when it connects again, which
	// it does only once the session it was welcomed into has ended.
	a.logs.Wait(t, `agent refused with "token revoked"`, func(r logRecord) bool {
		var re *channel.RefusedError
		return r.Msg == "cannot connect to the appliance" && errors.As(r.Err(), &re) &&
			re.Welcome.GetStatus() == agentv1.GatewayWelcome_STATUS_REFUSED && re.Welcome.GetMessage() == "token revoked"
	})
	a.stop()
	g.waitNoneConnected()
	g.assertNoneConnected()
}

// TestCloseWhileAdmitting closes the gateway while it is between admitting
// a connection and sending the welcome: the session must not outlive
// Close, and connections refused because the gateway is closed are not
// duplicates.
func TestCloseWhileAdmitting(t *testing.T) {
	g, a, _, resume := admitting(t)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	resume()
	a.logs.Wait(t, "the agent's session to end", msgIs("disconnected from the appliance; reconnecting"))
	a.logs.Wait(t, "the agent to be refused", func(r logRecord) bool {
		var re *channel.RefusedError
		return r.Msg == "cannot connect to the appliance" && errors.As(r.Err(), &re)
	})
	a.stop()
	g.waitNoneConnected()
	g.assertNoneConnected()
	if d := g.Duplicates(); len(d) != 0 {
		t.Errorf("Duplicates() = %v after Close; want none", d)
	}
	for _, e := range g.audit() {
		if e.Action == AuditDuplicate {
			t.Errorf("audit event after Close: %+v", e)
		}
	}
}
