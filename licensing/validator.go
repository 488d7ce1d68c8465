package licensing

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"
)

// GracePeriod is how long an agent stays licensed after its activation has
// expired when the appliance could not reach the activation service at its
// last attempt to renew it.
const GracePeriod = 14 * 24 * time.Hour

// How often an appliance renews an activation (RenewEvery), and retries
// while the service cannot be reached (RetryEvery). An activation lasts 30
// days by default, so that many missed renewals pass before it expires.
const (
	RenewEvery = 24 * time.Hour
	RetryEvery = time.Hour
)

// Record is what the appliance keeps of one agent's activation, to verify it
// offline and to know when to renew it. It is JSON-friendly.
type Record struct {
	// Signed is the latest activation the service sent.
	Signed Signed `json:"signed"`
	// LastAttempt is when the appliance last asked the service, with or
	// without an answer.
	LastAttempt time.Time `json:"last_attempt"`
	// LastContact is when the service last answered (an activation or a
	// refusal).
	LastContact time.Time `json:"last_contact"`
	// UnreachableSince is the first failed attempt after LastContact; zero
	// if the last attempt reached the service.
	UnreachableSince time.Time `json:"unreachable_since"`
	// Refusal is the service's refusal at LastContact, if it refused.
	Refusal *ServiceError `json:"refusal,omitempty"`
}

// Update returns r after an attempt at now to renew it with Client.Activate,
// which returned s and err: a new activation, a refusal (IsRefusal), or a
// failure to reach the service, which starts (or continues) the time counted
// by UnreachableSince.
func (r Record) Update(s Signed, err error, now time.Time) Record {
	r.LastAttempt = now
	var se *ServiceError
	switch {
	case err == nil:
		r.Signed, r.LastContact, r.UnreachableSince, r.Refusal = s, now, time.Time{}, nil
	case IsRefusal(err) && errors.As(err, &se):
		r.LastContact, r.UnreachableSince, r.Refusal = now, time.Time{}, &ServiceError{Code: se.Code, Message: se.Message}
	default:
		if r.UnreachableSince.IsZero() {
			r.UnreachableSince = now
		}
	}
	return r
}

// RenewalDue reports whether the appliance should try to renew r at now:
// RenewEvery after the last attempt, RetryEvery while the service is
// unreachable, at once if it was never tried.
func (r Record) RenewalDue(now time.Time) bool {
	switch {
	case r.LastAttempt.IsZero():
		return true
	case !r.UnreachableSince.IsZero():
		return !now.Before(r.LastAttempt.Add(RetryEvery))
	}
	return !now.Before(r.LastAttempt.Add(RenewEvery))
}

// State is a Validator's verdict on an agent's license.
type State int

// The states of a license.
const (
	Invalid State = iota // not licensed: no activation, refused, forged, for someone else, or expired
	Valid                // licensed by an activation that has not expired
	InGrace              // the activation expired while the service could not be reached; licensed until GraceUntil
)

func (s State) String() string {
	switch s {
	case Valid:
		return "valid"
	case InGrace:
		return "in grace"
	}
	return "invalid"
}

// Verdict is what a Validator says about a Record.
type Verdict struct {
	State State
	// Activation is the verified activation (also when expired); zero if
	// there is none.
	Activation Activation
	// UnreachableSince is Record.UnreachableSince: when set, the appliance
	// should warn that the service cannot be reached.
	UnreachableSince time.Time
	// GraceUntil is when the grace period ends (InGrace only).
	GraceUntil time.Time
	// Reason says why the license is not Valid, or warns about an
	// unreachable service; "" otherwise.
	Reason string
}

// Licensed reports whether the agent may be backed up: Valid or InGrace.
func (v Verdict) Licensed() bool { return v.State == Valid || v.State == InGrace }

// Validator verifies the stored activations of one appliance offline, with
// the vendor's public key.
type Validator struct {
	PublicKey   ed25519.PublicKey
	ApplianceID string        // the appliance's own ID: activations for others are invalid
	Grace       time.Duration // 0: GracePeriod
}

// Check says whether r licenses the agent with fingerprint agentFingerprint
// on this appliance at now:
//   - Invalid if the service refused the last renewal, if r's activation is
//     not signed by PublicKey or is for another appliance or agent, or if it
//     has expired and the last renewal reached the service (or none failed);
//   - Valid if it has not expired (Reason warns if the service is
//     unreachable);
//   - InGrace if it has expired but the last renewal could not reach the
//     service, until Expires + Grace.
//
// Check trusts the clock: an appliance whose clock is set back can extend an
// activation, which only the next renewal corrects.
func (v Validator) Check(r Record, agentFingerprint string, now time.Time) Verdict {
	verdict := Verdict{State: Invalid, UnreachableSince: r.UnreachableSince}
	if r.Refusal != nil {
		verdict.Reason = fmt.Sprintf("the activation service refused the activation: %s", r.Refusal.Message)
		return verdict
	}
	if len(r.Signed.Payload) == 0 {
		verdict.Reason = "the agent is not activated"
		return verdict
	}
	a, err := Verify(v.PublicKey, r.Signed, now)
	if err != nil && !errors.Is(err, ErrExpired) {
		verdict.Reason = err.Error()
		return verdict
	}
	if a.ApplianceID != v.ApplianceID || a.AgentFingerprint != agentFingerprint {
		verdict.Reason = "the activation is for another appliance or agent"
		return verdict
	}
	verdict.Activation = a
	if err == nil {
		verdict.State = Valid
		if !r.UnreachableSince.IsZero() {
			verdict.Reason = fmt.Sprintf("the activation service has been unreachable since %s; the activation expires at %s",
				r.UnreachableSince.UTC().Format(time.RFC3339), a.Expires.Format(time.RFC3339))
		}
		return verdict
	}
	grace := v.Grace
	if grace == 0 {
		grace = GracePeriod
	}
	until := a.Expires.Add(grace)
	if r.UnreachableSince.IsZero() || !now.Before(until) {
		verdict.Reason = fmt.Sprintf("the activation expired at %s", a.Expires.Format(time.RFC3339))
		if !r.UnreachableSince.IsZero() {
			verdict.Reason += fmt.Sprintf(" and its grace period ended at %s", until.Format(time.RFC3339))
		}
		return verdict
	}
	verdict.State, verdict.GraceUntil = InGrace, until
	verdict.Reason = fmt.Sprintf("the activation expired at %s and the activation service has been unreachable since %s; licensed until %s",
		a.Expires.Format(time.RFC3339), r.UnreachableSince.UTC().Format(time.RFC3339), until.Format(time.RFC3339))
	return verdict
}
