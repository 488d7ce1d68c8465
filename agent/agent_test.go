package agent

// Refusals on the agent's side, one test each: what the refused side sees,
// that nothing was granted (no pin, no session, nothing in the catalog),
// and that the right appliance still gets in afterwards.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/gateway"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/pairing/identity"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// wantCode checks a gRPC error's code.
func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: %v, want %s", what, err, code)
	}
}

// session is an appliance's bare direct-mode session to an agent: the
// agent API, without the gateway's Hello and Pair.
func session(t *testing.T, addr string, id *identity.Identity) (*channel.Session, agentv1.AgentServiceClient) {
	t.Helper()
	s, err := channel.DialAgent(ctxT(t), addr, id, identity.AnyPeer(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cc, err := s.ClientConn()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return s, agentv1.NewAgentServiceClient(cc)
}

func newIdentity(t *testing.T, name string) *identity.Identity {
	t.Helper()
	id, err := identity.New(name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// gated checks that every RPC but Hello and Pair fails with code.
func gated(t *testing.T, c agentv1.AgentServiceClient, code codes.Code) {
	t.Helper()
	ctx := ctxT(t)
	_, err := c.Ping(ctx, &agentv1.PingRequest{})
	wantCode(t, "Ping", err, code)
	_, err = c.ListVolumes(ctx, &agentv1.ListVolumesRequest{})
	wantCode(t, "ListVolumes", err, code)
	_, err = c.ListWriters(ctx, &agentv1.ListWritersRequest{})
	wantCode(t, "ListWriters", err, code)
	st, err := c.SpeedTest(ctx, &agentv1.SpeedTestRequest{Bytes: 1000})
	if err == nil {
		_, err = st.Recv()
	}
	wantCode(t, "SpeedTest", err, code)
	bst, err := c.Backup(ctx, &agentv1.BackupRequest{JobId: "1", Volumes: []*agentv1.BackupVolume{{VolumeId: "/dev/sda"}}})
	if err == nil {
		_, err = bst.Recv()
	}
	wantCode(t, "Backup", err, code)
	_, err = c.ConfirmBackup(ctx, &agentv1.ConfirmBackupRequest{JobId: "1"})
	wantCode(t, "ConfirmBackup", err, code)
}

// works checks that the agent API answers.
func works(t *testing.T, c agentv1.AgentServiceClient) {
	t.Helper()
	ctx := ctxT(t)
	if _, err := c.Ping(ctx, &agentv1.PingRequest{}); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if _, err := c.ListVolumes(ctx, &agentv1.ListVolumesRequest{}); err != nil {
		t.Errorf("ListVolumes: %v", err)
	}
	st, err := c.SpeedTest(ctx, &agentv1.SpeedTestRequest{Bytes: 1000})
	n := 0
	for err == nil && n <= 1000 {
		var d *agentv1.SpeedTestData
		if d, err = st.Recv(); err == nil {
			n += len(d.GetData())
		}
	}
	if err != io.EOF || n != 1000 {
		t.Errorf("SpeedTest: %d bytes, %v; want 1000 bytes and EOF", n, err)
	}
}

func TestDirectPairedRefusesOtherAppliance(t *testing.T) {
	ctx := ctxT(t)
	ag := startDirect(t)
	a := newAppliance(t, "A")
	st, err := a.PairDirect(ctx, "srv-1", ag.addr, ag.Fingerprint(), "test")
	if err != nil {
		t.Fatal(err)
	}
	if st.Fingerprint != ag.Fingerprint().String() {
		t.Fatalf("A paired with key %s, want %s", st.Fingerprint, ag.Fingerprint())
	}
	pin, ok := ag.pin(t)
	if !ok || pin.Fingerprint != a.Fingerprint() || pin.AgentID != "srv-1" || pin.Name != "A" {
		t.Fatalf("pin = %+v, %v; want appliance A, srv-1", pin, ok)
	}

	b := newAppliance(t, "B")
	for _, expect := range []identity.Fingerprint{{}, ag.Fingerprint()} {
		_, err := b.PairDirect(ctx, "srv-1", ag.addr, expect, "test")
		if err == nil {
			t.Fatalf("B paired with an agent pinned to A (expecting %s)", expect)
		}
		t.Logf("B's PairDirect: %v", err)
		// The agent refused B in the TLS handshake.
		ag.logs.Wait(t, "the agent to refuse B's key", refusedFor("appliance connection refused", identity.ErrPinMismatch))
	}
	b.assertNoneConnected()
	if rec, ok := b.agentRecord("srv-1"); ok {
		t.Errorf("B stored the agent it could not pair: %+v", rec)
	}
	if _, err := b.Client("srv-1"); !errors.Is(err, gateway.ErrNotConnected) {
		t.Errorf("B's Client: %v, want ErrNotConnected", err)
	}
	if p, ok := ag.pin(t); !ok || p != pin {
		t.Errorf("pin is now %+v, %v; want %+v", p, ok, pin)
	}

	// A's session is still up, and A can connect again.
	c, err := a.Client("srv-1")
	if err != nil {
		t.Fatal(err)
	}
	works(t, c)
	a.Disconnect("srv-1")
	waitFor(t, "A's session to end", func() bool { return len(a.Connected()) == 0 })
	if err := a.ConnectDirect(ctx, "srv-1"); err != nil {
		t.Fatalf("A reconnects: %v", err)
	}
	c, err = a.Client("srv-1")
	if err != nil {
		t.Fatal(err)
	}
	works(t, c)
}

func TestUnpairedServesOnlyHelloAndPair(t *testing.T) {
	ag := startDirect(t)
	app := newIdentity(t, "appliance")
	_, c := session(t, ag.addr, app)
	ctx := ctxT(t)

	h, err := c.Hello(ctx, &agentv1.HelloRequest{ProtocolVersion: agentv1.ProtocolVersion})
	if err != nil {
		t.Fatalf("Hello before pairing: %v", err)
	}
	if h.GetFingerprint() != ag.Fingerprint().String() || h.GetAgentId() != "" {
		t.Errorf("Hello = key %s, agent ID %q; want %s, none", h.GetFingerprint(), h.GetAgentId(), ag.Fingerprint())
	}
	gated(t, c, codes.FailedPrecondition)
	if _, ok := ag.pin(t); ok {
		t.Fatal("pinned before Pair")
	}

	resp, err := c.Pair(ctx, &agentv1.PairRequest{ApplianceFingerprint: app.Fingerprint().String(),
		ApplianceName: "A", AgentId: "srv-1"})
	if err != nil {
		t.Fatalf("Pair: %v", err)
	}
	if resp.GetAlreadyPaired() {
		t.Error("AlreadyPaired on the first Pair")
	}
	if p, ok := ag.pin(t); !ok || p.Fingerprint != app.Fingerprint() || p.AgentID != "srv-1" {
		t.Errorf("pin = %+v, %v; want the appliance's key", p, ok)
	}
	works(t, c)
	if h, err := c.Hello(ctx, &agentv1.HelloRequest{ProtocolVersion: agentv1.ProtocolVersion}); err != nil || h.GetAgentId() != "srv-1" {
		t.Errorf("Hello after Pair: agent ID %q, %v; want srv-1", h.GetAgentId(), err)
	}
	resp, err = c.Pair(ctx, &agentv1.PairRequest{ApplianceFingerprint: app.Fingerprint().String(),
		ApplianceName: "A", AgentId: "srv-1"})
	if err != nil || !resp.GetAlreadyPaired() {
		t.Errorf("second Pair: %v, %v; want AlreadyPaired", resp, err)
	}
}

func TestPairRefusesOtherFingerprint(t *testing.T) {
	ag := startDirect(t)
	app := newIdentity(t, "appliance")
	_, c := session(t, ag.addr, app)
	ctx := ctxT(t)

	for _, fp := range []string{newIdentity(t, "other").Fingerprint().String(), "", "SHA256:nope",
		identity.Fingerprint{}.String()} {
		_, err := c.Pair(ctx, &agentv1.PairRequest{ApplianceFingerprint: fp, ApplianceName: "A", AgentId: "srv-1"})
		wantCode(t, "Pair with "+fp, err, codes.InvalidArgument)
	}
	if p, ok := ag.pin(t); ok {
		t.Fatalf("pinned %+v after refused Pairs", p)
	}
	gated(t, c, codes.FailedPrecondition)

	if _, err := c.Pair(ctx, &agentv1.PairRequest{ApplianceFingerprint: app.Fingerprint().String(),
		ApplianceName: "A", AgentId: "srv-1"}); err != nil {
		t.Fatalf("Pair with the session's key: %v", err)
	}
	works(t, c)
}

// An appliance that connected to an unpaired agent but did not pair gets
// nothing once another appliance has paired.
func TestSessionOfUnpinnedApplianceRefused(t *testing.T) {
	ag := startDirect(t)
	x, y := newIdentity(t, "X"), newIdentity(t, "Y")
	_, cx := session(t, ag.addr, x)
	_, cy := session(t, ag.addr, y)
	ctx := ctxT(t)
	if _, err := cy.Pair(ctx, &agentv1.PairRequest{ApplianceFingerprint: y.Fingerprint().String(), AgentId: "srv-1"}); err != nil {
		t.Fatal(err)
	}
	works(t, cy)
	gated(t, cx, codes.PermissionDenied)
	_, err := cx.Pair(ctx, &agentv1.PairRequest{ApplianceFingerprint: x.Fingerprint().String(), AgentId: "srv-2"})
	wantCode(t, "X's Pair", err, codes.PermissionDenied)
	if p, ok := ag.pin(t); !ok || p.Fingerprint != y.Fingerprint() {
		t.Errorf("pin = %+v, %v; want Y", p, ok)
	}
	// And a new connection from X is refused in the handshake.
	// (TLS 1.3: X's side may complete before the agent has checked X's
	// key; the refusal then shows on first use.)
	if s, err := channel.DialAgent(ctx, ag.addr, x, identity.AnyPeer(), nil); err == nil {
		s.Close()
	}
	ag.logs.Wait(t, "the agent to refuse X's key", refusedFor("appliance connection refused", identity.ErrPinMismatch))
}

// clientHello returns the first TLS record a real appliance sends: its
// ClientHello.
func clientHello(t *testing.T, id *identity.Identity) []byte {
	t.Helper()
	p1, p2 := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer p1.Close()
		tls.Client(p1, identity.ClientConfig(id, channel.ALPN, identity.AnyPeer())).Handshake()
	}()
	defer func() {
		p2.Close() // ends the handshake
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Error("TLS client did not stop")
		}
	}()
	p2.SetReadDeadline(time.Now().Add(waitTimeout))
	b := make([]byte, 16<<10)
	n, err := p2.Read(b)
	if err != nil {
		t.Fatalf("read ClientHello: %v", err)
	}
	return b[:n]
}

func TestDirectHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond // startDirect's
	const limit = timeout + 2*time.Second  // far below the 10 s default
	ag := startDirect(t)

	t.Run("random bytes", func(t *testing.T) {
		c := rawDial(t, ag.addr)
		junk := make([]byte, 512)
		rand.Read(junk)
		if _, err := c.Write(junk); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c, limit)
	})
	t.Run("silent TCP", func(t *testing.T) {
		t.Logf("closed after %s", waitClosed(t, rawDial(t, ag.addr), limit))
	})
	t.Run("stalled after ClientHello", func(t *testing.T) {
		// A TLS client that sends its hello and then nothing: it reads
		// the agent's flight but never answers it.
		c := rawDial(t, ag.addr)
		if _, err := c.Write(clientHello(t, newIdentity(t, "appliance"))); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c, limit)
	})
	if _, ok := ag.pin(t); ok {
		t.Fatal("pinned by a broken connection")
	}

	a := newAppliance(t, "A")
	if _, err := a.PairDirect(ctxT(t), "srv-1", ag.addr, ag.Fingerprint(), "test"); err != nil {
		t.Fatalf("a good appliance after the broken connections: %v", err)
	}
	c, err := a.Client("srv-1")
	if err != nil {
		t.Fatal(err)
	}
	works(t, c)
}

