// Package channel is the transport between the appliance and an agent: TLS
// 1.3 with both keys pinned, one yamux session on it, and gRPC on yamux
// streams. Whoever dialed, the appliance is the gRPC client and the agent
// serves the agent API.
//
// Direct mode: the appliance dials the agent's listener (DialAgent) and the
// agent accepts (AcceptAppliance). Reverse mode: the agent dials the
// appliance's gateway (DialGateway), sends a GatewayHello with its token
// and reads a GatewayWelcome before the yamux session starts; the gateway
// side uses AcceptGateway and Welcome. docs/protocol.md describes the
// wire format.
//
// The channel is tuned for bulk transfer (see BenchmarkChannel and the
// Performance section of docs/protocol.md): large windows and write
// buffers, one write system call per yamux frame (frameConn), and calls
// that receive bulk data without copying it (BulkCall, BulkData).
package channel

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/yamux"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/pairing/identity"
)

// ALPN names the channel's framing (TLS, then the mode's handshake, then
// yamux carrying gRPC) in the TLS handshake. A peer that does not offer it
// is refused during the handshake. The agent API's own version is agreed in
// Hello (and, in reverse mode, in GatewayHello).
const ALPN = "cairn-channel/1"

// HandshakeTimeout is the default bound on the TLS handshake and, in
// reverse mode, the GatewayHello/GatewayWelcome exchange.
const HandshakeTimeout = 10 * time.Second

// maxFrame bounds a handshake message.
const maxFrame = 16 << 10

// Flow-control windows and message sizes, tuned for bulk transfer of backup
// data (see BenchmarkChannel and docs/protocol.md).
const (
	// StreamWindow is yamux's per-stream receive window, and so the most a
	// gRPC connection (one yamux stream) has in flight: 4 MiB, 4 GB/s at
	// 1 ms of round trip, 80 MB/s at 50 ms. A larger window lets a fast
	// sender run further ahead of the receiver, whose yamux buffer then
	// grows beyond the CPU caches: at 16 MiB the receiving side took about
	// 20% more CPU per byte (BenchmarkChannel).
	StreamWindow = 4 << 20
	// GRPCWindow is gRPC's per-stream and per-connection window; with
	// StreamWindow below it, yamux's window is the one that binds.
	GRPCWindow = 16 << 20
	// MaxMessage is the largest gRPC message either side accepts.
	MaxMessage = 8 << 20
	// WriteBuffer is gRPC's write buffer on either side: each flush is one
	// yamux frame (a header and a body of TLS records), so 256 KiB frames
	// rather than gRPC's default 32 KiB. The buffer is shared (taken from a
	// pool while writing), so an idle session holds none. gRPC's read
	// buffer is off: the yamux stream already buffers what it receives, and
	// a second buffer only copies it once more.
	WriteBuffer = 256 << 10
)

// KeepAliveInterval is how often yamux pings an idle session; a session
// whose pings go unanswered for ConnectionWriteTimeout is closed.
var KeepAliveInterval = 15 * time.Second

// YamuxConfig is the yamux configuration both sides use. Yamux's own log
// lines go to logger at debug level.
func YamuxConfig(logger *slog.Logger) *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.AcceptBacklog = 256
	cfg.EnableKeepAlive = true
	cfg.KeepAliveInterval = KeepAliveInterval
	cfg.ConnectionWriteTimeout = 10 * time.Second
	cfg.MaxStreamWindowSize = StreamWindow
	cfg.StreamOpenTimeout = 30 * time.Second
	cfg.LogOutput = nil
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = slog.NewLogLogger(logger.Handler(), slog.LevelDebug)
	return cfg
}

// Session is an established channel: a yamux session over pinned TLS.
type Session struct {
	ys     *yamux.Session
	conn   *tls.Conn
	peer   identity.Fingerprint
	remote net.Addr
}

// newSession starts yamux on an authenticated connection (made by
// tlsClient or tlsServer). The side that dialed TCP is the yamux client.
func newSession(conn *tls.Conn, peer identity.Fingerprint, dialed bool, logger *slog.Logger) (*Session, error) {
	var ys *yamux.Session
	var err error
	fc := newFrameConn(conn)
	if dialed {
		ys, err = yamux.Client(fc, YamuxConfig(logger))
	} else {
		ys, err = yamux.Server(fc, YamuxConfig(logger))
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("yamux: %w", err)
	}
	return &Session{ys: ys, conn: conn, peer: peer, remote: conn.RemoteAddr()}, nil
}

