package gateway

// Refusals of the reverse-mode gateway, one test each: what the refused
// side is told, that nothing was granted (no session, no binding), and
// that a good agent still gets in afterwards. The agents are real
// agent.Agent runtimes in-process where the test needs a live session,
// and bare channel.DialGateway calls (with a key of the test's choosing)
// for the refused attempts.

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/token"
)

// goodAgentConnects runs a real agent with a fresh key and a new token for
// agentID, and waits until the gateway has it connected and pingable.
func goodAgentConnects(t *testing.T, g *testGateway, agentID string) *testAgent {
	t.Helper()
	tok := g.agentToken(agentID)
	dir, _ := agentDir(t)
	a := startAgent(t, g.addr, dir, &tok, nil)
	st := g.waitConnected(agentID)
	if st.Fingerprint != a.Fingerprint().String() {
		t.Errorf("connected with key %s, want the agent's %s", st.Fingerprint, a.Fingerprint())
	}
	g.ping(agentID)
	return a
}

// assertUnbound checks that a token was not bound or used by a refused
// connection.
func assertUnbound(t *testing.T, g *testGateway, id uint64) {
	t.Helper()
	rec := g.tokenRecord(id)
	if rec.Fingerprint != "" || !rec.BoundAt.IsZero() || !rec.LastSeenAt.IsZero() || rec.LastAddr != "" {
		t.Errorf("token %d after a refusal: fingerprint %q, bound %v, last seen %v from %q; want untouched",
			id, rec.Fingerprint, rec.BoundAt, rec.LastSeenAt, rec.LastAddr)
	}
}

func TestRefuseWrongSecret(t *testing.T) {
	g := startGateway(t, nil)
	tok := g.agentToken("web-1")
	other, err := token.NewAgentToken(tok.ID) // same ID, another secret
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := dial(t, g.addr, newKey(t), agentHello(other.Reveal()))
	w := wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_REFUSED, "token not valid")
	if w.GetMessage() != "token not valid" {
		t.Errorf("message = %q, want exactly %q", w.GetMessage(), "token not valid")
	}
	g.assertNoneConnected()
	assertUnbound(t, g, tok.ID)
	if fp := g.agentRecord("web-1").Fingerprint; fp != "" {
		t.Errorf("agent web-1 got key %q from a refused connection", fp)
	}

	// The right secret still works, with the same token.
	dir, _ := agentDir(t)
	a := startAgent(t, g.addr, dir, &tok, nil)
	g.waitConnected("web-1")
	g.ping("web-1")
	if got := g.tokenRecord(tok.ID).Fingerprint; got != a.Fingerprint().String() {
		t.Errorf("token bound to %q, want %s", got, a.Fingerprint())
	}
}

func TestRefuseUnknownTokenLikeWrongSecret(t *testing.T) {
	g := startGateway(t, nil)
	tok := g.agentToken("web-1")
	wrongSecret, err := token.NewAgentToken(tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	unknownID, err := token.NewAgentToken(tok.ID + 1000)
	if err != nil {
		t.Fatal(err)
	}
	unknownWithSecret := token.AgentToken{ID: tok.ID + 1000, Secret: tok.Secret}

	key := newKey(t)
	s, _, err := dial(t, g.addr, key, agentHello(wrongSecret.Reveal()))
	want := wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_REFUSED, "token not valid")
	for name, text := range map[string]string{
		"unknown ID":                    unknownID.Reveal(),
		"unknown ID with a real secret": unknownWithSecret.Reveal(),
		"malformed":                     "not a token",
	} {
		s, _, err := dial(t, g.addr, key, agentHello(text))
		got := wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_REFUSED, "token not valid")
		// No oracle: the whole welcome is the same as for a wrong secret.
		if got.GetStatus() != want.GetStatus() || got.GetMessage() != want.GetMessage() ||
			got.GetProtocolVersion() != want.GetProtocolVersion() || got.GetAgentId() != want.GetAgentId() {
			t.Errorf("%s: welcome %v differs from the wrong-secret welcome %v", name, got, want)
		}
	}
	g.assertNoneConnected()
	assertUnbound(t, g, tok.ID)
	if agents, tokens := g.counts(); agents != 1 || tokens != 1 {
		t.Errorf("catalog has %d agents, %d tokens; want 1, 1", agents, tokens)
	}
	goodAgentConnects(t, g, "web-2")
}

