// Package agent is the runtime of cairn-agent: its identity and pin of the
// appliance, the direct-mode listener, the reverse-mode connection loop and
// the agent API served on every session (see pairing/channel), backups
// included: the choice of snapshot provider per volume (agent/snapshot),
// the pre and post scripts (agent/script) and the block reader with its
// change tracking (agent/backup).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/cairnbackup/cairn/agent/backup"
	"github.com/cairnbackup/cairn/agent/snapshot"
	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/token"
)

// maxPendingHandshakes bounds the direct-mode connections in their TLS
// handshake at once; more are closed at once.
const maxPendingHandshakes = 16

// Agent is a running cairn-agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	id    *identity.Identity
	state *state
	// backups keeps the block hashes of backups (<state>/backup).
	backups *backup.Store
	// backingUp is set while a Backup runs: one at a time.
	backingUp atomic.Bool
	lvm       *snapshot.LVM
}

// New loads (or makes) the agent's identity in cfg.StateDir.
func New(cfg Config, logger *slog.Logger) (*Agent, error) {
	if cfg.StateDir == "" {
		return nil, &ConfigError{Msg: "no state directory"}
	}
	if cfg.Listen == "" && cfg.Appliance == "" {
		return nil, &ConfigError{Msg: "nothing to do: neither a listen address (direct mode) nor an appliance (reverse mode) is configured"}
	}
	if cfg.Appliance != "" && cfg.Token == nil && cfg.SetupToken == nil {
		st := &state{dir: cfg.StateDir}
		if t, err := st.enrolledToken(); err != nil || t == nil {
			return nil, &ConfigError{Msg: fmt.Sprintf("reverse mode to %s needs an agent token: put \"token = ID|SECRET\" in %s next to the cairn-agent binary, or set %s", cfg.Appliance, ConfigFile, EnvToken)}
		}
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = time.Minute
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname()
	id, err := identity.LoadOrCreate(cfg.StateDir, host)
	if err != nil {
		return nil, fmt.Errorf("agent identity: %w", err)
	}
	vols, err := absVolumes(cfg.Volumes)
	if err != nil {
		return nil, err
	}
	cfg.Volumes = vols
	store, err := backup.NewStore(filepath.Join(cfg.StateDir, "backup"))
	if err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, log: logger, id: id, state: &state{dir: cfg.StateDir}, backups: store, lvm: &snapshot.LVM{}}, nil
}

// absVolumes makes the configured volumes absolute and drops repeats.
func absVolumes(vols []string) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	for _, v := range vols {
		abs, err := filepath.Abs(v)
		if err != nil {
			return nil, &ConfigError{Msg: fmt.Sprintf("volume %q: %v", v, err)}
		}
		if !seen[abs] {
			seen[abs] = true
			out = append(out, abs)
		}
	}
	return out, nil
}

// Fingerprint is the agent's key fingerprint, which the operator compares
// with the one the appliance shows.
func (a *Agent) Fingerprint() identity.Fingerprint { return a.id.Fingerprint() }

// verify accepts any appliance while the agent is unpaired (the first to
// pair is pinned) and only the pinned one afterwards.
func (a *Agent) verify(peer identity.Fingerprint) error {
	pin, ok, err := a.state.pin()
	if err != nil {
		return err
	}
	if !ok {
		return nil
	}
	return identity.Pinned(pin.Fingerprint)(peer)
}

// Run runs the listener and the reverse-mode loop as configured, until ctx
// ends or the listener fails.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("cairn-agent starting", "fingerprint", a.id.Fingerprint().String(), "short", a.id.Fingerprint().Short(),
		"state", a.cfg.StateDir, "listen", a.cfg.Listen, "appliance", a.cfg.Appliance)
	for _, v := range a.cfg.Volumes {
		if size, err := snapshot.Size(v); err != nil {
			a.log.Warn("image volume cannot be read", "volume", v, "err", err)
		} else {
			a.log.Info("image volume", "volume", v, "size", size)
		}
	}
	if pin, ok, err := a.state.pin(); err != nil {
		return err
	} else if ok {
		a.log.Info("paired", "appliance", pin.Name, "fingerprint", pin.Fingerprint.String(), "agent_id", pin.AgentID)
	} else {
		a.log.Info("not paired: the first appliance to pair will be pinned")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	if a.cfg.Listen != "" {
		ln, err := net.Listen("tcp", a.cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		a.log.Info("listening for the appliance (direct mode)", "addr", ln.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- a.ServeDirect(ctx, ln)
		}()
	}
	if a.cfg.Appliance != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- a.runReverse(ctx)
		}()
	}
	err := <-errc
	cancel()
	wg.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// ServeDirect accepts appliances on ln until ctx ends.