// Peer is the fingerprint of the peer's key, checked during the handshake.
func (s *Session) Peer() identity.Fingerprint { return s.peer }

// RemoteAddr is the peer's TCP address.
func (s *Session) RemoteAddr() net.Addr { return s.remote }

// Close closes the session and its connection.
func (s *Session) Close() error { return s.ys.Close() }

// Done is closed when the session ends, for whatever reason.
func (s *Session) Done() <-chan struct{} { return s.ys.CloseChan() }

// Ping measures a round trip on the session itself (below gRPC).
func (s *Session) Ping() (time.Duration, error) { return s.ys.Ping() }

// ClientConn returns a gRPC client connection whose transports are yamux
// streams of the session (the appliance side). It fails its RPCs once the
// session has ended; close it when done.
func (s *Session) ClientConn() (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///cairn-agent",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return s.ys.Open() }),
		// The session is already TLS 1.3 with both keys pinned.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(GRPCWindow),
		grpc.WithInitialConnWindowSize(GRPCWindow),
		grpc.WithReadBufferSize(0),
		grpc.WithWriteBufferSize(WriteBuffer),
		grpc.WithSharedWriteBuffer(true),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessage), grpc.MaxCallSendMsgSize(MaxMessage)),
	)
}

// ServerOptions are the gRPC server options that match ClientConn.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(GRPCWindow),
		grpc.InitialConnWindowSize(GRPCWindow),
		grpc.ReadBufferSize(0),
		grpc.WriteBufferSize(WriteBuffer),
		grpc.SharedWriteBuffer(true),
		grpc.MaxRecvMsgSize(MaxMessage),
		grpc.MaxSendMsgSize(MaxMessage),
	}
}

// Serve serves srv on the session's streams (the agent side) until the
// session ends, and then stops srv. It returns nil when the session ended
// by being closed by either side.
func (s *Session) Serve(srv *grpc.Server) error {
	err := srv.Serve(s.ys)
	srv.Stop()
	if s.ys.IsClosed() || errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// tlsClient and tlsServer run TLS on raw through a batchConn, for
// frameConn.
func tlsClient(raw net.Conn, cfg *tls.Config) *tls.Conn {
	return tls.Client(&batchConn{Conn: raw}, cfg)
}

func tlsServer(raw net.Conn, cfg *tls.Config) *tls.Conn {
	return tls.Server(&batchConn{Conn: raw}, cfg)
}

// handshake runs the TLS handshake within HandshakeTimeout and returns the
// peer's fingerprint.
func handshake(ctx context.Context, conn *tls.Conn, timeout time.Duration) (identity.Fingerprint, error) {
	if timeout <= 0 {
		timeout = HandshakeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		return identity.Fingerprint{}, fmt.Errorf("tls handshake with %s: %w", conn.RemoteAddr(), err)
	}
	fp, err := identity.PeerFingerprint(conn.ConnectionState())
	if err != nil {
		conn.Close()
		return identity.Fingerprint{}, err
	}
	return fp, nil
}

// DialAgent opens a direct-mode session to an agent listening at addr (the
// appliance side). verify decides on the agent's key: identity.Pinned for
// a paired agent, identity.AnyPeer for the first connection of a pairing.
func DialAgent(ctx context.Context, addr string, id *identity.Identity, verify identity.Verifier, logger *slog.Logger) (*Session, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := tlsClient(raw, identity.ClientConfig(id, ALPN, verify))
	fp, err := handshake(ctx, conn, 0)
	if err != nil {
		return nil, err
	}
	return newSession(conn, fp, true, logger)
}

// AcceptAppliance runs the agent's side of a direct-mode connection that
// its listener accepted; timeout bounds the handshake (0: HandshakeTimeout).
func AcceptAppliance(ctx context.Context, raw net.Conn, id *identity.Identity, verify identity.Verifier,
	timeout time.Duration, logger *slog.Logger) (*Session, error) {
	conn := tlsServer(raw, identity.ServerConfig(id, ALPN, verify))
	fp, err := handshake(ctx, conn, timeout)
	if err != nil {
		return nil, err
	}
	return newSession(conn, fp, false, logger)
}

// RefusedError is a GatewayWelcome other than OK.
type RefusedError struct {
	Welcome *agentv1.GatewayWelcome
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("appliance refused the connection: %s: %s",
		e.Welcome.GetStatus(), e.Welcome.GetMessage())
}

// DialGateway opens a reverse-mode connection to the appliance's gateway at
// addr (the agent side): TLS, then hello, then the appliance's welcome. On
// STATUS_OK it returns the session; on any other status it returns the
// welcome and a *RefusedError (STATUS_ENROLLED included: the caller stores
// the new token and dials again).
func DialGateway(ctx context.Context, addr string, id *identity.Identity, verify identity.Verifier,
	hello *agentv1.GatewayHello, logger *slog.Logger) (*Session, *agentv1.GatewayWelcome, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	conn := tlsClient(raw, identity.ClientConfig(id, ALPN, verify))
	fp, err := handshake(ctx, conn, 0)
	if err != nil {
		return nil, nil, err
	}
	welcome := new(agentv1.GatewayWelcome)
	conn.SetDeadline(time.Now().Add(HandshakeTimeout))
	if err := WriteFrame(conn, hello); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("send hello: %w", err)
	}
	if err := ReadFrame(conn, welcome); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("read welcome: %w", err)
	}
	conn.SetDeadline(time.Time{})
	if welcome.GetStatus() != agentv1.GatewayWelcome_STATUS_OK {
		conn.Close()
		return nil, welcome, &RefusedError{Welcome: welcome}
	}
	s, err := newSession(conn, fp, true, logger)
	return s, welcome, err
}