func TestRefuseRevokedToken(t *testing.T) {
	// The agent keeps retrying once revoked: do not let that rate-limit
	// the address before the test is done.
	g := startGateway(t, func(c *Config) { c.FailLimit = 1000 })
	tok := g.agentToken("web-1")
	dir, key := agentDir(t)
	a := startAgent(t, g.addr, dir, &tok, nil)
	g.waitConnected("web-1")
	g.ping("web-1")

	if err := g.RevokeAgentToken(context.Background(), tok.ID, "test"); err != nil {
		t.Fatal(err)
	}
	// The live session is closed, and the agent, reconnecting, is told why.
	g.waitNoneConnected()
	a.logs.Wait(t, `agent refused with "token revoked"`, func(r logRecord) bool {
		var re *channel.RefusedError
		return r.Msg == "cannot connect to the appliance" && errors.As(r.Err(), &re) &&
			re.Welcome.GetStatus() == agentv1.GatewayWelcome_STATUS_REFUSED && re.Welcome.GetMessage() == "token revoked"
	})
	a.stop()
	s, _, err := dial(t, g.addr, key, agentHello(tok.Reveal()))
	wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_REFUSED, "token revoked")
	if _, err := g.Client("web-1"); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Client after revocation: %v, want ErrNotConnected", err)
	}
	g.assertNoneConnected()
	if rec := g.tokenRecord(tok.ID); !rec.Revoked() {
		t.Error("token not revoked in the catalog")
	}

	// A new token for the same machine works.
	tok2 := g.agentToken("web-1")
	startAgent(t, g.addr, dir, &tok2, nil)
	g.waitConnected("web-1")
	g.ping("web-1")
}

func TestRefuseTokenFromAnotherKey(t *testing.T) {
	g := startGateway(t, nil)
	tok := g.agentToken("web-1")
	dir, _ := agentDir(t)
	a := startAgent(t, g.addr, dir, &tok, nil)
	first := g.waitConnected("web-1")
	bound := g.tokenRecord(tok.ID)
	if bound.Fingerprint != a.Fingerprint().String() {
		t.Fatalf("token bound to %q, want %s", bound.Fingerprint, a.Fingerprint())
	}

	// While the first key is connected...
	stolen := newKey(t)
	s, _, err := dial(t, g.addr, stolen, agentHello(tok.Reveal()))
	wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_REFUSED, "bound to another agent key")
	// ...and after it went away.
	a.stop()
	g.waitNoneConnected()
	s, _, err = dial(t, g.addr, stolen, agentHello(tok.Reveal()))
	wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_REFUSED, "bound to another agent key")

	g.assertNoneConnected()
	if d := g.Duplicates(); len(d) != 0 {
		t.Errorf("Duplicates() = %v; another key is not a duplicate", d)
	}
	if rec := g.tokenRecord(tok.ID); rec.Fingerprint != bound.Fingerprint || !rec.BoundAt.Equal(bound.BoundAt) {
		t.Errorf("token now bound to %q at %v, want %q at %v", rec.Fingerprint, rec.BoundAt, bound.Fingerprint, bound.BoundAt)
	}
	if fp := g.agentRecord("web-1").Fingerprint; fp != first.Fingerprint {
		t.Errorf("agent's key is now %q, want %q", fp, first.Fingerprint)
	}

	// The bound key gets back in.
	startAgent(t, g.addr, dir, &tok, nil)
	g.waitConnected("web-1")
	g.ping("web-1")
}

