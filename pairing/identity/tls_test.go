package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

const testALPN = "cairn-test/1"

// handshakeResult is what one side saw of a connection.
type handshakeResult struct {
	state tls.ConnectionState
	err   error
}

// handshake connects a client with config client to a server with config
// server over loopback TCP, and returns what each side saw. After its
// handshake each side exchanges a byte with the other, so that a refusal the
// peer decides after its own handshake completed (in TLS 1.3 the server checks
// the client's certificate after the client has finished) shows as an error
// on both sides.
func handshake(t *testing.T, server, client *tls.Config) (srv, cli handshakeResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	done := make(chan handshakeResult, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- handshakeResult{err: err}
			return
		}
		defer raw.Close()
		done <- exchange(tls.Server(raw, server), 'S')
	}()

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cli = exchange(tls.Client(raw, client), 'C')
	raw.Close() // so that a server still waiting for the client stops
	srv = <-done
	return srv, cli
}

// exchange runs one side: handshake, write me, read the peer's byte.
func exchange(conn *tls.Conn, me byte) handshakeResult {
	// A deadline only so that a broken test fails instead of hanging.
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return handshakeResult{err: err}
	}
	if err := conn.Handshake(); err != nil {
		return handshakeResult{err: err}
	}
	state := conn.ConnectionState()
	if _, err := conn.Write([]byte{me}); err != nil {
		return handshakeResult{state: state, err: err}
	}
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		return handshakeResult{state: state, err: err}
	}
	if b[0] == me {
		return handshakeResult{state: state, err: errors.New("read back my own byte")}
	}
	return handshakeResult{state: state}
}

func mustNew(t *testing.T, name string) *Identity {
	t.Helper()
	id, err := New(name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// recorder is a Verifier that accepts every key and remembers the last one.
type recorder struct {
	mu    sync.Mutex
	calls int
	peer  Fingerprint
}

func (r *recorder) verify(fp Fingerprint) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.peer = fp
	return nil
}

func (r *recorder) seen() (int, Fingerprint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls, r.peer
}

func TestHandshakePinned(t *testing.T) {
	appliance, agent := mustNew(t, "appliance"), mustNew(t, "agent")
	srv, cli := handshake(t,
		ServerConfig(agent, testALPN, Pinned(appliance.Fingerprint())),
		ClientConfig(appliance, testALPN, Pinned(agent.Fingerprint())))
	if srv.err != nil || cli.err != nil {
		t.Fatalf("handshake failed: server: %v; client: %v", srv.err, cli.err)
	}
	for _, c := range []struct {
		side  string
		state tls.ConnectionState
		want  Fingerprint
	}{
		{"server", srv.state, appliance.Fingerprint()},
		{"client", cli.state, agent.Fingerprint()},
	} {
		got, err := PeerFingerprint(c.state)
		if err != nil {
			t.Errorf("%s: PeerFingerprint: %v", c.side, err)
		} else if got != c.want {
			t.Errorf("%s: PeerFingerprint = %s, want %s", c.side, got, c.want)
		}
		if c.state.Version != tls.VersionTLS13 {
			t.Errorf("%s: version %s, want TLS 1.3", c.side, tls.VersionName(c.state.Version))
		}
		if c.state.NegotiatedProtocol != testALPN {
			t.Errorf("%s: ALPN %q, want %q", c.side, c.state.NegotiatedProtocol, testALPN)
		}
	}
}

// AnyPeer accepts a key never seen before, and the Verifier is given the
// peer's real fingerprint (what the caller then pins).
func TestHandshakeAnyPeer(t *testing.T) {
	appliance, agent := mustNew(t, "appliance"), mustNew(t, "agent")
	var srvRec, cliRec recorder
	srv, cli := handshake(t,
		ServerConfig(agent, testALPN, srvRec.verify),
		ClientConfig(appliance, testALPN, cliRec.verify))
	if srv.err != nil || cli.err != nil {
		t.Fatalf("handshake failed: server: %v; client: %v", srv.err, cli.err)
	}
	if n, fp := srvRec.seen(); n != 1 || fp != appliance.Fingerprint() {
		t.Errorf("server Verifier: %d calls, last with %s; want 1 with %s", n, fp, appliance.Fingerprint())
	}
	if n, fp := cliRec.seen(); n != 1 || fp != agent.Fingerprint() {
		t.Errorf("client Verifier: %d calls, last with %s; want 1 with %s", n, fp, agent.Fingerprint())
	}

	srv, cli = handshake(t, ServerConfig(agent, testALPN, AnyPeer()), ClientConfig(appliance, testALPN, AnyPeer()))
	if srv.err != nil || cli.err != nil {
		t.Fatalf("AnyPeer handshake failed: server: %v; client: %v", srv.err, cli.err)
	}
}

func TestHandshakeWrongPin(t *testing.T) {
	appliance, agent, other := mustNew(t, "appliance"), mustNew(t, "agent"), mustNew(t, "other")
	cases := []struct {
		name           string
		server, client Verifier
		serverChecks   bool // else the client is the side that refuses
	}{
		{"server pins another key", Pinned(other.Fingerprint()), Pinned(agent.Fingerprint()), true},
		{"client pins another key", Pinned(appliance.Fingerprint()), Pinned(other.Fingerprint()), false},
		{"server pins the zero key", Pinned(Fingerprint{}), AnyPeer(), true},
		{"client pins the zero key", AnyPeer(), Pinned(Fingerprint{}), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli := handshake(t, ServerConfig(agent, testALPN, tc.server), ClientConfig(appliance, testALPN, tc.client))
			if srv.err == nil || cli.err == nil {
				t.Fatalf("want both sides to fail; server: %v; client: %v", srv.err, cli.err)
			}
			checker, peer := srv.err, appliance
			if !tc.serverChecks {
				checker, peer = cli.err, agent
			}
			if !errors.Is(checker, ErrPinMismatch) {
				t.Fatalf("error %v of the checking side is not ErrPinMismatch", checker)
			}
			var pe *PinError
			if !errors.As(checker, &pe) {
				t.Fatalf("error %v of the checking side is not a *PinError", checker)
			}
			if pe.Got != peer.Fingerprint() {
				t.Errorf("PinError.Got = %s, want %s", pe.Got, peer.Fingerprint())
			}
			if !strings.Contains(pe.Error(), "peer key "+pe.Got.String()+" is not the pinned "+pe.Want.String()) {
				t.Errorf("PinError.Error() = %q", pe.Error())
			}
		})
	}
}