func TestPairDirectWrongExpectedFingerprint(t *testing.T) {
	ctx := ctxT(t)
	ag := startDirect(t)
	a := newAppliance(t, "A")
	// The operator typed (or was shown) another key than the agent's.
	typo := newIdentity(t, "not-the-agent").Fingerprint()
	_, err := a.PairDirect(ctx, "srv-1", ag.addr, typo, "test")
	if !errors.Is(err, identity.ErrPinMismatch) {
		t.Fatalf("PairDirect with the wrong key: %v, want ErrPinMismatch", err)
	}
	var pe *identity.PinError
	if !errors.As(err, &pe) || pe.Want != typo || pe.Got != ag.Fingerprint() {
		t.Errorf("PinError = %+v, want expected %s, got %s", pe, typo, ag.Fingerprint())
	}
	a.assertNoneConnected()
	if rec, ok := a.agentRecord("srv-1"); ok {
		t.Errorf("catalog holds the agent after a refused pairing: %+v", rec)
	}
	if p, ok := ag.pin(t); ok {
		t.Errorf("agent pinned %+v after the appliance refused it", p)
	}
	// The appliance aborted the handshake: the agent saw a failed one.
	ag.logs.Wait(t, "the agent to see a failed handshake", msgIs("appliance connection refused"))

	// With the right key it pairs; then a stored key is checked before
	// dialing: pairing again expecting another key is refused too.
	if _, err := a.PairDirect(ctx, "srv-1", ag.addr, ag.Fingerprint(), "test"); err != nil {
		t.Fatalf("PairDirect with the agent's key: %v", err)
	}
	if rec, ok := a.agentRecord("srv-1"); !ok || rec.Fingerprint != ag.Fingerprint().String() || rec.Mode != "direct" {
		t.Errorf("catalog record = %+v, %v; want the agent's key, direct", rec, ok)
	}
	a.Disconnect("srv-1")
	waitFor(t, "the session to end", func() bool { return len(a.Connected()) == 0 })
	if _, err := a.PairDirect(ctx, "srv-1", ag.addr, typo, "test"); !errors.Is(err, identity.ErrPinMismatch) {
		t.Errorf("PairDirect of a known agent with another key: %v, want ErrPinMismatch", err)
	}
	if rec, _ := a.agentRecord("srv-1"); rec.Fingerprint != ag.Fingerprint().String() {
		t.Errorf("stored key changed to %q", rec.Fingerprint)
	}
}