func TestRefuseDuplicateConnection(t *testing.T) {
	g := startGateway(t, nil)
	tok := g.agentToken("web-1")
	dir, key := agentDir(t)
	startAgent(t, g.addr, dir, &tok, nil)
	live := g.waitConnected("web-1")
	if live.LastDuplicate != nil {
		t.Fatalf("LastDuplicate = %+v before any duplicate", live.LastDuplicate)
	}

	// A clone of the machine (same key, same token) connects: by hand, to
	// know its address.
	conn := tlsDial(t, g.addr, key)
	dupAddr := conn.LocalAddr().String()
	conn.SetDeadline(time.Now().Add(waitTimeout))
	if err := channel.WriteFrame(conn, agentHello(tok.Reveal())); err != nil {
		t.Fatal(err)
	}
	w := new(agentv1.GatewayWelcome)
	if err := channel.ReadFrame(conn, w); err != nil {
		t.Fatal(err)
	}
	if w.GetStatus() != agentv1.GatewayWelcome_STATUS_BUSY || !strings.Contains(w.GetMessage(), "another connection with this token is live") {
		t.Fatalf("welcome = %s %q, want STATUS_BUSY", w.GetStatus(), w.GetMessage())
	}
	waitClosed(t, conn, waitTimeout)

	// The first session is untouched and usable.
	now := g.waitConnected("web-1")
	if now.RemoteAddr != live.RemoteAddr || !now.ConnectedSince.Equal(live.ConnectedSince) {
		t.Errorf("live session changed: %s since %v, was %s since %v", now.RemoteAddr, now.ConnectedSince, live.RemoteAddr, live.ConnectedSince)
	}
	if n := len(g.Connected()); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
	g.ping("web-1")

	// Recorded in memory...
	d, ok := g.Duplicates()["web-1"]
	if !ok || d.RemoteAddr != dupAddr || d.Count != 1 || d.At.IsZero() {
		t.Errorf("Duplicates()[web-1] = %+v, %v; want one attempt from %s", d, ok, dupAddr)
	}
	if now.LastDuplicate == nil || now.LastDuplicate.RemoteAddr != dupAddr {
		t.Errorf("Status.LastDuplicate = %+v, want the attempt from %s", now.LastDuplicate, dupAddr)
	}
	// ...and in the audit log.
	var found []catalog.AuditEvent
	for _, e := range g.audit() {
		if e.Action == AuditDuplicate {
			found = append(found, e)
		}
	}
	if len(found) != 1 || found[0].Target != "web-1" || !strings.Contains(found[0].Detail, dupAddr) {
		t.Errorf("audit events %q = %+v; want one for web-1 naming %s", AuditDuplicate, found, dupAddr)
	}

	// A second attempt counts.
	s, _, err := dial(t, g.addr, key, agentHello(tok.Reveal()))
	wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_BUSY, "another connection")
	if d := g.Duplicates()["web-1"]; d.Count != 2 {
		t.Errorf("Count = %d after two attempts, want 2", d.Count)
	}
	g.ping("web-1")
}