func TestPinned(t *testing.T) {
	fps := randomFingerprints(t, 2)
	if err := Pinned(fps[0])(fps[0]); err != nil {
		t.Errorf("Pinned(a)(a) = %v", err)
	}
	err := Pinned(fps[0])(fps[1])
	var pe *PinError
	if !errors.Is(err, ErrPinMismatch) || !errors.As(err, &pe) || pe.Want != fps[0] || pe.Got != fps[1] {
		t.Errorf("Pinned(a)(b) = %#v, want *PinError{a, b}", err)
	}
	if err := Pinned(Fingerprint{})(Fingerprint{}); !errors.Is(err, ErrPinMismatch) {
		t.Errorf("Pinned(zero)(zero) = %v, want ErrPinMismatch", err)
	}
	if err := AnyPeer()(fps[1]); err != nil {
		t.Errorf("AnyPeer()(b) = %v", err)
	}
}

// A Verifier's own error is what the checking side's handshake returns.
func TestHandshakeVerifierError(t *testing.T) {
	appliance, agent := mustNew(t, "appliance"), mustNew(t, "agent")
	errRevoked := errors.New("appliance was unpaired")
	srv, cli := handshake(t,
		ServerConfig(agent, testALPN, func(Fingerprint) error { return errRevoked }),
		ClientConfig(appliance, testALPN, AnyPeer()))
	if !errors.Is(srv.err, errRevoked) {
		t.Errorf("server error %v, want %v", srv.err, errRevoked)
	}
	if cli.err == nil {
		t.Error("client saw no error")
	}
}

