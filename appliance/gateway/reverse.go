package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/token"
)

// Audit actions the gateway records.
const (
	AuditDuplicate = "agent.duplicate_connection"
	AuditBound     = "agent_token.bound"
	AuditEnrolled  = "setup_token.exchanged"
	AuditRefused   = "agent.refused"
)

// Serve accepts reverse-mode agents on ln until ctx ends.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		ip := hostOf(raw.RemoteAddr())
		if g.fails.blocked(ip) {
			g.log.Debug("connection from a rate-limited address closed", "remote", raw.RemoteAddr().String())
			raw.Close()
			continue
		}
		select {
		case g.pending <- struct{}{}:
		default:
			g.log.Warn("too many pending handshakes; connection closed", "remote", raw.RemoteAddr().String())
			raw.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.handle(ctx, raw)
		}()
	}
}

func hostOf(a net.Addr) string {
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// refusal is why a reverse connection was refused: what the agent is told
// and whether it counts against its address.
type refusal struct {
	status agentv1.GatewayWelcome_Status
	msg    string
	fail   bool
}

func (r *refusal) Error() string { return r.msg }

var errBadToken = &refusal{status: agentv1.GatewayWelcome_STATUS_REFUSED, msg: "token not valid", fail: true}

// handle runs one reverse connection: handshake, credential, session.
func (g *Gateway) handle(ctx context.Context, raw net.Conn) {
	released := false
	release := func() {
		if !released {
			released = true
			<-g.pending
		}
	}
	defer release()
	remote := raw.RemoteAddr().String()
	ip := hostOf(raw.RemoteAddr())
	p, err := channel.AcceptGateway(ctx, raw, g.id, identity.AnyPeer(), g.cfg.HandshakeTimeout)
	if err != nil {
		g.log.Info("agent handshake failed", "remote", remote, "err", err)
		if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			g.fails.fail(ip)
		}
		raw.Close()
		return
	}
	welcome := &agentv1.GatewayWelcome{ProtocolVersion: min(p.Hello.GetProtocolVersion(), agentv1.ProtocolVersion)}
	if v := p.Hello.GetProtocolVersion(); v < agentv1.MinProtocolVersion {
		welcome.Status = agentv1.GatewayWelcome_STATUS_VERSION
		welcome.Message = fmt.Sprintf("agent speaks protocol %d, this appliance needs %d to %d", v, agentv1.MinProtocolVersion, agentv1.ProtocolVersion)
		p.Refuse(welcome)
		return
	}
	var c *conn
	switch cred := p.Hello.GetCredential().(type) {
	case *agentv1.GatewayHello_AgentToken:
		c, err = g.admit(ctx, p, cred.AgentToken)
	case *agentv1.GatewayHello_SetupToken:
		err = g.enroll(ctx, p, cred.SetupToken, welcome)
	default:
		err = &refusal{status: agentv1.GatewayWelcome_STATUS_REFUSED, msg: "no credential", fail: true}
	}
	if err != nil {
		var r *refusal
		if !errors.As(err, &r) {
			g.log.Error("agent connection failed", "remote", remote, "err", err)
			r = &refusal{status: agentv1.GatewayWelcome_STATUS_REFUSED, msg: "internal error; see the appliance's log"}
		}
		if r.fail {
			g.fails.fail(ip)
		}
		g.log.Warn("agent refused", "remote", remote, "fingerprint", p.Peer.String(), "reason", r.msg)
		welcome.Status, welcome.Message = r.status, r.msg
		p.Refuse(welcome)
		return
	}
	if c == nil { // enrolled: the welcome carries the new token
		p.Refuse(welcome)
		return
	}
	welcome.AgentId = c.agentID
	s, err := p.Accept(welcome, g.log)
	release()
	if err != nil {
		g.release(c)
		g.log.Warn("agent session failed to start", "remote", remote, "err", err)
		return
	}
	g.mu.Lock()
	c.s = s
	closed := g.closed
	g.mu.Unlock()
	// RevokeAgentToken and Close close the sessions they find, but not one
	// still being admitted (c.s was not set): check again now that they
	// would find it.
	if err := g.checkNotRevoked(ctx, c.tokenID); err != nil || closed {
		g.log.Warn("agent session closed before it started", "agent", c.agentID, "remote", remote, "err", err, "gateway_closed", closed)
		s.Close()
		g.release(c)
		return
	}
	if err := g.start(ctx, c, true); err != nil {
		g.log.Warn("agent session failed", "agent", c.agentID, "remote", remote, "err", err)
		s.Close()
		g.release(c)
	}
}