func TestSetupToken(t *testing.T) {
	ctx := context.Background()

	t.Run("enrolls", func(t *testing.T) {
		g := startGateway(t, nil)
		st, _, err := g.CreateSetupToken(ctx, "rollout", time.Hour, 5, "test")
		if err != nil {
			t.Fatal(err)
		}
		dir, key := agentDir(t)
		s, _, err := dial(t, g.addr, key, setupHello(st.Reveal()))
		w := wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_ENROLLED, "enrolled")
		if w.GetAgentId() != "host-1" {
			t.Errorf("agent ID = %q, want host-1 (from the hostname)", w.GetAgentId())
		}
		at, err := token.ParseAgentToken(w.GetAgentToken())
		if err != nil {
			t.Fatalf("enrolled token %q: %v", w.GetAgentToken(), err)
		}
		// Enrolling grants no session: the agent must connect with the token.
		g.assertNoneConnected()
		if rec := g.tokenRecord(at.ID); rec.Fingerprint != key.Fingerprint().String() || rec.AgentID != "host-1" {
			t.Errorf("enrolled token record: agent %q, key %q; want host-1, %s", rec.AgentID, rec.Fingerprint, key.Fingerprint())
		}
		startAgent(t, g.addr, dir, &at, nil)
		g.waitConnected("host-1")
		g.ping("host-1")
	})

	t.Run("enrolls a real agent", func(t *testing.T) {
		g := startGateway(t, nil)
		st, _, err := g.CreateSetupToken(ctx, "rollout", time.Hour, 1, "test")
		if err != nil {
			t.Fatal(err)
		}
		dir, key := agentDir(t)
		startAgent(t, g.addr, dir, nil, &st)
		waitFor(t, "an enrolled agent to connect", func() bool { return len(g.Connected()) == 1 })
		c := g.Connected()[0]
		if c.Fingerprint != key.Fingerprint().String() {
			t.Errorf("connected with key %s, want %s", c.Fingerprint, key.Fingerprint())
		}
		g.ping(c.AgentID)
	})

	// refused checks a refused exchange: the answer, and that the catalog
	// holds no new agent or token and the setup token is not used more.
	refused := func(t *testing.T, g *testGateway, st token.SetupToken, key *identity.Identity, msg string) {
		t.Helper()
		agents, tokens := g.counts()
		var before catalog.SetupToken
		view := func() catalog.SetupToken {
			var rec catalog.SetupToken
			if err := g.cat.View(ctx, func(tx *catalog.Tx) error {
				var err error
				rec, err = tx.SetupToken(st.ID)
				return err
			}); err != nil && !errors.Is(err, catalog.ErrNotFound) {
				t.Fatal(err)
			}
			return rec
		}
		before = view()
		s, _, err := dial(t, g.addr, key, setupHello(st.Reveal()))
		w := wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_REFUSED, msg)
		if strings.Contains(w.GetMessage(), st.Secret) {
			t.Errorf("refusal message %q contains the setup token's secret", w.GetMessage())
		}
		if a, tk := g.counts(); a != agents || tk != tokens {
			t.Errorf("catalog went from %d agents, %d tokens to %d, %d on a refusal", agents, tokens, a, tk)
		}
		if after := view(); len(after.UsedBy) != len(before.UsedBy) {
			t.Errorf("setup token used by %v after a refusal, was %v", after.UsedBy, before.UsedBy)
		}
		g.assertNoneConnected()
	}

	t.Run("expired", func(t *testing.T) {
		g := startGateway(t, nil)
		st, _, err := g.CreateSetupToken(ctx, "rollout", time.Hour, 5, "test")
		if err != nil {
			t.Fatal(err)
		}
		g.clock.Advance(time.Hour)
		refused(t, g, st, newKey(t), "expired")
		// Not a matter of the key: a good one fails too, and a fresh setup
		// token works.
		st2, _, err := g.CreateSetupToken(ctx, "rollout", time.Hour, 5, "test")
		if err != nil {
			t.Fatal(err)
		}
		s, _, err := dial(t, g.addr, newKey(t), setupHello(st2.Reveal()))
		wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_ENROLLED, "enrolled")
	})

	t.Run("used up", func(t *testing.T) {
		g := startGateway(t, nil)
		st, _, err := g.CreateSetupToken(ctx, "rollout", time.Hour, 1, "test")
		if err != nil {
			t.Fatal(err)
		}
		s, _, err := dial(t, g.addr, newKey(t), setupHello(st.Reveal()))
		wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_ENROLLED, "enrolled")
		refused(t, g, st, newKey(t), "used up")
	})

	t.Run("used twice by one key", func(t *testing.T) {
		g := startGateway(t, nil)
		st, _, err := g.CreateSetupToken(ctx, "rollout", time.Hour, 5, "test")
		if err != nil {
			t.Fatal(err)
		}
		key := newKey(t)
		s, _, err := dial(t, g.addr, key, setupHello(st.Reveal()))
		wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_ENROLLED, "enrolled")
		refused(t, g, st, key, "already used by agent key")
		// Another key still may.
		s, _, err = dial(t, g.addr, newKey(t), setupHello(st.Reveal()))
		w := wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_ENROLLED, "enrolled")
		if w.GetAgentId() != "host-1-2" {
			t.Errorf("second agent's ID = %q, want host-1-2", w.GetAgentId())
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		g := startGateway(t, nil)
		st, _, err := g.CreateSetupToken(ctx, "rollout", time.Hour, 5, "test")
		if err != nil {
			t.Fatal(err)
		}
		other, err := token.NewSetupToken()
		if err != nil {
			t.Fatal(err)
		}
		refused(t, g, token.SetupToken{ID: st.ID, Secret: other.Secret}, newKey(t), "token not valid")
		refused(t, g, other, newKey(t), "token not valid")
	})
}

func TestHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	// Closed "within HandshakeTimeout": allow for a loaded machine, but
	// far less than the 10 s default.
	const limit = timeout + 2*time.Second
	g := startGateway(t, func(c *Config) { c.HandshakeTimeout = timeout })

	t.Run("random bytes", func(t *testing.T) {
		c := rawDial(t, g.addr)
		junk := make([]byte, 512)
		rand.Read(junk)
		if _, err := c.Write(junk); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c, limit)
	})
	t.Run("silent TCP", func(t *testing.T) {
		c := rawDial(t, g.addr)
		took := waitClosed(t, c, limit)
		t.Logf("closed after %s", took)
	})
	t.Run("TLS without hello", func(t *testing.T) {
		c := tlsDial(t, g.addr, newKey(t))
		took := waitClosed(t, c, limit)
		t.Logf("closed after %s", took)
	})
	t.Run("hello too large", func(t *testing.T) {
		c := tlsDial(t, g.addr, newKey(t))
		if _, err := c.Write([]byte{0xff, 0xff, 0xff, 0xff}); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c, limit)
	})

	g.assertNoneConnected()
	goodAgentConnects(t, g, "web-1")
}

func TestRateLimit(t *testing.T) {
	const limit, window = 3, time.Minute
	g := startGateway(t, func(c *Config) { c.FailLimit, c.FailWindow = limit, window })
	tok := g.agentToken("web-1")
	bad, err := token.NewAgentToken(tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i := range limit {
		s, _, err := dial(t, g.addr, newKey(t), agentHello(bad.Reveal()))
		if s != nil || err == nil {
			t.Fatalf("bad token %d: %v", i, err)
		}
		// Each is answered: the limit is not reached yet.
		wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_REFUSED, "token not valid")
	}

	// Now even a good token is closed before TLS completes.
	key := newKey(t)
	s, _, err := dial(t, g.addr, key, agentHello(tok.Reveal()))
	var re *channel.RefusedError
	if s != nil || err == nil || errors.As(err, &re) {
		t.Fatalf("good token from a rate-limited address: session %v, error %v; want a failed handshake", s != nil, err)
	}
	c := rawDial(t, g.addr)
	waitClosed(t, c, 2*time.Second) // closed without waiting for a ClientHello
	g.assertNoneConnected()
	assertUnbound(t, g, tok.ID)

	// Still blocked just before the window ends, not after.
	g.clock.Advance(window - time.Second)
	s, _, err = dial(t, g.addr, key, agentHello(tok.Reveal()))
	if s != nil || err == nil || errors.As(err, &re) {
		t.Fatalf("good token 1 s before the window ends: session %v, error %v; want a failed handshake", s != nil, err)
	}
	g.clock.Advance(time.Second)
	dir, _ := agentDir(t)
	startAgent(t, g.addr, dir, &tok, nil)
	g.waitConnected("web-1")
	g.ping("web-1")
}

func TestMaxPending(t *testing.T) {
	// A long handshake timeout: the stuck connections hold their places
	// for the whole test.
	g := startGateway(t, func(c *Config) { c.MaxPending, c.HandshakeTimeout = 2, time.Minute })
	stuck := []net.Conn{rawDial(t, g.addr), tlsDial(t, g.addr, newKey(t))}
	// Accepted in order, so the two above hold both places when this one
	// is accepted: it is closed at once, not after the handshake timeout.
	third := rawDial(t, g.addr)
	waitClosed(t, third, 5*time.Second)
	g.assertNoneConnected()

	// The stuck connections were not closed.
	for i, c := range stuck {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		var b [1]byte
		_, err := c.Read(b[:])
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("stuck connection %d: read = %v, want still open (a timeout)", i, err)
		}
		c.Close()
	}
	// Their places free up once they are gone; the agent retries until then.
	goodAgentConnects(t, g, "web-1")
}

func TestVersionRefused(t *testing.T) {
	g := startGateway(t, nil)
	tok := g.agentToken("web-1")
	h := agentHello(tok.Reveal())
	h.ProtocolVersion = agentv1.MinProtocolVersion - 1
	s, _, err := dial(t, g.addr, newKey(t), h)
	wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_VERSION, "protocol")
	g.assertNoneConnected()
	assertUnbound(t, g, tok.ID)

	h = &agentv1.GatewayHello{ProtocolVersion: agentv1.ProtocolVersion}
	s, _, err = dial(t, g.addr, newKey(t), h)
	wantRefused(t, s, err, agentv1.GatewayWelcome_STATUS_REFUSED, "no credential")
	g.assertNoneConnected()
}