// Peers that are not Cairn peers, or are misconfigured, are refused.
func TestHandshakeRefused(t *testing.T) {
	appliance, agent := mustNew(t, "appliance"), mustNew(t, "agent")
	rsaCert := foreignCert(t, rsaKey(t))
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecCert := foreignCert(t, ecKey)

	goodServer := func() *tls.Config { return ServerConfig(agent, testALPN, AnyPeer()) }
	goodClient := func() *tls.Config { return ClientConfig(appliance, testALPN, AnyPeer()) }
	// with modifies a good configuration.
	with := func(c *tls.Config, f func(*tls.Config)) *tls.Config { f(c); return c }
	// A plain TLS 1.3 client or server that does no pinning of its own.
	plainClient := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: []string{testALPN}, Certificates: certs}
	}
	plainServer := func(cert tls.Certificate) *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequireAnyClientCert, NextProtos: []string{testALPN}, Certificates: []tls.Certificate{cert}}
	}

	cases := []struct {
		name           string
		server, client *tls.Config
		serverWant     string // in the server's error, if it is the side that checked
		clientWant     string // in the client's error, if it is the side that checked
	}{
		{name: "client without certificate", server: goodServer(), client: plainClient()},
		{name: "client with RSA certificate", server: goodServer(), client: plainClient(rsaCert),
			serverWant: "peer key is RSA, want Ed25519"},
		{name: "client with ECDSA certificate", server: goodServer(), client: plainClient(ecCert),
			serverWant: "peer key is ECDSA, want Ed25519"},
		{name: "server with RSA certificate", server: plainServer(rsaCert), client: goodClient(),
			clientWant: "peer key is RSA, want Ed25519"},
		{name: "server with ECDSA certificate", server: plainServer(ecCert), client: goodClient(),
			clientWant: "peer key is ECDSA, want Ed25519"},
		{name: "TLS 1.2 client", server: goodServer(), client: with(goodClient(), func(c *tls.Config) {
			c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		})},
		{name: "TLS 1.2 server", server: with(goodServer(), func(c *tls.Config) {
			c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		}), client: goodClient()},
		{name: "client without ALPN", server: goodServer(), client: with(plainClient(appliance.Certificate()), func(c *tls.Config) {
			c.NextProtos = nil
		}),
			serverWant: `peer did not negotiate ALPN protocol "` + testALPN + `"`},
		{name: "client with another ALPN", server: goodServer(), client: with(plainClient(appliance.Certificate()), func(c *tls.Config) {
			c.NextProtos = []string{"cairn-test/2"}
		})},
		{name: "our client with another ALPN", server: goodServer(), client: ClientConfig(appliance, "cairn-test/2", AnyPeer())},
		{name: "client with another ALPN besides", server: with(goodServer(), func(c *tls.Config) {
			c.NextProtos = []string{"h2", testALPN}
		}), client: with(plainClient(appliance.Certificate()), func(c *tls.Config) { c.NextProtos = []string{"h2", testALPN} }),
			serverWant: `peer negotiated ALPN protocol "h2", want "` + testALPN + `"`},
		{name: "server without ALPN", server: with(goodServer(), func(c *tls.Config) { c.NextProtos = nil }), client: goodClient(),
			clientWant: `peer did not negotiate ALPN protocol "` + testALPN + `"`},
		{name: "server with nil Verifier", server: ServerConfig(agent, testALPN, nil), client: goodClient(),
			serverWant: "no Verifier"},
		{name: "client with nil Verifier", server: goodServer(), client: ClientConfig(appliance, testALPN, nil),
			clientWant: "no Verifier"},
		{name: "empty ALPN", server: ServerConfig(agent, "", AnyPeer()), client: ClientConfig(appliance, "", AnyPeer())},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli := handshake(t, tc.server, tc.client)
			if srv.err == nil || cli.err == nil {
				t.Fatalf("want both sides to fail; server: %v; client: %v", srv.err, cli.err)
			}
			if tc.serverWant != "" && !strings.Contains(srv.err.Error(), tc.serverWant) {
				t.Errorf("server error %q does not say %q", srv.err, tc.serverWant)
			}
			if tc.clientWant != "" && !strings.Contains(cli.err.Error(), tc.clientWant) {
				t.Errorf("client error %q does not say %q", cli.err, tc.clientWant)
			}
		})
	}
}

func TestConfigs(t *testing.T) {
	id := mustNew(t, "x")
	for name, c := range map[string]*tls.Config{
		"server": ServerConfig(id, testALPN, AnyPeer()),
		"client": ClientConfig(id, testALPN, AnyPeer()),
	} {
		if c.MinVersion != tls.VersionTLS13 || c.MaxVersion != tls.VersionTLS13 {
			t.Errorf("%s: versions %x..%x, want TLS 1.3 only", name, c.MinVersion, c.MaxVersion)
		}
		if len(c.NextProtos) != 1 || c.NextProtos[0] != testALPN {
			t.Errorf("%s: NextProtos %q", name, c.NextProtos)
		}
		if len(c.Certificates) != 1 {
			t.Errorf("%s: %d certificates, want 1", name, len(c.Certificates))
		}
		if c.VerifyConnection == nil {
			t.Errorf("%s: no VerifyConnection", name)
		}
	}
	if c := ServerConfig(id, testALPN, AnyPeer()); c.ClientAuth != tls.RequireAnyClientCert {
		t.Errorf("server: ClientAuth %v, want RequireAnyClientCert", c.ClientAuth)
	}
}

func TestPeerFingerprintRefuses(t *testing.T) {
	if _, err := PeerFingerprint(tls.ConnectionState{}); err == nil {
		t.Error("PeerFingerprint of a state without certificates succeeded")
	}
	leaf, err := x509.ParseCertificate(foreignCert(t, rsaKey(t)).Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PeerFingerprint(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}); err == nil {
		t.Error("PeerFingerprint of an RSA certificate succeeded")
	}
}

// foreignCert is a self-signed certificate for a key that is not Ed25519.
func foreignCert(t *testing.T, key crypto.Signer) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "foreign"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