// Pending is a reverse-mode connection on the gateway side after TLS and
// the agent's hello, waiting for the gateway's decision.
type Pending struct {
	conn  *tls.Conn
	Peer  identity.Fingerprint
	Hello *agentv1.GatewayHello
}

// RemoteAddr is the agent's TCP address.
func (p *Pending) RemoteAddr() net.Addr { return p.conn.RemoteAddr() }

// AcceptGateway runs TLS and reads the agent's hello on a connection the
// gateway accepted, all within timeout (0: HandshakeTimeout). The agent's
// key is not pinned here (verify is usually identity.AnyPeer): its token
// decides.
func AcceptGateway(ctx context.Context, raw net.Conn, id *identity.Identity, verify identity.Verifier,
	timeout time.Duration) (*Pending, error) {
	if timeout <= 0 {
		timeout = HandshakeTimeout
	}
	raw.SetDeadline(time.Now().Add(timeout))
	conn := tlsServer(raw, identity.ServerConfig(id, ALPN, verify))
	fp, err := handshake(ctx, conn, timeout)
	if err != nil {
		return nil, err
	}
	hello := new(agentv1.GatewayHello)
	if err := ReadFrame(conn, hello); err != nil {
		conn.Close()
		return nil, fmt.Errorf("read hello from %s: %w", conn.RemoteAddr(), err)
	}
	return &Pending{conn: conn, Peer: fp, Hello: hello}, nil
}

// Refuse sends a welcome other than OK and closes the connection.
func (p *Pending) Refuse(w *agentv1.GatewayWelcome) {
	_ = WriteFrame(p.conn, w)
	p.conn.Close()
}

// Accept sends an OK welcome and starts the session.
func (p *Pending) Accept(w *agentv1.GatewayWelcome, logger *slog.Logger) (*Session, error) {
	w.Status = agentv1.GatewayWelcome_STATUS_OK
	if err := WriteFrame(p.conn, w); err != nil {
		p.conn.Close()
		return nil, fmt.Errorf("send welcome: %w", err)
	}
	p.conn.SetDeadline(time.Time{})
	return newSession(p.conn, p.Peer, false, logger)
}

// WriteFrame writes m as a 4-byte big-endian length and its protobuf bytes.
func WriteFrame(w io.Writer, m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > maxFrame {
		return fmt.Errorf("frame of %d bytes, limit %d", len(b), maxFrame)
	}
	_, err = w.Write(binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(b)), uint32(len(b))))
	if err == nil {
		_, err = w.Write(b)
	}
	return err
}

// ErrFrame is wrapped by ReadFrame's errors for a malformed frame.
var ErrFrame = errors.New("malformed handshake frame")

// ReadFrame reads a frame written by WriteFrame into m.
func ReadFrame(r io.Reader, m proto.Message) error {
	var lb [4]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(lb[:])
	if n > maxFrame {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrame, n, maxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %v", ErrFrame, err)
	}
	return nil
}
