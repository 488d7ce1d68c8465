// Package gateway holds the appliance's live sessions with agents, in both
// modes: it accepts reverse-mode agents on the agent gateway port (token
// checked, bound to the agent's key, one live connection per token), dials
// direct-mode agents, and gives the rest of the appliance a gRPC client for
// an agent by ID. docs/protocol.md describes the protocol.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/pairing/identity"
)

// Defaults for Config's zero values.
const (
	DefaultMaxPending   = 64
	DefaultFailLimit    = 10
	DefaultFailWindow   = time.Minute
	DefaultPingInterval = 30 * time.Second
	rpcTimeout          = 15 * time.Second
)

// ErrNotConnected is returned by Client for an agent with no live session.
var ErrNotConnected = errors.New("agent not connected")

// Config configures a Gateway.
type Config struct {
	Catalog  *catalog.Catalog
	Identity *identity.Identity
	// Name is the appliance's name, which agents show once paired.
	Name   string
	Logger *slog.Logger
	// HandshakeTimeout bounds TLS and the hello of a reverse connection
	// (0: channel.HandshakeTimeout).
	HandshakeTimeout time.Duration
	// MaxPending caps reverse connections in their handshake; more are
	// closed at once.
	MaxPending int
	// FailLimit failed credentials from one IP address within FailWindow
	// make the gateway close that address's connections at once until the
	// window has passed.
	FailLimit  int
	FailWindow time.Duration
	// PingInterval is how often a live session is pinged (LastSeen).
	PingInterval time.Duration
	// Now is the clock, for tests; nil is time.Now.
	Now func() time.Time
}

// Gateway is the appliance's side of every agent session.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	cat     *catalog.Catalog
	id      *identity.Identity
	pending chan struct{}
	fails   *failLimiter

	mu      sync.Mutex
	conns   map[string]*conn // by agent ID
	byToken map[uint64]*conn
	dups    map[string]Duplicate // last duplicate attempt, by agent ID
	wg      sync.WaitGroup
	closed  bool
}

// Duplicate is a connection refused because its token already had a live
// one.
type Duplicate struct {
	At         time.Time `json:"at"`
	RemoteAddr string    `json:"remote_addr"`
	Count      int       `json:"count"`
}

// Status is one connected agent.
type Status struct {
	AgentID        string        `json:"agent_id"`
	Mode           string        `json:"mode"`
	RemoteAddr     string        `json:"remote_addr"`
	Fingerprint    string        `json:"fingerprint"`
	Hostname       string        `json:"hostname"`
	OS             string        `json:"os"`
	AgentVersion   string        `json:"agent_version"`
	Protocol       uint32        `json:"protocol"`
	ConnectedSince time.Time     `json:"connected_since"`
	LastSeen       time.Time     `json:"last_seen"`
	RTT            time.Duration `json:"rtt_ns"`
	// LastDuplicate is the last connection refused because this agent's
	// token was already live; nil if none since the appliance started.
	LastDuplicate *Duplicate `json:"last_duplicate,omitempty"`
}

// conn is a live session with an agent.
type conn struct {
	agentID string
	mode    string
	tokenID uint64
	s       *channel.Session
	cc      *grpc.ClientConn
	client  agentv1.AgentServiceClient
	since   time.Time
	hello   *agentv1.HelloResponse

	lastSeen atomic.Int64 // unix nanoseconds
	rtt      atomic.Int64
}

// New makes a gateway; Serve accepts reverse-mode agents, PairDirect and
// ConnectDirect reach direct-mode ones.
func New(cfg Config) (*Gateway, error) {
	if cfg.Catalog == nil || cfg.Identity == nil {
		return nil, errors.New("gateway: catalog and identity are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.FailLimit <= 0 {
		cfg.FailLimit = DefaultFailLimit
	}
	if cfg.FailWindow <= 0 {
		cfg.FailWindow = DefaultFailWindow
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Gateway{
		cfg: cfg, log: cfg.Logger, cat: cfg.Catalog, id: cfg.Identity,
		pending: make(chan struct{}, cfg.MaxPending),
		fails:   newFailLimiter(cfg.FailLimit, cfg.FailWindow, cfg.Now),
		conns:   make(map[string]*conn), byToken: make(map[uint64]*conn), dups: make(map[string]Duplicate),
	}, nil
}

// Fingerprint is the appliance's key fingerprint.
func (g *Gateway) Fingerprint() identity.Fingerprint { return g.id.Fingerprint() }

// Client returns the agent API client of a connected agent.
func (g *Gateway) Client(agentID string) (agentv1.AgentServiceClient, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.conns[agentID]
	if c == nil || c.client == nil {
		return nil, fmt.Errorf("agent %q: %w", agentID, ErrNotConnected)
	}
	return c.client, nil
}

// Connected lists the connected agents by ID.
func (g *Gateway) Connected() []Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Status, 0, len(g.conns))
	for _, c := range g.conns {
		if c.client == nil {
			continue // still in Hello
		}
		st := Status{
			AgentID: c.agentID, Mode: c.mode, RemoteAddr: c.s.RemoteAddr().String(),
			Fingerprint: c.s.Peer().String(), ConnectedSince: c.since,
			LastSeen: time.Unix(0, c.lastSeen.Load()), RTT: time.Duration(c.rtt.Load()),
		}
		if h := c.hello; h != nil {
			st.Hostname, st.OS, st.AgentVersion, st.Protocol = h.GetHostname(), h.GetOs(), h.GetAgentVersion(), h.GetProtocolVersion()
		}
		if d, ok := g.dups[c.agentID]; ok {
			st.LastDuplicate = &d
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].AgentID < out[j].AgentID })
	return out
}

