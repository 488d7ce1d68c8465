package licensing

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestValidatorCheck(t *testing.T) {
	pub, priv := testSigner(t, 1)
	_, otherPriv := testSigner(t, 2)
	a := testActivation()
	signed, err := Sign(priv, a)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := Sign(otherPriv, a)
	if err != nil {
		t.Fatal(err)
	}
	const day = 24 * time.Hour
	issued := a.Issued.Truncate(time.Second)
	expires := a.Expires
	reachable := Record{Signed: signed, LastAttempt: issued, LastContact: issued}
	unreachable := reachable
	unreachable.LastAttempt, unreachable.UnreachableSince = expires.Add(-3*day), expires.Add(-10*day)
	refused := reachable
	refused.Refusal = &ServiceError{Code: CodeKeyRevoked, Message: "key 7KQ2M9XAB3 has been revoked"}
	v := Validator{PublicKey: pub, ApplianceID: a.ApplianceID}

	for _, tc := range []struct {
		name   string
		v      Validator
		r      Record
		agent  string
		now    time.Time
		want   State
		reason string
		grace  time.Time
	}{
		{"never activated", v, Record{}, a.AgentFingerprint, issued, Invalid, "not activated", time.Time{}},
		{"fresh", v, reachable, a.AgentFingerprint, issued.Add(time.Hour), Valid, "", time.Time{}},
		{"last second", v, reachable, a.AgentFingerprint, expires.Add(-time.Second), Valid, "", time.Time{}},
		{"valid, service unreachable", v, unreachable, a.AgentFingerprint, expires.Add(-time.Hour), Valid, "unreachable since", time.Time{}},
		{"expired, service reached", v, reachable, a.AgentFingerprint, expires, Invalid, "expired at", time.Time{}},
		{"expired, service unreachable", v, unreachable, a.AgentFingerprint, expires, InGrace, "unreachable since", expires.Add(GracePeriod)},
		{"grace, last second", v, unreachable, a.AgentFingerprint, expires.Add(GracePeriod - time.Second), InGrace, "licensed until", expires.Add(GracePeriod)},
		{"grace over", v, unreachable, a.AgentFingerprint, expires.Add(GracePeriod), Invalid, "grace period ended", time.Time{}},
		{"short grace over", Validator{PublicKey: pub, ApplianceID: a.ApplianceID, Grace: day}, unreachable, a.AgentFingerprint, expires.Add(day), Invalid, "grace period ended", time.Time{}},
		{"short grace", Validator{PublicKey: pub, ApplianceID: a.ApplianceID, Grace: day}, unreachable, a.AgentFingerprint, expires.Add(day - time.Second), InGrace, "", expires.Add(day)},
		{"refused", v, refused, a.AgentFingerprint, issued.Add(time.Hour), Invalid, "has been revoked", time.Time{}},
		{"forged", v, Record{Signed: forged}, a.AgentFingerprint, issued, Invalid, "invalid activation", time.Time{}},
		{"forged, unreachable", v, Record{Signed: forged, UnreachableSince: issued}, a.AgentFingerprint, expires, Invalid, "invalid activation", time.Time{}},
		{"other agent", v, reachable, "SHA256:other", issued, Invalid, "another appliance or agent", time.Time{}},
		{"other appliance", Validator{PublicKey: pub, ApplianceID: "appliance-2"}, reachable, a.AgentFingerprint, issued, Invalid, "another appliance or agent", time.Time{}},
		{"other appliance in grace", Validator{PublicKey: pub, ApplianceID: "appliance-2"}, unreachable, a.AgentFingerprint, expires, Invalid, "another appliance or agent", time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.v.Check(tc.r, tc.agent, tc.now)
			if got.State != tc.want {
				t.Fatalf("Check = %s (%s), want %s", got.State, got.Reason, tc.want)
			}
			if !strings.Contains(got.Reason, tc.reason) || (tc.reason == "" && tc.want == Valid && got.Reason != "") {
				t.Fatalf("Reason %q, want it to say %q", got.Reason, tc.reason)
			}
			if !got.GraceUntil.Equal(tc.grace) {
				t.Fatalf("GraceUntil = %s, want %s", got.GraceUntil, tc.grace)
			}
			if got.Licensed() != (tc.want != Invalid) {
				t.Fatalf("Licensed() = %v for %s", got.Licensed(), got.State)
			}
			if got.Licensed() && got.Activation.Serial != a.Serial {
				t.Fatalf("Activation = %+v", got.Activation)
			}
		})
	}
}

