package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/pairing/identity"
)

// PairDirect pairs a direct-mode agent listening at addr under agentID:
// it dials the agent, checks its key against expect (when not zero: the
// fingerprint the operator read off the agent's console), makes the agent
// pin this appliance, stores the agent with its key in the catalog and
// keeps the session. Pairing an agent again (same ID, same key) reconnects.
func (g *Gateway) PairDirect(ctx context.Context, agentID, addr string, expect identity.Fingerprint, actor string) (Status, error) {
	var known catalog.Agent
	err := g.cat.View(ctx, func(tx *catalog.Tx) error {
		var err error
		known, err = tx.Agent(agentID)
		return err
	})
	switch {
	case errors.Is(err, catalog.ErrNotFound):
	case err != nil:
		return Status{}, err
	case known.Mode != catalog.ModeDirect:
		return Status{}, fmt.Errorf("agent %q is a reverse-mode agent: %w", agentID, catalog.ErrInvalid)
	case known.Fingerprint != "":
		fp, err := identity.ParseFingerprint(known.Fingerprint)
		if err != nil {
			return Status{}, fmt.Errorf("agent %q: stored fingerprint: %w", agentID, err)
		}
		if !expect.IsZero() && expect != fp {
			return Status{}, &identity.PinError{Want: fp, Got: expect}
		}
		expect = fp
	}
	verify := identity.AnyPeer()
	if !expect.IsZero() {
		verify = identity.Pinned(expect)
	}
	s, err := channel.DialAgent(ctx, addr, g.id, verify, g.log)
	if err != nil {
		return Status{}, fmt.Errorf("connect to agent at %s: %w", addr, err)
	}
	c := &conn{agentID: agentID, mode: catalog.ModeDirect, s: s}
	if !g.reserve(c) {
		s.Close()
		return Status{}, fmt.Errorf("agent %q is already connected", agentID)
	}
	if err := g.start(ctx, c, true); err != nil {
		s.Close()
		g.release(c)
		if status.Code(errors.Unwrap(err)) == codes.Unavailable {
			// In TLS 1.3 the agent checks our key after our side of the
			// handshake is done: its refusal shows as a closed session.
			return Status{}, fmt.Errorf("agent at %s closed the connection after TLS: it is probably paired with another appliance "+
				"(run \"cairn-agent unpair\" on it to pair it here): %w", addr, err)
		}
		return Status{}, err
	}
	err = g.cat.Update(ctx, func(tx *catalog.Tx) error {
		a := known
		a.ID, a.Mode, a.Address, a.Fingerprint = agentID, catalog.ModeDirect, addr, s.Peer().String()
		a.Hostname = c.hello.GetHostname()
		if err := tx.PutAgent(a); err != nil {
			return err
		}
		return tx.Audit(catalog.AuditEvent{Actor: actor, Action: "agent.paired", Target: agentID,
			Detail: fmt.Sprintf("direct mode at %s, key %s", addr, s.Peer())})
	})
	if err != nil {
		s.Close()
		return Status{}, err
	}
	return g.status(agentID)
}

func (g *Gateway) status(agentID string) (Status, error) {
	for _, st := range g.Connected() {
		if st.AgentID == agentID {
			return st, nil
		}
	}
	return Status{}, fmt.Errorf("agent %q: %w", agentID, ErrNotConnected)
}

// Dial returns the client of an agent like Client, but first connects a
// paired direct-mode agent that has no session (KeepDirect tries only
// once per interval): for work that should not wait for that, such as a
// backup. A reverse-mode agent without a session is ErrNotConnected.
func (g *Gateway) Dial(ctx context.Context, agentID string) (agentv1.AgentServiceClient, error) {
	c, err := g.Client(agentID)
	if err == nil || !errors.Is(err, ErrNotConnected) {
		return c, err
	}
	var a catalog.Agent
	if verr := g.cat.View(ctx, func(tx *catalog.Tx) error {
		var err error
		a, err = tx.Agent(agentID)
		return err
	}); verr != nil || a.Mode != catalog.ModeDirect {
		return nil, err
	}
	// KeepDirect may be connecting at the same moment: then wait for that
	// connection, which is ready after its Hello.
	for {
		if c, err := g.Client(agentID); err == nil {
			return c, nil
		}
		if !g.connecting(agentID) {
			if err := g.ConnectDirect(ctx, agentID); err != nil {
				return nil, fmt.Errorf("agent %q: %w: dialing %s: %v", agentID, ErrNotConnected, a.Address, err)
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("agent %q: %w: %v", agentID, ErrNotConnected, ctx.Err())
		case <-time.After(20 * time.Millisecond): // the other connection's handshake
		}
	}
}

// connecting reports whether a connection of the agent is being set up.
func (g *Gateway) connecting(agentID string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.conns[agentID]
	return c != nil && c.client == nil
}

// ConnectDirect dials a paired direct-mode agent from the catalog, its key
// pinned, unless it is connected already.
func (g *Gateway) ConnectDirect(ctx context.Context, agentID string) error {
	if _, err := g.Client(agentID); err == nil {
		return nil
	}
	var a catalog.Agent
	if err := g.cat.View(ctx, func(tx *catalog.Tx) error {
		var err error
		a, err = tx.Agent(agentID)
		return err
	}); err != nil {
		return err
	}
	if a.Mode != catalog.ModeDirect || a.Address == "" || a.Fingerprint == "" {
		return fmt.Errorf("agent %q is not a paired direct-mode agent", agentID)
	}
	fp, err := identity.ParseFingerprint(a.Fingerprint)
	if err != nil {
		return err
	}
	s, err := channel.DialAgent(ctx, a.Address, g.id, identity.Pinned(fp), g.log)
	if err != nil {
		return err
	}
	c := &conn{agentID: agentID, mode: catalog.ModeDirect, s: s}
	if !g.reserve(c) {
		s.Close()
		return nil
	}
	if err := g.start(ctx, c, false); err != nil {
		s.Close()
		g.release(c)
		return err
	}
	return nil
}

// KeepDirect reconnects paired direct-mode agents every interval until ctx
// ends.
func (g *Gateway) KeepDirect(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var agents []catalog.Agent
		_ = g.cat.View(ctx, func(tx *catalog.Tx) error {
			var err error
			agents, err = tx.Agents()
			return err
		})
		for _, a := range agents {
			if a.Mode == catalog.ModeDirect && a.Fingerprint != "" && a.Address != "" {
				dctx, cancel := context.WithTimeout(ctx, channel.HandshakeTimeout)
				if err := g.ConnectDirect(dctx, a.ID); err != nil {
					g.log.Debug("direct agent unreachable", "agent", a.ID, "addr", a.Address, "err", err)
				}
				cancel()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