func TestReversePinnedRefusesOtherAppliance(t *testing.T) {
	a, b := newAppliance(t, "A"), newAppliance(t, "B")
	a.serve()
	b.serve()
	tokA, tokB := a.agentToken("srv-1"), b.agentToken("srv-1")
	dir := t.TempDir()

	// The agent pairs with A over its reverse connection.
	ag := run(t, Config{StateDir: dir, Appliance: a.addr, Token: &tokA})
	a.waitConnected("srv-1")
	pin, ok := ag.pin(t)
	if !ok || pin.Fingerprint != a.Fingerprint() {
		t.Fatalf("pin = %+v, %v; want A", pin, ok)
	}
	ag.stop()
	waitFor(t, "A to see the agent go", func() bool { return len(a.Connected()) == 0 })

	// Pointed at B (with a valid token of B's), it refuses B's key.
	ag = run(t, Config{StateDir: dir, Appliance: b.addr, Token: &tokB})
	ag.logs.Wait(t, "the agent to refuse B", refusedFor("cannot connect to the appliance", identity.ErrPinMismatch))
	b.logs.Wait(t, "B to see a failed handshake", msgIs("agent handshake failed"))
	ag.stop()
	b.assertNoneConnected()
	if rec := b.tokenRecord(tokB.ID); rec.Fingerprint != "" || !rec.LastSeenAt.IsZero() {
		t.Errorf("B's token was bound or used: %+v", rec)
	}
	if rec, _ := b.agentRecord("srv-1"); rec.Fingerprint != "" {
		t.Errorf("B stored the agent's key %q", rec.Fingerprint)
	}
	if p, ok := ag.pin(t); !ok || p != pin {
		t.Errorf("pin is now %+v, %v; want %+v", p, ok, pin)
	}

	// A still gets it.
	run(t, Config{StateDir: dir, Appliance: a.addr, Token: &tokA})
	a.waitConnected("srv-1")
	c, err := a.Client("srv-1")
	if err != nil {
		t.Fatal(err)
	}
	works(t, c)
}

func TestDirectMaxPendingHandshakes(t *testing.T) {
	// A long handshake timeout: the stuck connections hold their places.
	ag := run(t, Config{Listen: "on", HandshakeTimeout: time.Minute})
	var stuck []net.Conn
	for range maxPendingHandshakes {
		stuck = append(stuck, rawDial(t, ag.addr))
	}
	// Accepted in order: this one finds no place and is closed at once.
	waitClosed(t, rawDial(t, ag.addr), 5*time.Second)
	for _, c := range stuck {
		c.Close()
	}
	// The places free up as the stuck handshakes fail; the appliance may
	// need a few tries.
	a := newAppliance(t, "A")
	var err error
	waitFor(t, "a good appliance to pair", func() bool {
		_, err = a.PairDirect(ctxT(t), "srv-1", ag.addr, ag.Fingerprint(), "test")
		return err == nil
	})
	c, err := a.Client("srv-1")
	if err != nil {
		t.Fatal(err)
	}
	works(t, c)
}
