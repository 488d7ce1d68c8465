package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"
)

// directPairing is a valid running pairing of agentID in direct mode.
func directPairing(agentID string) Pairing {
	return Pairing{Target: agentID + ".example.lan", Port: 7070, AgentID: agentID, Mode: ModeDirect, State: PairingRunning,
		Settings: json.RawMessage(`{"backup_schedule":"0 * * * *"}`), Steps: json.RawMessage(`[{"step":"resolve","status":"ok"}]`)}
}

// addPairings adds the pairings and returns their IDs.
func addPairings(t *testing.T, c *Catalog, ps ...Pairing) []uint64 {
	t.Helper()
	var ids []uint64
	update(t, c, func(tx *Tx) error {
		for _, p := range ps {
			id, err := tx.AddPairing(p)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	return ids
}

func getPairing(t *testing.T, c *Catalog, id uint64) Pairing {
	t.Helper()
	var p Pairing
	view(t, c, func(tx *Tx) (err error) {
		p, err = tx.Pairing(id)
		return err
	})
	return p
}

func pairingIDs(ps []Pairing) []uint64 {
	var ids []uint64
	for _, p := range ps {
		ids = append(ids, p.ID)
	}
	return ids
}

func activation(agentID string) Activation {
	return Activation{AgentID: agentID, KeyID: "KEY-" + agentID, Signed: json.RawMessage(`{"payload":"p-` + agentID + `","sig":"c2ln"}`),
		Expires: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), ValidatedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func TestPairings(t *testing.T) {
	c, _ := openTemp(t, Options{})
	before := time.Now()
	first := directPairing("srv")
	first.KeyID = "K-123"
	first.CreatedAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // replaced
	first.UpdatedAt = first.CreatedAt                             // replaced
	reverse := Pairing{AgentID: "rev", Mode: ModeReverse, State: PairingRunning}
	ids := addPairings(t, c, first, reverse, directPairing("srv"))
	if !slices.Equal(ids, []uint64{1, 2, 3}) {
		t.Fatalf("assigned IDs %v, want 1..3", ids)
	}

	p := getPairing(t, c, 1)
	if p.ID != 1 || p.Target != "srv.example.lan" || p.Port != 7070 || p.AgentID != "srv" || p.Mode != ModeDirect ||
		p.KeyID != "K-123" || p.State != PairingRunning || string(p.Settings) != `{"backup_schedule":"0 * * * *"}` ||
		string(p.Steps) != `[{"step":"resolve","status":"ok"}]` {
		t.Errorf("Pairing(1) = %+v (settings %s, steps %s)", p, p.Settings, p.Steps)
	}
	if p.CreatedAt.Before(before.Add(-time.Second)) || p.CreatedAt.After(time.Now()) || !p.UpdatedAt.Equal(p.CreatedAt) {
		t.Errorf("Pairing(1) created %v updated %v, want both about now", p.CreatedAt, p.UpdatedAt)
	}
	// Empty opaque fields come back as JSON null, which decodes to nothing.
	p = getPairing(t, c, 2)
	if p.Target != "" || p.Port != 0 || p.Mode != ModeReverse || string(p.Settings) != "null" || string(p.Steps) != "null" {
		t.Errorf("Pairing(2) = %+v (settings %s, steps %s)", p, p.Settings, p.Steps)
	}
	var steps []any
	if err := json.Unmarshal(p.Steps, &steps); err != nil || steps != nil {
		t.Errorf("decoding empty steps: %v, %v", steps, err)
	}

	view(t, c, func(tx *Tx) error {
		for _, id := range []uint64{0, 4, 99} {
			_, err := tx.Pairing(id)
			wantErr(t, fmt.Sprintf("Pairing(%d)", id), err, ErrNotFound)
		}
		all, err := tx.Pairings()
		if err != nil || !slices.Equal(pairingIDs(all), []uint64{1, 2, 3}) {
			t.Errorf("Pairings() = %v, %v", pairingIDs(all), err)
		}
		srv, err := tx.PairingsOf("srv")
		if err != nil || !slices.Equal(pairingIDs(srv), []uint64{1, 3}) {
			t.Errorf("PairingsOf(srv) = %v, %v", pairingIDs(srv), err)
		}
		rev, err := tx.PairingsOf("rev")
		if err != nil || !slices.Equal(pairingIDs(rev), []uint64{2}) {
			t.Errorf("PairingsOf(rev) = %v, %v", pairingIDs(rev), err)
		}
		none, err := tx.PairingsOf("nobody")
		if err != nil || len(none) != 0 {
			t.Errorf("PairingsOf(nobody) = %v, %v", none, err)
		}
		for _, bad := range []string{"", "Srv", "-x"} {
			_, err := tx.PairingsOf(bad)
			wantErr(t, fmt.Sprintf("PairingsOf(%q)", bad), err, ErrInvalid)
		}
		return nil
	})
}

func TestAddPairingValidation(t *testing.T) {
	c, _ := openTemp(t, Options{})
	with := func(f func(*Pairing)) Pairing {
		p := directPairing("srv")
		f(&p)
		return p
	}
	tests := []struct {
		name string
		p    Pairing
		want error
	}{
		{"valid", with(func(*Pairing) {}), nil},
		{"default port", with(func(p *Pairing) { p.Port = 0 }), nil},
		{"IPv6 target", with(func(p *Pairing) { p.Target = "2001:db8::7" }), nil},
		{"reverse", Pairing{AgentID: "rev", Mode: ModeReverse, State: PairingRunning}, nil},
		{"with key ID", with(func(p *Pairing) { p.KeyID = "KEY-0001" }), nil},
		{"no opaque fields", with(func(p *Pairing) { p.Settings, p.Steps = nil, nil }), nil},
		{"each state", with(func(p *Pairing) { p.State = PairingCanceled }), nil},
		{"ID given", with(func(p *Pairing) { p.ID = 5 }), ErrInvalid},
		{"no agent ID", with(func(p *Pairing) { p.AgentID = "" }), ErrInvalid},
		{"bad agent ID", with(func(p *Pairing) { p.AgentID = "Srv" }), ErrInvalid},
		{"no mode", with(func(p *Pairing) { p.Mode = "" }), ErrInvalid},
		{"bad mode", with(func(p *Pairing) { p.Mode = "sideways" }), ErrInvalid},
		{"direct without target", with(func(p *Pairing) { p.Target = "" }), ErrInvalid},
		{"reverse with target", Pairing{Target: "x", AgentID: "rev", Mode: ModeReverse, State: PairingRunning}, ErrInvalid},
		{"reverse with port", Pairing{Port: 7070, AgentID: "rev", Mode: ModeReverse, State: PairingRunning}, ErrInvalid},
		{"negative port", with(func(p *Pairing) { p.Port = -1 }), ErrInvalid},
		{"port too big", with(func(p *Pairing) { p.Port = 65536 }), ErrInvalid},
		{"space in target", with(func(p *Pairing) { p.Target = "srv lan" }), ErrInvalid},
		{"newline in target", with(func(p *Pairing) { p.Target = "srv\n" }), ErrInvalid},
		{"long target", with(func(p *Pairing) { p.Target = strings.Repeat("a", 256) }), ErrInvalid},
		{"control in key ID", with(func(p *Pairing) { p.KeyID = "K\x00" }), ErrInvalid},
		{"long key ID", with(func(p *Pairing) { p.KeyID = strings.Repeat("k", 129) }), ErrInvalid},
		{"no state", with(func(p *Pairing) { p.State = "" }), ErrInvalid},
		{"bad state", with(func(p *Pairing) { p.State = "succeeded" }), ErrInvalid},
		{"bad settings JSON", with(func(p *Pairing) { p.Settings = json.RawMessage(`{"a":`) }), ErrInvalid},
		{"bad steps JSON", with(func(p *Pairing) { p.Steps = json.RawMessage(`[1,]`) }), ErrInvalid},
	}
	valid := 0
	for _, tt := range tests {
		err := c.Update(context.Background(), func(tx *Tx) error {
			_, err := tx.AddPairing(tt.p)
			return err
		})
		wantErr(t, tt.name, err, tt.want)
		if tt.want == nil {
			valid++
		}
	}
	view(t, c, func(tx *Tx) error {
		all, err := tx.Pairings()
		if len(all) != valid {
			t.Errorf("%d pairings stored, want %d", len(all), valid)
		}
		return err
	})
}

func TestPutPairing(t *testing.T) {
	c, _ := openTemp(t, Options{})
	addPairings(t, c, directPairing("srv"), Pairing{AgentID: "rev", Mode: ModeReverse, State: PairingRunning})
	orig := getPairing(t, c, 1)
	put := func(p Pairing) error {
		return c.Update(context.Background(), func(tx *Tx) error { return tx.PutPairing(p) })
	}

	// A failed License step: new steps, a key ID, another state. The
	// CreatedAt passed is ignored.
	p := orig
	p.State, p.KeyID = PairingFailed, "K-9"
	p.Steps = json.RawMessage(`[{"step":"resolve","status":"ok"},{"step":"license","status":"failed"}]`)
	p.Settings = nil
	p.CreatedAt = orig.CreatedAt.Add(-time.Hour)
	wantErr(t, "put failed state", put(p), nil)
	got := getPairing(t, c, 1)
	if got.State != PairingFailed || got.KeyID != "K-9" || !strings.Contains(string(got.Steps), "license") ||
		string(got.Settings) != "null" || got.AgentID != "srv" || got.Target != orig.Target || got.Port != orig.Port {
		t.Errorf("after put: %+v (steps %s, settings %s)", got, got.Steps, got.Settings)
	}
	if !got.CreatedAt.Equal(orig.CreatedAt) {
		t.Errorf("CreatedAt changed from %v to %v", orig.CreatedAt, got.CreatedAt)
	}
	if got.UpdatedAt.Before(orig.UpdatedAt) || got.UpdatedAt.After(time.Now()) {
		t.Errorf("UpdatedAt %v, want between %v and now", got.UpdatedAt, orig.UpdatedAt)
	}

	// The catalog does not police state changes: retry, then finish.
	for _, state := range []string{PairingRunning, PairingDone} {
		p := getPairing(t, c, 1)
		p.State = state
		wantErr(t, "put "+state, put(p), nil)
		if got := getPairing(t, c, 1); got.State != state {
			t.Errorf("state %q, want %q", got.State, state)
		}
	}

	stored := getPairing(t, c, 1)
	errorTests := []struct {
		name   string
		change func(*Pairing)
		want   error
	}{
		{"unknown ID", func(p *Pairing) { p.ID = 99 }, ErrNotFound},
		{"ID zero", func(p *Pairing) { p.ID = 0 }, ErrNotFound},
		{"change agent", func(p *Pairing) { p.AgentID = "other" }, ErrInvalid},
		{"change mode", func(p *Pairing) { p.Mode, p.Target, p.Port = ModeReverse, "", 0 }, ErrInvalid},
		{"bad state", func(p *Pairing) { p.State = "paused" }, ErrInvalid},
		{"no target", func(p *Pairing) { p.Target = "" }, ErrInvalid},
		{"bad port", func(p *Pairing) { p.Port = 70000 }, ErrInvalid},
		{"bad steps JSON", func(p *Pairing) { p.Steps = json.RawMessage(`{`) }, ErrInvalid},
	}
	for _, tt := range errorTests {
		p := stored
		tt.change(&p)
		wantErr(t, tt.name, put(p), tt.want)
	}
	if got := getPairing(t, c, 1); !reflect.DeepEqual(got, stored) {
		t.Errorf("failed puts changed the pairing:\n got %+v\nwant %+v", got, stored)
	}
	// The other pairing was not touched either.
	if got := getPairing(t, c, 2); got.AgentID != "rev" || got.State != PairingRunning {
		t.Errorf("Pairing(2) = %+v", got)
	}
}

func TestDeletePairing(t *testing.T) {
	c, _ := openTemp(t, Options{})
	addPairings(t, c, directPairing("a"), directPairing("b"), directPairing("a"))
	update(t, c, func(tx *Tx) error { return tx.DeletePairing(2) })
	err := c.Update(context.Background(), func(tx *Tx) error {
		_, err := tx.Pairing(2)
		wantErr(t, "Pairing after delete", err, ErrNotFound)
		return tx.DeletePairing(2)
	})
	wantErr(t, "second DeletePairing", err, ErrNotFound)
	err = c.Update(context.Background(), func(tx *Tx) error { return tx.DeletePairing(0) })
	wantErr(t, "DeletePairing(0)", err, ErrNotFound)
	view(t, c, func(tx *Tx) error {
		all, err := tx.Pairings()
		if !slices.Equal(pairingIDs(all), []uint64{1, 3}) {
			t.Errorf("Pairings() after delete = %v", pairingIDs(all))
		}
		return err
	})
	// IDs are not reused.
	if ids := addPairings(t, c, directPairing("b")); !slices.Equal(ids, []uint64{4}) {
		t.Errorf("ID after delete = %v, want [4]", ids)
	}
}

func TestAddPairingRollsBack(t *testing.T) {
	c, _ := openTemp(t, Options{})
	boom := errors.New("boom")
	err := c.Update(context.Background(), func(tx *Tx) error {
		if _, err := tx.AddPairing(directPairing("srv")); err != nil {
			return err
		}
		if err := tx.PutActivation(activation("srv")); err != nil {
			return err
		}
		return boom
	})
	wantErr(t, "Update", err, boom)
	view(t, c, func(tx *Tx) error {
		all, err := tx.Pairings()
		if len(all) != 0 {
			t.Errorf("pairings after rollback: %+v", all)
		}
		_, err2 := tx.Activation("srv")
		wantErr(t, "activation after rollback", err2, ErrNotFound)
		return err
	})
	if ids := addPairings(t, c, directPairing("srv")); !slices.Equal(ids, []uint64{1}) {
		t.Errorf("first committed pairing got ID %v", ids)
	}
}

func TestActivations(t *testing.T) {
	c, _ := openTemp(t, Options{})
	update(t, c, func(tx *Tx) error {
		for _, id := range []string{"web-2", "db-1", "web-10"} { // no agent records: allowed
			if err := tx.PutActivation(activation(id)); err != nil {
				return err
			}
		}
		return nil
	})
	want := activation("db-1")
	view(t, c, func(tx *Tx) error {
		a, err := tx.Activation("db-1")
		if err != nil {
			return err
		}
		if a.AgentID != "db-1" || a.KeyID != "KEY-db-1" || string(a.Signed) != string(want.Signed) ||
			!a.Expires.Equal(want.Expires) || !a.ValidatedAt.Equal(want.ValidatedAt) || a.LastError != "" || !a.LastErrorAt.IsZero() {
			t.Errorf("Activation(db-1) = %+v", a)
		}
		raw := string(tx.tx.Bucket(bucketActivations).Get([]byte("db-1")))
		if strings.Contains(raw, "last_error") {
			t.Errorf("stored activation %s has empty last_error fields", raw)
		}
		all, err := tx.Activations()
		var ids []string
		for _, a := range all {
			ids = append(ids, a.AgentID)
		}
		if got := strings.Join(ids, ","); got != "db-1,web-10,web-2" {
			t.Errorf("Activations order = %s", got)
		}
		_, err2 := tx.Activation("nobody")
		wantErr(t, "Activation(nobody)", err2, ErrNotFound)
		return err
	})

	// A failed check within the grace period replaces the record.
	failedAt := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	update(t, c, func(tx *Tx) error {
		a, err := tx.Activation("db-1")
		if err != nil {
			return err
		}
		a.LastError, a.LastErrorAt = "activation service unreachable", failedAt
		return tx.PutActivation(a)
	})
	view(t, c, func(tx *Tx) error {
		a, err := tx.Activation("db-1")
		if a.LastError != "activation service unreachable" || !a.LastErrorAt.Equal(failedAt) || !a.ValidatedAt.Equal(want.ValidatedAt) {
			t.Errorf("after failed check: %+v", a)
		}
		return err
	})

	update(t, c, func(tx *Tx) error { return tx.DeleteActivation("db-1") })
	err := c.Update(context.Background(), func(tx *Tx) error {
		_, err := tx.Activation("db-1")
		wantErr(t, "Activation after delete", err, ErrNotFound)
		return tx.DeleteActivation("db-1")
	})
	wantErr(t, "second DeleteActivation", err, ErrNotFound)
	view(t, c, func(tx *Tx) error {
		all, err := tx.Activations()
		if len(all) != 2 {
			t.Errorf("%d activations left, want 2", len(all))
		}
		return err
	})
}

func TestPutActivationValidation(t *testing.T) {
	c, _ := openTemp(t, Options{})
	with := func(f func(*Activation)) Activation {
		a := activation("srv")
		f(&a)
		return a
	}
	errAt := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		a    Activation
		want error
	}{
		{"valid", with(func(*Activation) {}), nil},
		{"never validated", with(func(a *Activation) { a.ValidatedAt = time.Time{} }), nil},
		{"with last error", with(func(a *Activation) { a.LastError, a.LastErrorAt = "timeout", errAt }), nil},
		{"no agent ID", with(func(a *Activation) { a.AgentID = "" }), ErrInvalid},
		{"bad agent ID", with(func(a *Activation) { a.AgentID = "a b" }), ErrInvalid},
		{"no key ID", with(func(a *Activation) { a.KeyID = "" }), ErrInvalid},
		{"bad key ID", with(func(a *Activation) { a.KeyID = "K 1" }), ErrInvalid},
		{"no signature", with(func(a *Activation) { a.Signed = nil }), ErrInvalid},
		{"bad signature JSON", with(func(a *Activation) { a.Signed = json.RawMessage(`{"sig"`) }), ErrInvalid},
		{"no expiry", with(func(a *Activation) { a.Expires = time.Time{} }), ErrInvalid},
		{"error without time", with(func(a *Activation) { a.LastError = "timeout" }), ErrInvalid},
		{"error time without error", with(func(a *Activation) { a.LastErrorAt = errAt }), ErrInvalid},
	}
	for _, tt := range tests {
		// Each invalid put targets the record of the valid one.
		err := c.Update(context.Background(), func(tx *Tx) error { return tx.PutActivation(tt.a) })
		wantErr(t, tt.name, err, tt.want)
	}
	view(t, c, func(tx *Tx) error {
		all, err := tx.Activations()
		if len(all) != 1 || all[0].AgentID != "srv" || all[0].KeyID != "KEY-srv" || len(all[0].Signed) == 0 ||
			all[0].Expires.IsZero() || all[0].LastError != "timeout" {
			t.Errorf("activations = %+v", all)
		}
		return err
	})
}

func TestDeleteAgentDeletesPairingsAndActivation(t *testing.T) {
	c, _ := openTemp(t, Options{})
	putAgents(t, c, "gone", "kept")
	addPairings(t, c, directPairing("gone"), directPairing("kept"), directPairing("gone"))
	update(t, c, func(tx *Tx) error {
		for _, id := range []string{"gone", "kept"} {
			if err := tx.PutActivation(activation(id)); err != nil {
				return err
			}
		}
		return nil
	})
	update(t, c, func(tx *Tx) error { return tx.DeleteAgent("gone") })
	view(t, c, func(tx *Tx) error {
		_, err := tx.Activation("gone")
		wantErr(t, "Activation(gone)", err, ErrNotFound)
		for _, id := range []uint64{1, 3} {
			_, err := tx.Pairing(id)
			wantErr(t, fmt.Sprintf("Pairing(%d) of deleted agent", id), err, ErrNotFound)
		}
		if ps, err := tx.PairingsOf("gone"); err != nil || len(ps) != 0 {
			t.Errorf("PairingsOf(gone) = %v, %v", pairingIDs(ps), err)
		}
		if _, err := tx.Activation("kept"); err != nil {
			t.Errorf("Activation(kept): %v", err)
		}
		all, err := tx.Pairings()
		if !slices.Equal(pairingIDs(all), []uint64{2}) {
			t.Errorf("pairings left = %v, want [2]", pairingIDs(all))
		}
		return err
	})

	// An agent without an activation or pairings deletes fine too.
	putAgents(t, c, "bare")
	update(t, c, func(tx *Tx) error { return tx.DeleteAgent("bare") })
}

func TestWritesFailInView(t *testing.T) {
	c, _ := openTemp(t, Options{SecretKey: testKey(1)})
	addPairings(t, c, directPairing("srv"))
	update(t, c, func(tx *Tx) error {
		if err := tx.PutActivation(activation("srv")); err != nil {
			return err
		}
		return tx.PutSecret("s", []byte("v"))
	})
	p := getPairing(t, c, 1)
	writes := map[string]func(*Tx) error{
		"AddPairing":       func(tx *Tx) error { _, err := tx.AddPairing(directPairing("srv")); return err },
		"PutPairing":       func(tx *Tx) error { return tx.PutPairing(p) },
		"DeletePairing":    func(tx *Tx) error { return tx.DeletePairing(1) },
		"PutActivation":    func(tx *Tx) error { return tx.PutActivation(activation("srv")) },
		"DeleteActivation": func(tx *Tx) error { return tx.DeleteActivation("srv") },
		"PutSecret":        func(tx *Tx) error { return tx.PutSecret("s", []byte("w")) },
		"DeleteSecret":     func(tx *Tx) error { return tx.DeleteSecret("s") },
	}
	for name, fn := range writes {
		wantErr(t, name+" in View", c.View(context.Background(), fn), bolterrors.ErrTxNotWritable)
	}
}

func TestMigrationFromVersion2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	v2 := builtinMigrations[:2]
	if v2[len(v2)-1].Version != 2 {
		t.Fatalf("builtinMigrations[:2] ends at version %d", v2[len(v2)-1].Version)
	}
	c, err := Open(path, Options{Migrations: v2, SecretKey: testKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	putAgents(t, c, "old")
	update(t, c, func(tx *Tx) error {
		if err := tx.PutSettings(Settings{AgentID: "old", BackupSchedule: "@daily"}); err != nil {
			return err
		}
		if err := tx.AddRecoveryPoint(RecoveryPoint{AgentID: "old", Snapshot: "s1", CreatedAt: created, Bytes: 42}); err != nil {
			return err
		}
		if err := tx.PutJob(&Job{AgentID: "old", Kind: JobBackup, State: JobSucceeded}); err != nil {
			return err
		}
		if err := tx.Audit(AuditEvent{Action: "agent.add", Target: "old"}); err != nil {
			return err
		}
		if _, err := tx.AddAgentToken(operatorToken("old", "s")); err != nil {
			return err
		}
		return tx.AddSetupToken(SetupToken{ID: "Ab3dEf6hIj9L", SecretHash: hashOf("s"), ExpiresAt: time.Now().Add(time.Hour), MaxUses: 1})
	})
	// The version 3 methods need the version 3 buckets.
	v3calls := map[string]func(*Tx) error{
		"Pairings":    func(tx *Tx) error { _, err := tx.Pairings(); return err },
		"Activations": func(tx *Tx) error { _, err := tx.Activations(); return err },
		"PutSecret":   func(tx *Tx) error { return tx.PutSecret("s", []byte("v")) },
	}
	for name, fn := range v3calls {
		if err := c.Update(context.Background(), fn); err == nil {
			t.Errorf("%s on a version 2 file succeeded", name)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range [][]byte{bucketPairings, bucketActivations, bucketSecrets} {
		if v, exists := inspect(t, path, string(name)); v != 2 || exists {
			t.Fatalf("version 2 file: version %d, bucket %s %v", v, name, exists)
		}
	}

	for round := range 2 { // the second open finds the file current
		c, err := Open(path, Options{SecretKey: testKey(1)})
		if err != nil {
			t.Fatal(err)
		}
		if v, err := c.SchemaVersion(); err != nil || v != SchemaVersion {
			t.Errorf("round %d: SchemaVersion() = %d, %v; want %d", round, v, err, SchemaVersion)
		}
		view(t, c, func(tx *Tx) error {
			for _, name := range [][]byte{bucketPairings, bucketActivations, bucketSecrets} {
				if tx.tx.Bucket(name) == nil {
					t.Errorf("bucket %s missing after upgrade", name)
				}
			}
			if a, err := tx.Agent("old"); err != nil || a.Hostname != "old.lan" {
				t.Errorf("Agent(old) = %+v, %v", a, err)
			}
			if s, err := tx.Settings("old"); err != nil || s.BackupSchedule != "@daily" {
				t.Errorf("Settings(old) = %+v, %v", s, err)
			}
			if rp, err := tx.RecoveryPoint("old", "s1"); err != nil || rp.Bytes != 42 || !rp.CreatedAt.Equal(created) {
				t.Errorf("RecoveryPoint(old, s1) = %+v, %v", rp, err)
			}
			if jobs, err := tx.Jobs("old"); err != nil || len(jobs) != 1 || jobs[0].ID != 1 {
				t.Errorf("Jobs(old) = %+v, %v", jobs, err)
			}
			if events, err := tx.AuditLog(0, 0); err != nil || len(events) != 1 || events[0].Target != "old" {
				t.Errorf("AuditLog = %+v, %v", events, err)
			}
			if tok, err := tx.AgentToken(1); err != nil || tok.AgentID != "old" || tok.SecretHash != hashOf("s") {
				t.Errorf("AgentToken(1) = %+v, %v", tok, err)
			}
			if s, err := tx.SetupToken("Ab3dEf6hIj9L"); err != nil || s.MaxUses != 1 {
				t.Errorf("SetupToken = %+v, %v", s, err)
			}
			return nil
		})
		if round == 0 {
			addPairings(t, c, directPairing("old"))
			update(t, c, func(tx *Tx) error {
				if err := tx.PutActivation(activation("old")); err != nil {
					return err
				}
				return tx.PutSecret("license/old", []byte("KEY-SECRET"))
			})
		}
		view(t, c, func(tx *Tx) error {
			ps, err := tx.PairingsOf("old")
			if err != nil || !slices.Equal(pairingIDs(ps), []uint64{1}) {
				t.Errorf("round %d: PairingsOf(old) = %v, %v", round, pairingIDs(ps), err)
			}
			if _, err := tx.Activation("old"); err != nil {
				t.Errorf("round %d: Activation(old): %v", round, err)
			}
			if v, err := tx.Secret("license/old"); err != nil || string(v) != "KEY-SECRET" {
				t.Errorf("round %d: Secret = %q, %v", round, v, err)
			}
			return nil
		})
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