func (a *Agent) ServeDirect(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	sem := make(chan struct{}, maxPendingHandshakes)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		select {
		case sem <- struct{}{}:
		default:
			a.log.Warn("too many pending handshakes; connection closed", "remote", raw.RemoteAddr().String())
			raw.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := channel.AcceptAppliance(ctx, raw, a.id, a.verify, a.cfg.HandshakeTimeout, a.log)
			<-sem
			if err != nil {
				a.log.Warn("appliance connection refused", "remote", raw.RemoteAddr().String(), "err", err)
				return
			}
			a.log.Info("appliance connected (direct mode)", "remote", s.RemoteAddr().String(), "appliance", s.Peer().String())
			a.serve(ctx, s)
			a.log.Info("appliance disconnected", "remote", s.RemoteAddr().String())
		}()
	}
}

// serve serves the agent API on s until s or ctx ends.
func (a *Agent) serve(ctx context.Context, s *channel.Session) {
	svc := &service{a: a, peer: s.Peer()}
	opts := append(channel.ServerOptions(), grpc.UnaryInterceptor(svc.gate), grpc.StreamInterceptor(svc.gateStream))
	srv := grpc.NewServer(opts...)
	agentv1.RegisterAgentServiceServer(srv, svc)
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	if err := s.Serve(srv); err != nil {
		a.log.Warn("session ended", "err", err)
	}
}

// credential picks the reverse-mode credential: the configured agent
// token, else one enrolled with a setup token, else the setup token.
func (a *Agent) credential() (*agentv1.GatewayHello, error) {
	host, _ := os.Hostname()
	hello := &agentv1.GatewayHello{ProtocolVersion: agentv1.ProtocolVersion, Hostname: host}
	if a.cfg.Token != nil {
		hello.Credential = &agentv1.GatewayHello_AgentToken{AgentToken: a.cfg.Token.Reveal()}
		return hello, nil
	}
	t, err := a.state.enrolledToken()
	if err != nil {
		return nil, err
	}
	if t != nil {
		hello.Credential = &agentv1.GatewayHello_AgentToken{AgentToken: t.Reveal()}
		return hello, nil
	}
	if a.cfg.SetupToken != nil {
		hello.Credential = &agentv1.GatewayHello_SetupToken{SetupToken: a.cfg.SetupToken.Reveal()}
		return hello, nil
	}
	return nil, &ConfigError{Msg: "no agent token"}
}

// runReverse keeps a reverse-mode session to the appliance: it dials,
// serves until the session ends, and dials again, waiting a jittered,
// exponentially growing delay between failed attempts.
func (a *Agent) runReverse(ctx context.Context) error {
	bo := backoff{min: a.cfg.BackoffMin, max: a.cfg.BackoffMax}
	for {
		hello, err := a.credential()
		if err != nil {
			return err
		}
		s, welcome, err := channel.DialGateway(ctx, a.cfg.Appliance, a.id, a.verify, hello, a.log)
		if err == nil {
			bo.reset()
			a.log.Info("connected to the appliance (reverse mode)", "appliance", a.cfg.Appliance,
				"agent_id", welcome.GetAgentId(), "protocol", welcome.GetProtocolVersion())
			a.serve(ctx, s)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			a.log.Warn("disconnected from the appliance; reconnecting", "appliance", a.cfg.Appliance)
		} else {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var re *channel.RefusedError
			if errors.As(err, &re) && re.Welcome.GetStatus() == agentv1.GatewayWelcome_STATUS_ENROLLED {
				t, perr := token.ParseAgentToken(re.Welcome.GetAgentToken())
				if perr != nil {
					return fmt.Errorf("appliance sent a malformed agent token: %w", perr)
				}
				if err := a.state.setEnrolledToken(t); err != nil {
					return fmt.Errorf("store the enrolled agent token: %w", err)
				}
				a.log.Info("enrolled with the setup token", "agent_id", re.Welcome.GetAgentId(), "token", t)
				continue
			}
			a.log.Warn("cannot connect to the appliance", "appliance", a.cfg.Appliance, "err", err)
		}
		d := bo.next()
		a.log.Info("reconnecting", "in", d.Round(time.Millisecond).String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

// backoff is jittered exponential backoff: attempt n waits a uniformly
// random time in [d/2, d], d = min(max, min·2ⁿ).
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := b.max
	if b.n < 62 && b.min > 0 && b.min <= b.max>>b.n { // min·2ⁿ ≤ max, without overflow
		d = b.min << b.n
	}
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }
