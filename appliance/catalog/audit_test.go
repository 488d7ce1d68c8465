package catalog

import (
	"slices"
	"testing"
	"time"
)

func TestAuditEvents(t *testing.T) {
	c, _ := openTemp(t, Options{})
	// Seq 1..12: agent.paired/agent.unpaired on a and b, setup tokens,
	// and one "agentx.thing" that a prefix "agent" must not match.
	actions := []string{"agent.paired", "setup_token.created", "agent.unpaired", "agentx.thing"}
	update(t, c, func(tx *Tx) error {
		for i := range 12 {
			target := "a"
			if i%2 == 1 {
				target = "b"
			}
			if err := tx.Audit(AuditEvent{Action: actions[i%len(actions)], Target: target}); err != nil {
				return err
			}
		}
		return nil
	})
	seqs := func(es []AuditEvent) []uint64 {
		var out []uint64
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		q    AuditQuery
		want []uint64
	}{
		{"all", AuditQuery{}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"after and limit", AuditQuery{After: 4, Limit: 3}, []uint64{5, 6, 7}},
		{"before", AuditQuery{Before: 4}, []uint64{1, 2, 3}},
		{"between", AuditQuery{After: 2, Before: 6}, []uint64{3, 4, 5}},
		{"empty range", AuditQuery{After: 5, Before: 6}, nil},
		{"newest", AuditQuery{Newest: true, Limit: 3}, []uint64{12, 11, 10}},
		{"newest before", AuditQuery{Newest: true, Before: 5, Limit: 10}, []uint64{4, 3, 2, 1}},
		{"newest before past the end", AuditQuery{Newest: true, Before: 100, Limit: 2}, []uint64{12, 11}},
		{"newest between", AuditQuery{Newest: true, After: 9, Before: 12}, []uint64{11, 10}},
		{"action exact", AuditQuery{Action: "agent.paired"}, []uint64{1, 5, 9}},
		{"action prefix", AuditQuery{Action: "agent"}, []uint64{1, 3, 5, 7, 9, 11}},
		{"action and target", AuditQuery{Action: "agent", Target: "a"}, []uint64{1, 3, 5, 7, 9, 11}},
		{"target", AuditQuery{Target: "b", Newest: true, Limit: 2}, []uint64{12, 10}},
		{"limit counts matches", AuditQuery{Action: "setup_token", Limit: 2}, []uint64{2, 6}},
		{"nothing", AuditQuery{Action: "license"}, nil},
	} {
		view(t, c, func(tx *Tx) error {
			got, err := tx.AuditEvents(tc.q)
			if err != nil {
				return err
			}
			if !slices.Equal(seqs(got), tc.want) {
				t.Errorf("%s: seqs %v, want %v", tc.name, seqs(got), tc.want)
			}
			return nil
		})
	}
}

func TestAgentFingerprintConfirmation(t *testing.T) {
	c, _ := openTemp(t, Options{})
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	update(t, c, func(tx *Tx) error {
		return tx.PutAgent(Agent{ID: "web1", Mode: ModeDirect, Fingerprint: "SHA256:one", FingerprintConfirmedAt: at})
	})
	get := func() Agent {
		var a Agent
		view(t, c, func(tx *Tx) (err error) { a, err = tx.Agent("web1"); return err })
		return a
	}
	if a := get(); !a.FingerprintConfirmedAt.Equal(at) {
		t.Fatalf("confirmation not stored: %+v", a)
	}
	// Another field changes: the confirmation stays.
	a := get()
	a.Dataset = "cairn/agents/web1"
	update(t, c, func(tx *Tx) error { return tx.PutAgent(a) })
	if a := get(); !a.FingerprintConfirmedAt.Equal(at) {
		t.Fatalf("confirmation lost by an unrelated change: %+v", a)
	}
	// The key changes: the confirmation was of the old one.
	a = get()
	a.Fingerprint = "SHA256:two"
	update(t, c, func(tx *Tx) error { return tx.PutAgent(a) })
	if a := get(); !a.FingerprintConfirmedAt.IsZero() {
		t.Fatalf("confirmation kept for a new key: %+v", a)
	}
}

func TestRecoveryPointCount(t *testing.T) {
	c, _ := openTemp(t, Options{})
	putAgents(t, c, "web1")
	view(t, c, func(tx *Tx) error {
		n, err := tx.RecoveryPointCount("web1")
		if err != nil || n != 0 {
			t.Errorf("no points: %d, %v", n, err)
		}
		_, err = tx.RecoveryPointCount("nobody")
		wantErr(t, "unknown agent", err, ErrNotFound)
		return nil
	})
	update(t, c, func(tx *Tx) error {
		for i := range 3 {
			if err := tx.AddRecoveryPoint(RecoveryPoint{AgentID: "web1", Snapshot: "rp-" + string(rune('a'+i)),
				CreatedAt: time.Unix(int64(1000+i), 0)}); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, c, func(tx *Tx) error {
		if n, err := tx.RecoveryPointCount("web1"); err != nil || n != 3 {
			t.Errorf("three points: %d, %v", n, err)
		}
		return nil
	})
}