// checkNotRevoked fails if agent token id has been revoked.
func (g *Gateway) checkNotRevoked(ctx context.Context, id uint64) error {
	return g.cat.View(ctx, func(tx *catalog.Tx) error {
		rec, err := tx.AgentToken(id)
		if err == nil && rec.Revoked() {
			err = errors.New("token revoked")
		}
		return err
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// admit checks an agent token and reserves the agent's session.
func (g *Gateway) admit(ctx context.Context, p *channel.Pending, text string) (*conn, error) {
	t, err := token.ParseAgentToken(text)
	if err != nil {
		return nil, errBadToken
	}
	fp := p.Peer.String()
	remote := p.RemoteAddr().String()
	var rec catalog.AgentToken
	err = g.cat.Update(ctx, func(tx *catalog.Tx) error {
		var err error
		rec, err = tx.AgentToken(t.ID)
		if errors.Is(err, catalog.ErrNotFound) {
			return errBadToken
		}
		if err != nil {
			return err
		}
		// Compare the secret before saying anything token-specific.
		if !token.VerifySecret(rec.SecretHash, t.Secret) {
			return errBadToken
		}
		if rec.Revoked() {
			return &refusal{status: agentv1.GatewayWelcome_STATUS_REFUSED, msg: "token revoked", fail: true}
		}
		if rec.Fingerprint != "" && rec.Fingerprint != fp {
			return &refusal{status: agentv1.GatewayWelcome_STATUS_REFUSED, fail: true,
				msg: "token is bound to another agent key; create a new token for this machine"}
		}
		now := g.cfg.Now().UTC()
		if rec.Fingerprint == "" {
			rec.Fingerprint, rec.BoundAt = fp, now
			a, err := tx.Agent(rec.AgentID)
			if err != nil {
				return err
			}
			a.Fingerprint = fp
			if h := p.Hello.GetHostname(); h != "" && a.Hostname == "" {
				a.Hostname = h
			}
			if err := tx.PutAgent(a); err != nil {
				return err
			}
			if err := tx.Audit(catalog.AuditEvent{Actor: "gateway", Action: AuditBound, Target: rec.AgentID,
				Detail: fmt.Sprintf("token %d bound to %s from %s", rec.ID, fp, remote)}); err != nil {
				return err
			}
		}
		if !rec.BoundAt.Equal(now) {
			return nil // already bound: nothing to write before the reservation
		}
		return tx.PutAgentToken(rec)
	})
	if err != nil {
		return nil, err
	}
	c := &conn{agentID: rec.AgentID, mode: catalog.ModeReverse, tokenID: rec.ID}
	reserved := g.reserve(c)
	if reserved {
		// Only the connection that became live is the token's last seen.
		err := g.cat.Update(ctx, func(tx *catalog.Tx) error {
			cur, err := tx.AgentToken(rec.ID)
			if err != nil {
				return err
			}
			cur.LastSeenAt, cur.LastAddr = g.cfg.Now().UTC(), remote
			return tx.PutAgentToken(cur)
		})
		if err != nil {
			g.release(c)
			return nil, err
		}
	}
	if !reserved {
		g.mu.Lock()
		closed := g.closed
		g.mu.Unlock()
		if closed { // not a duplicate: nothing is live
			return nil, &refusal{status: agentv1.GatewayWelcome_STATUS_BUSY, msg: "the appliance is shutting down"}
		}
		g.recordDuplicate(ctx, rec.AgentID, rec.ID, remote)
		return nil, &refusal{status: agentv1.GatewayWelcome_STATUS_BUSY,
			msg: "another connection with this token is live; this one was recorded and closed"}
	}
	return c, nil
}

// recordDuplicate notes a refused second connection in memory (for the
// agents listing) and in the audit log.
func (g *Gateway) recordDuplicate(ctx context.Context, agentID string, tokenID uint64, remote string) {
	g.mu.Lock()
	d := g.dups[agentID]
	d.At, d.RemoteAddr, d.Count = g.cfg.Now().UTC(), remote, d.Count+1
	g.dups[agentID] = d
	g.mu.Unlock()
	g.log.Warn("second connection on a live token refused", "agent", agentID, "token", tokenID, "remote", remote)
	err := g.cat.Update(ctx, func(tx *catalog.Tx) error {
		return tx.Audit(catalog.AuditEvent{Actor: "gateway", Action: AuditDuplicate, Target: agentID,
			Detail: fmt.Sprintf("token %d: second connection from %s refused while one is live", tokenID, remote)})
	})
	if err != nil {
		g.log.Error("audit duplicate connection", "err", err)
	}
}

// enroll exchanges a setup token for an agent token bound to the agent's
// key, and puts the token in welcome.
func (g *Gateway) enroll(ctx context.Context, p *channel.Pending, text string, welcome *agentv1.GatewayWelcome) error {
	st, err := token.ParseSetupToken(text)
	if err != nil {
		return errBadToken
	}
	fp := p.Peer.String()
	at, err := token.NewAgentToken(1)
	if err != nil {
		return err
	}
	now := g.cfg.Now().UTC()
	var agentID string
	err = g.cat.Update(ctx, func(tx *catalog.Tx) error {
		rec, err := tx.SetupToken(st.ID)
		if errors.Is(err, catalog.ErrNotFound) {
			return errBadToken
		}
		if err != nil {
			return err
		}
		if !token.VerifySecret(rec.SecretHash, st.Secret) {
			return errBadToken
		}
		agentID, err = freeAgentID(tx, p.Hello.GetHostname())
		if err != nil {
			return err
		}
		if err := tx.PutAgent(catalog.Agent{ID: agentID, Hostname: p.Hello.GetHostname(), Fingerprint: fp, Mode: catalog.ModeReverse}); err != nil {
			return err
		}
		id, err := tx.UseSetupToken(st.ID, fp, now, catalog.AgentToken{
			AgentID: agentID, SecretHash: at.Hash(), Fingerprint: fp, BoundAt: now})
		if errors.Is(err, catalog.ErrSetupRefused) {
			msg := err.Error() // it names the setup token's ID only, never its secret
			if i := strings.Index(msg, "setup token refused"); i >= 0 {
				msg = msg[i:]
			}
			return &refusal{status: agentv1.GatewayWelcome_STATUS_REFUSED, msg: msg, fail: true}
		}
		if err != nil {
			return err
		}
		at.ID = id
		return tx.Audit(catalog.AuditEvent{Actor: "gateway", Action: AuditEnrolled, Target: agentID,
			Detail: fmt.Sprintf("setup token %s exchanged for token %d by %s from %s", st.ID, id, fp, p.RemoteAddr())})
	})
	if err != nil {
		return err
	}
	g.log.Info("agent enrolled with a setup token", "agent", agentID, "setup_token", st, "token", at, "fingerprint", fp)
	welcome.Status = agentv1.GatewayWelcome_STATUS_ENROLLED
	welcome.AgentToken = at.Reveal()
	welcome.AgentId = agentID
	welcome.Message = "enrolled; connect again with the agent token"
	return nil
}

// freeAgentID derives an agent ID from a host name: lower case, [a-z0-9-],
// with a numeric suffix if taken.
func freeAgentID(tx *catalog.Tx, host string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToLower(host) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '-' || r == '.' || r == '_':
			if b.Len() > 0 {
				b.WriteByte('-')
			}
		}
		if b.Len() >= 48 {
			break
		}
	}
	base := strings.Trim(b.String(), "-")
	if base == "" {
		base = "agent"
	}
	for n := 1; n < 10000; n++ {
		id := base
		if n > 1 {
			id = fmt.Sprintf("%s-%d", base, n)
		}
		_, err := tx.Agent(id)
		if errors.Is(err, catalog.ErrNotFound) {
			return id, nil
		}
		if err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("no free agent ID for host %q", host)
}

// CreateAgentToken creates an agent token for agentID (a reverse-mode
// agent, created if missing) and returns it: the only time its secret is
// available.
func (g *Gateway) CreateAgentToken(ctx context.Context, agentID, actor string) (token.AgentToken, error) {
	t, err := token.NewAgentToken(1)
	if err != nil {
		return token.AgentToken{}, err
	}
	err = g.cat.Update(ctx, func(tx *catalog.Tx) error {
		a, err := tx.Agent(agentID)
		switch {
		case errors.Is(err, catalog.ErrNotFound):
			a = catalog.Agent{ID: agentID, Mode: catalog.ModeReverse}
			if err := tx.PutAgent(a); err != nil {
				return err
			}
		case err != nil:
			return err
		case a.Mode != catalog.ModeReverse:
			return fmt.Errorf("agent %q is a direct-mode agent: %w", agentID, catalog.ErrInvalid)
		}
		id, err := tx.AddAgentToken(catalog.AgentToken{AgentID: agentID, SecretHash: t.Hash(), Source: "operator"})
		if err != nil {
			return err
		}
		t.ID = id
		return tx.Audit(catalog.AuditEvent{Actor: actor, Action: "agent_token.created", Target: agentID,
			Detail: fmt.Sprintf("token %d", id)})
	})
	if err != nil {
		return token.AgentToken{}, err
	}
	g.log.Info("agent token created", "agent", agentID, "token", t)
	return t, nil
}

// RevokeAgentToken revokes a token and closes its live session.
func (g *Gateway) RevokeAgentToken(ctx context.Context, id uint64, actor string) error {
	err := g.cat.Update(ctx, func(tx *catalog.Tx) error {
		rec, err := tx.AgentToken(id)
		if err != nil {
			return err
		}
		if rec.Revoked() {
			return nil
		}
		rec.RevokedAt = g.cfg.Now().UTC()
		if err := tx.PutAgentToken(rec); err != nil {
			return err
		}
		return tx.Audit(catalog.AuditEvent{Actor: actor, Action: "agent_token.revoked", Target: rec.AgentID,
			Detail: fmt.Sprintf("token %d", id)})
	})
	if err != nil {
		return err
	}
	g.mu.Lock()
	var s *channel.Session
	if c := g.byToken[id]; c != nil {
		s = c.s
	}
	g.mu.Unlock()
	if s != nil {
		s.Close()
	}
	return nil
}

// CreateSetupToken creates a setup token valid for ttl and maxUses agents.
func (g *Gateway) CreateSetupToken(ctx context.Context, label string, ttl time.Duration, maxUses int, actor string) (token.SetupToken, time.Time, error) {
	st, err := token.NewSetupToken()
	if err != nil {
		return token.SetupToken{}, time.Time{}, err
	}
	expires := g.cfg.Now().UTC().Add(ttl)
	err = g.cat.Update(ctx, func(tx *catalog.Tx) error {
		if err := tx.AddSetupToken(catalog.SetupToken{ID: st.ID, SecretHash: st.Hash(), Label: label,
			ExpiresAt: expires, MaxUses: maxUses}); err != nil {
			return err
		}
		return tx.Audit(catalog.AuditEvent{Actor: actor, Action: "setup_token.created", Target: st.ID,
			Detail: fmt.Sprintf("label %q, %d uses, expires %s", label, maxUses, expires.Format(time.RFC3339))})
	})
	if err != nil {
		return token.SetupToken{}, time.Time{}, err
	}
	g.log.Info("setup token created", "setup_token", st, "max_uses", maxUses, "expires", expires)
	return st, expires, nil
}

// RevokeSetupToken revokes a setup token: it enrols no more agents; the
// agent tokens it gave stay valid. Revoking it again changes nothing. It
// returns the token as stored.
func (g *Gateway) RevokeSetupToken(ctx context.Context, id, actor string) (catalog.SetupToken, error) {
	var st catalog.SetupToken
	err := g.cat.Update(ctx, func(tx *catalog.Tx) error {
		var err error
		if st, err = tx.SetupToken(id); err != nil {
			return err
		}
		if st.Revoked() {
			return nil
		}
		if err := tx.RevokeSetupToken(id); err != nil {
			return err
		}
		if st, err = tx.SetupToken(id); err != nil {
			return err
		}
		return tx.Audit(catalog.AuditEvent{Actor: actor, Action: "setup_token.revoked", Target: id,
			Detail: fmt.Sprintf("label %q, used by %d of %d agents", st.Label, len(st.UsedBy), st.MaxUses)})
	})
	if err != nil {
		return catalog.SetupToken{}, err
	}
	g.log.Info("setup token revoked", "setup_token", id)
	return st, nil
}