func TestRecordUpdate(t *testing.T) {
	_, priv := testSigner(t, 1)
	s1, err := Sign(priv, testActivation())
	if err != nil {
		t.Fatal(err)
	}
	a2 := testActivation()
	a2.Serial = "SERIAL0000000002"
	s2, err := Sign(priv, a2)
	if err != nil {
		t.Fatal(err)
	}
	net := fmt.Errorf("activate key:X: %w: dial tcp: connection refused", ErrUnreachable)
	internal := fmt.Errorf("activate key:X: %w: %w", ErrUnreachable, &ServiceError{Code: CodeInternal, Message: "failed"})
	revoked := fmt.Errorf("activate key:X: %w", &ServiceError{Code: CodeKeyRevoked, Message: "revoked"})
	badRequest := &ServiceError{Code: CodeBadRequest, Message: "hostname has a control character"}
	bad := fmt.Errorf("activate: %w", ErrBadReply)

	t1, t2, t3, t4 := t0, t0.Add(time.Hour), t0.Add(2*time.Hour), t0.Add(3*time.Hour)
	r := Record{}.Update(s1, nil, t1)
	if r.LastAttempt != t1 || r.LastContact != t1 || !r.UnreachableSince.IsZero() || r.Refusal != nil || string(r.Signed.Payload) != string(s1.Payload) {
		t.Fatalf("after success: %+v", r)
	}
	r = r.Update(Signed{}, net, t2)
	r = r.Update(Signed{}, internal, t3)
	r = r.Update(Signed{}, bad, t3)
	r = r.Update(Signed{}, badRequest, t4)
	if r.UnreachableSince != t2 || r.LastAttempt != t4 || r.LastContact != t1 || r.Refusal != nil {
		t.Fatalf("after failures: UnreachableSince %s LastAttempt %s LastContact %s Refusal %v", r.UnreachableSince, r.LastAttempt, r.LastContact, r.Refusal)
	}
	if string(r.Signed.Payload) != string(s1.Payload) {
		t.Fatal("a failure dropped the stored activation")
	}
	r = r.Update(s2, nil, t4)
	if !r.UnreachableSince.IsZero() || r.LastContact != t4 || string(r.Signed.Payload) != string(s2.Payload) {
		t.Fatalf("after renewal: %+v", r)
	}
	r = r.Update(Signed{}, revoked, t4.Add(time.Hour))
	if r.Refusal == nil || r.Refusal.Code != CodeKeyRevoked || !r.UnreachableSince.IsZero() || r.LastContact != t4.Add(time.Hour) {
		t.Fatalf("after refusal: %+v", r)
	}
	r = r.Update(s1, nil, t4.Add(2*time.Hour))
	if r.Refusal != nil {
		t.Fatal("a renewal after a refusal kept the refusal")
	}
}

func TestIsRefusal(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("x"), false},
		{&ServiceError{Code: CodeKeyInvalid}, true},
		{fmt.Errorf("wrapped: %w", &ServiceError{Code: CodeNoSeats}), true},
		{&ServiceError{Code: CodeActiveElsewhere}, true},
		{&ServiceError{Code: CodeKeyExpired}, true},
		{&ServiceError{Code: CodeKeyRevoked}, true},
		{&ServiceError{Code: CodeBadRequest}, false},
		{&ServiceError{Code: CodeInternal}, false},
		{fmt.Errorf("%w: %w", ErrUnreachable, &ServiceError{Code: CodeKeyRevoked}), false},
	} {
		if got := IsRefusal(tc.err); got != tc.want {
			t.Errorf("IsRefusal(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestRenewalDue(t *testing.T) {
	ok := Record{LastAttempt: t0, LastContact: t0}
	down := Record{LastAttempt: t0, LastContact: t0.Add(-time.Hour), UnreachableSince: t0}
	for _, tc := range []struct {
		r    Record
		now  time.Time
		want bool
	}{
		{Record{}, t0, true},
		{ok, t0.Add(RenewEvery - time.Second), false},
		{ok, t0.Add(RenewEvery), true},
		{down, t0.Add(RetryEvery - time.Second), false},
		{down, t0.Add(RetryEvery), true},
	} {
		if got := tc.r.RenewalDue(tc.now); got != tc.want {
			t.Errorf("RenewalDue(%+v, %s) = %v, want %v", tc.r, tc.now, got, tc.want)
		}
	}
}