// Duplicates returns the last duplicate attempt per agent ID.
func (g *Gateway) Duplicates() map[string]Duplicate {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]Duplicate, len(g.dups))
	for k, v := range g.dups {
		out[k] = v
	}
	return out
}

// Disconnect closes an agent's live session, if any.
func (g *Gateway) Disconnect(agentID string) {
	g.mu.Lock()
	var s *channel.Session
	if c := g.conns[agentID]; c != nil {
		s = c.s
	}
	g.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

// Close closes every session and waits for their goroutines.
func (g *Gateway) Close() error {
	g.mu.Lock()
	g.closed = true
	var all []*channel.Session
	for _, c := range g.conns {
		if c.s != nil {
			all = append(all, c.s)
		}
	}
	g.mu.Unlock()
	for _, s := range all {
		s.Close()
	}
	g.wg.Wait()
	return nil
}

// reserve registers c as the live session of its agent (and token), unless
// one is live already.
func (g *Gateway) reserve(c *conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	if _, ok := g.conns[c.agentID]; ok {
		return false
	}
	if c.tokenID != 0 {
		if _, ok := g.byToken[c.tokenID]; ok {
			return false
		}
		g.byToken[c.tokenID] = c
	}
	g.conns[c.agentID] = c
	return true
}

func (g *Gateway) release(c *conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conns[c.agentID] == c {
		delete(g.conns, c.agentID)
	}
	if c.tokenID != 0 && g.byToken[c.tokenID] == c {
		delete(g.byToken, c.tokenID)
	}
}

// start runs Hello (and Pair) on a reserved session, then keeps it: pings
// it every PingInterval and releases it when it ends.
func (g *Gateway) start(ctx context.Context, c *conn, pair bool) error {
	cc, err := c.s.ClientConn()
	if err != nil {
		return err
	}
	client := agentv1.NewAgentServiceClient(cc)
	hctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	hello, err := client.Hello(hctx, &agentv1.HelloRequest{
		ProtocolVersion: agentv1.ProtocolVersion, ApplianceFingerprint: g.id.Fingerprint().String()})
	if err != nil {
		cc.Close()
		return fmt.Errorf("hello: %w", err)
	}
	if hello.GetFingerprint() != c.s.Peer().String() {
		cc.Close()
		return fmt.Errorf("agent says its key is %s but presented %s", hello.GetFingerprint(), c.s.Peer())
	}
	if hello.GetProtocolVersion() < agentv1.MinProtocolVersion {
		cc.Close()
		return fmt.Errorf("agent speaks protocol %d, this appliance needs at least %d", hello.GetProtocolVersion(), agentv1.MinProtocolVersion)
	}
	if pair {
		_, err := client.Pair(hctx, &agentv1.PairRequest{
			ApplianceFingerprint: g.id.Fingerprint().String(), ApplianceName: g.cfg.Name, AgentId: c.agentID})
		if err != nil {
			cc.Close()
			return fmt.Errorf("pair: %w", err)
		}
	}
	now := g.cfg.Now()
	g.mu.Lock()
	c.cc, c.client, c.hello, c.since = cc, client, hello, now
	g.mu.Unlock()
	c.lastSeen.Store(now.UnixNano())
	g.log.Info("agent connected", "agent", c.agentID, "mode", c.mode, "remote", c.s.RemoteAddr().String(),
		"fingerprint", c.s.Peer().String(), "hostname", hello.GetHostname(), "version", hello.GetAgentVersion())
	g.wg.Add(1)
	go g.keep(c)
	return nil
}

// keep pings a session until it ends, then releases it.
func (g *Gateway) keep(c *conn) {
	defer g.wg.Done()
	defer func() {
		c.cc.Close()
		g.release(c)
		g.log.Info("agent disconnected", "agent", c.agentID, "mode", c.mode, "remote", c.s.RemoteAddr().String())
	}()
	t := time.NewTicker(g.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.s.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
			start := time.Now()
			_, err := c.client.Ping(ctx, &agentv1.PingRequest{SentUnixNano: start.UnixNano()})
			cancel()
			if err != nil {
				g.log.Warn("agent ping failed; closing the session", "agent", c.agentID, "err", err)
				c.s.Close()
				return
			}
			c.rtt.Store(int64(time.Since(start)))
			c.lastSeen.Store(g.cfg.Now().UnixNano())
		}
	}
}
