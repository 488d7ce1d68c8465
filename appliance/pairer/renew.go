package pairer

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/licensing"
)

// How a renewal's failure is kept in catalog.Activation.LastError: the
// prefix says which kind, and LastErrorAt is when it started (for an
// unreachable service, the start of the grace period's count).
const (
	refusedPrefix     = "refused: "
	unreachablePrefix = "unreachable: "
)

// record turns a stored activation into the licensing.Record that the
// Validator and the renewal schedule work on.
func record(a catalog.Activation, lastAttempt time.Time) licensing.Record {
	var r licensing.Record
	_ = json.Unmarshal(a.Signed, &r.Signed)
	r.LastContact = a.ValidatedAt
	r.LastAttempt = lastAttempt
	if r.LastAttempt.IsZero() {
		r.LastAttempt = a.ValidatedAt
		if a.LastErrorAt.After(r.LastAttempt) {
			r.LastAttempt = a.LastErrorAt
		}
	}
	switch {
	case strings.HasPrefix(a.LastError, unreachablePrefix):
		r.UnreachableSince = a.LastErrorAt
	case strings.HasPrefix(a.LastError, refusedPrefix):
		code, msg, _ := strings.Cut(strings.TrimPrefix(a.LastError, refusedPrefix), ": ")
		r.Refusal = &licensing.ServiceError{Code: code, Message: msg}
		r.LastContact = a.LastErrorAt
	}
	return r
}

// Verdict says whether a stored activation licenses the agent now, offline.
func (p *Pairer) Verdict(a catalog.Activation, agentFingerprint string, now time.Time) licensing.Verdict {
	v := licensing.Validator{PublicKey: p.cfg.PublicKey, ApplianceID: p.cfg.ApplianceID}
	return v.Check(record(a, time.Time{}), agentFingerprint, now)
}

// RenewLoop renews due activations every interval until ctx ends.
func (p *Pairer) RenewLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := p.RenewDue(ctx, time.Now()); err != nil && ctx.Err() == nil {
			p.log.Error("renew activations", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RenewDue asks the activation service again for every activation whose
// renewal is due at now (licensing.Record.RenewalDue: daily, hourly while
// the service is unreachable) and stores the outcome: a new activation, a
// refusal (the agent is no longer licensed), or the service unreachable
// (the grace period counts from the first such failure).
func (p *Pairer) RenewDue(ctx context.Context, now time.Time) error {
	var acts []catalog.Activation
	if err := p.cfg.Catalog.View(ctx, func(tx *catalog.Tx) error {
		var err error
		acts, err = tx.Activations()
		return err
	}); err != nil {
		return err
	}
	var errs []error
	for _, a := range acts {
		p.mu.Lock()
		last := p.lastAttempt[a.AgentID]
		p.mu.Unlock()
		if !record(a, last).RenewalDue(now) {
			continue
		}
		if err := p.renew(ctx, a.AgentID, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *Pairer) renew(ctx context.Context, agentID string, now time.Time) error {
	var agent catalog.Agent
	var keyText []byte
	err := p.cfg.Catalog.View(ctx, func(tx *catalog.Tx) error {
		var err error
		if agent, err = tx.Agent(agentID); err != nil {
			return err
		}
		keyText, err = tx.Secret(AgentKeySecret(agentID))
		return err
	})
	if err != nil {
		return err
	}
	key, err := licensing.ParseKey(string(keyText))
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.lastAttempt[agentID] = now
	p.mu.Unlock()
	act, signed, aerr := p.cfg.Activator.Activate(ctx, licensing.ActivateRequest{Key: key, ApplianceID: p.cfg.ApplianceID,
		AgentFingerprint: agent.Fingerprint, Hostname: agent.Hostname})
	return p.cfg.Catalog.Update(ctx, func(tx *catalog.Tx) error {
		a, err := tx.Activation(agentID)
		if err != nil {
			return err
		}
		var se *licensing.ServiceError
		switch {
		case aerr == nil:
			sb, err := json.Marshal(signed)
			if err != nil {
				return err
			}
			a.Signed, a.Expires, a.ValidatedAt, a.LastError, a.LastErrorAt = sb, act.Expires, now, "", time.Time{}
		case licensing.IsRefusal(aerr) && errors.As(aerr, &se):
			p.log.Warn("activation renewal refused: the agent is no longer licensed", "agent", agentID, "code", se.Code, "message", se.Message)
			a.LastError, a.LastErrorAt = refusedPrefix+se.Code+": "+se.Message, now
			if err := tx.Audit(catalog.AuditEvent{Actor: "pairer", Action: "license.refused", Target: agentID, Detail: se.Code + ": " + se.Message}); err != nil {
				return err
			}
		default:
			p.log.Warn("activation service unreachable; the agent stays licensed within its activation and grace period", "agent", agentID, "err", aerr)
			if !strings.HasPrefix(a.LastError, unreachablePrefix) {
				a.LastErrorAt = now
			}
			a.LastError = unreachablePrefix + aerr.Error()
		}
		return tx.PutActivation(a)
	})
}
