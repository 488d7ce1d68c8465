package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func hashOf(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

func operatorToken(agentID, secret string) AgentToken {
	return AgentToken{AgentID: agentID, SecretHash: hashOf(secret), Source: TokenSourceOperator}
}

// addSetup stores a setup token expiring in an hour.
func addSetup(t *testing.T, c *Catalog, id string, maxUses int) {
	t.Helper()
	update(t, c, func(tx *Tx) error {
		return tx.AddSetupToken(SetupToken{ID: id, SecretHash: hashOf("setup-" + id), Label: "label " + id, ExpiresAt: time.Now().Add(time.Hour), MaxUses: maxUses})
	})
}

// tokenIDs lists the IDs of the agent tokens of agentID ("" for all).
func tokenIDs(t *testing.T, c *Catalog, agentID string) []uint64 {
	t.Helper()
	var ids []uint64
	view(t, c, func(tx *Tx) error {
		tokens, err := tx.AgentTokens(agentID)
		for _, tok := range tokens {
			ids = append(ids, tok.ID)
		}
		return err
	})
	return ids
}

func setupToken(t *testing.T, c *Catalog, id string) SetupToken {
	t.Helper()
	var s SetupToken
	view(t, c, func(tx *Tx) (err error) {
		s, err = tx.SetupToken(id)
		return err
	})
	return s
}

func TestAgentTokens(t *testing.T) {
	c, _ := openTemp(t, Options{})
	putAgents(t, c, "srv")
	before := time.Now()
	var ids []uint64
	update(t, c, func(tx *Tx) error {
		// "later" does not exist yet: that is allowed.
		for _, agent := range []string{"srv", "later", "srv"} {
			tok := operatorToken(agent, "secret-"+agent)
			tok.CreatedAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // replaced
			id, err := tx.AddAgentToken(tok)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if !slices.Equal(ids, []uint64{1, 2, 3}) {
		t.Fatalf("assigned IDs %v, want 1..3", ids)
	}
	view(t, c, func(tx *Tx) error {
		tok, err := tx.AgentToken(2)
		if err != nil {
			return err
		}
		if tok.ID != 2 || tok.AgentID != "later" || tok.SecretHash != hashOf("secret-later") || tok.Source != TokenSourceOperator ||
			tok.Fingerprint != "" || !tok.BoundAt.IsZero() || !tok.LastSeenAt.IsZero() || tok.LastAddr != "" || tok.Revoked() {
			t.Errorf("AgentToken(2) = %+v", tok)
		}
		if tok.CreatedAt.Before(before.Add(-time.Second)) || tok.CreatedAt.After(time.Now()) {
			t.Errorf("CreatedAt = %v, want about now", tok.CreatedAt)
		}
		_, err = tx.AgentToken(99)
		wantErr(t, "AgentToken(99)", err, ErrNotFound)
		_, err = tx.AgentToken(0)
		wantErr(t, "AgentToken(0)", err, ErrNotFound)
		return nil
	})
	if got := tokenIDs(t, c, ""); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("AgentTokens(\"\") = %v", got)
	}
	if got := tokenIDs(t, c, "srv"); !slices.Equal(got, []uint64{1, 3}) {
		t.Errorf("AgentTokens(srv) = %v", got)
	}
	if got := tokenIDs(t, c, "nobody"); len(got) != 0 {
		t.Errorf("AgentTokens(nobody) = %v", got)
	}
}

func TestAddAgentTokenValidation(t *testing.T) {
	c, _ := openTemp(t, Options{})
	with := func(f func(*AgentToken)) AgentToken {
		tok := operatorToken("srv", "s")
		f(&tok)
		return tok
	}
	tests := []struct {
		name string
		tok  AgentToken
		want error
	}{
		{"valid", with(func(*AgentToken) {}), nil},
		{"from setup token", with(func(tok *AgentToken) { tok.Source = "setup:Ab3dEf6hIj9L" }), nil},
		{"pre-bound", with(func(tok *AgentToken) { tok.Fingerprint = "SHA256:abc"; tok.BoundAt = time.Now() }), nil},
		{"ID given", with(func(tok *AgentToken) { tok.ID = 7 }), ErrInvalid},
		{"no agent ID", with(func(tok *AgentToken) { tok.AgentID = "" }), ErrInvalid},
		{"bad agent ID", with(func(tok *AgentToken) { tok.AgentID = "Srv" }), ErrInvalid},
		{"zero hash", with(func(tok *AgentToken) { tok.SecretHash = [32]byte{} }), ErrInvalid},
		{"no source", with(func(tok *AgentToken) { tok.Source = "" }), ErrInvalid},
		{"unknown source", with(func(tok *AgentToken) { tok.Source = "admin" }), ErrInvalid},
		{"setup source without ID", with(func(tok *AgentToken) { tok.Source = "setup:" }), ErrInvalid},
		{"setup source with bad ID", with(func(tok *AgentToken) { tok.Source = "setup:Ab3dEf6hIj9-" }), ErrInvalid},
	}
	valid := 0
	for _, tt := range tests {
		err := c.Update(context.Background(), func(tx *Tx) error {
			_, err := tx.AddAgentToken(tt.tok)
			return err
		})
		wantErr(t, tt.name, err, tt.want)
		if tt.want == nil {
			valid++
		}
	}
	if got := tokenIDs(t, c, ""); len(got) != valid {
		t.Errorf("%d tokens stored, want %d", len(got), valid)
	}
}

func TestPutAgentToken(t *testing.T) {
	c, _ := openTemp(t, Options{})
	update(t, c, func(tx *Tx) error {
		_, err := tx.AddAgentToken(operatorToken("srv", "s"))
		return err
	})
	get := func() AgentToken {
		t.Helper()
		var tok AgentToken
		view(t, c, func(tx *Tx) (err error) {
			tok, err = tx.AgentToken(1)
			return err
		})
		return tok
	}
	put := func(tok AgentToken) error {
		return c.Update(context.Background(), func(tx *Tx) error { return tx.PutAgentToken(tok) })
	}
	orig := get()

	// First connection: bind and record it.
	seen := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	tok := orig
	tok.Fingerprint, tok.BoundAt, tok.LastSeenAt, tok.LastAddr = "SHA256:key1", seen, seen, "192.0.2.7:50000"
	wantErr(t, "bind", put(tok), nil)
	if got := get(); got.Fingerprint != "SHA256:key1" || !got.BoundAt.Equal(seen) || !got.LastSeenAt.Equal(seen) ||
		got.LastAddr != "192.0.2.7:50000" || !got.CreatedAt.Equal(orig.CreatedAt) || got.SecretHash != orig.SecretHash {
		t.Errorf("after bind: %+v", got)
	}
	// Later connection with the same key.
	tok.LastSeenAt, tok.LastAddr = seen.Add(time.Hour), "192.0.2.8:50001"
	wantErr(t, "seen again", put(tok), nil)
	if got := get(); !got.LastSeenAt.Equal(seen.Add(time.Hour)) || got.LastAddr != "192.0.2.8:50001" {
		t.Errorf("after second connection: %+v", got)
	}

	bound := get()
	errorTests := []struct {
		name   string
		change func(*AgentToken)
		want   error
	}{
		{"unknown ID", func(tok *AgentToken) { tok.ID = 99 }, ErrNotFound},
		{"ID zero", func(tok *AgentToken) { tok.ID = 0 }, ErrNotFound},
		{"change agent", func(tok *AgentToken) { tok.AgentID = "other" }, ErrInvalid},
		{"change hash", func(tok *AgentToken) { tok.SecretHash = hashOf("other") }, ErrInvalid},
		{"change source", func(tok *AgentToken) { tok.Source = "setup:Ab3dEf6hIj9L" }, ErrInvalid},
		{"change creation time", func(tok *AgentToken) { tok.CreatedAt = tok.CreatedAt.Add(time.Second) }, ErrInvalid},
		{"zero creation time", func(tok *AgentToken) { tok.CreatedAt = time.Time{} }, ErrInvalid},
		{"rebind", func(tok *AgentToken) { tok.Fingerprint = "SHA256:key2" }, ErrInvalid},
		{"unbind", func(tok *AgentToken) { tok.Fingerprint = "" }, ErrInvalid},
	}
	for _, tt := range errorTests {
		tok := bound
		tt.change(&tok)
		wantErr(t, tt.name, put(tok), tt.want)
	}
	if got := get(); got != bound {
		t.Errorf("failed puts changed the token:\n got %+v\nwant %+v", got, bound)
	}

	// Revocation is final.
	revoked := bound
	revoked.RevokedAt = seen.Add(2 * time.Hour)
	wantErr(t, "revoke", put(revoked), nil)
	if got := get(); !got.Revoked() || !got.RevokedAt.Equal(revoked.RevokedAt) {
		t.Errorf("after revoke: %+v", got)
	}
	unrevoked := get()
	unrevoked.RevokedAt = time.Time{}
	wantErr(t, "unrevoke", put(unrevoked), ErrInvalid)
	moved := get()
	moved.RevokedAt = moved.RevokedAt.Add(time.Minute)
	wantErr(t, "move revocation", put(moved), ErrInvalid)
	again := get()
	again.LastSeenAt = seen.Add(3 * time.Hour)
	wantErr(t, "update revoked token", put(again), nil)
	if got := get(); !got.Revoked() || !got.LastSeenAt.Equal(again.LastSeenAt) {
		t.Errorf("after updating revoked token: %+v", got)
	}

	// An unbound token can be bound by a put, even after a failed attempt
	// on another token.
	update(t, c, func(tx *Tx) error {
		id, err := tx.AddAgentToken(operatorToken("srv", "s2"))
		if err != nil {
			return err
		}
		tok, err := tx.AgentToken(id)
		if err != nil {
			return err
		}
		tok.Fingerprint = "SHA256:key3"
		return tx.PutAgentToken(tok)
	})
}

func TestTokenJSON(t *testing.T) {
	c, _ := openTemp(t, Options{})
	hash := hashOf("s")
	update(t, c, func(tx *Tx) error {
		if _, err := tx.AddAgentToken(AgentToken{AgentID: "srv", SecretHash: hash, Source: TokenSourceOperator}); err != nil {
			return err
		}
		return tx.AddSetupToken(SetupToken{ID: "Ab3dEf6hIj9L", SecretHash: hash, ExpiresAt: time.Now().Add(time.Hour), MaxUses: 1})
	})
	wantHash := `"secret_hash":"` + hex.EncodeToString(hash[:]) + `"`
	view(t, c, func(tx *Tx) error {
		raw := string(tx.tx.Bucket(bucketAgentTokens).Get(u64key(1)))
		if !strings.Contains(raw, wantHash) {
			t.Errorf("stored agent token %s lacks %s", raw, wantHash)
		}
		for _, omitted := range []string{"fingerprint", "bound_at", "revoked_at", "last_seen_at", "last_addr"} {
			if strings.Contains(raw, omitted) {
				t.Errorf("stored agent token %s has empty %s", raw, omitted)
			}
		}
		raw = string(tx.tx.Bucket(bucketSetupTokens).Get([]byte("Ab3dEf6hIj9L")))
		if !strings.Contains(raw, wantHash) || strings.Contains(raw, "revoked_at") {
			t.Errorf("stored setup token %s", raw)
		}
		return nil
	})

	// Round trips, including through a value that is not a pointer.
	tok := AgentToken{ID: 3, AgentID: "a", SecretHash: hash, Fingerprint: "SHA256:x", Source: "operator",
		CreatedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), RevokedAt: time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC)}
	data, err := json.Marshal([]AgentToken{tok})
	if err != nil {
		t.Fatal(err)
	}
	var back []AgentToken
	if err := json.Unmarshal(data, &back); err != nil || len(back) != 1 || back[0] != tok {
		t.Errorf("agent token round trip: %+v, %v (JSON %s)", back, err, data)
	}
	s := SetupToken{ID: "Ab3dEf6hIj9L", SecretHash: hash, Label: "l", MaxUses: 2, UsedBy: []string{"SHA256:x"},
		CreatedAt: tok.CreatedAt, ExpiresAt: tok.RevokedAt}
	data, err = json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var sBack SetupToken
	if err := json.Unmarshal(data, &sBack); err != nil || sBack.SecretHash != hash || sBack.ID != s.ID ||
		!slices.Equal(sBack.UsedBy, s.UsedBy) || !sBack.ExpiresAt.Equal(s.ExpiresAt) || sBack.MaxUses != 2 {
		t.Errorf("setup token round trip: %+v, %v (JSON %s)", sBack, err, data)
	}

	for _, bad := range []string{`{"secret_hash":"abcd"}`, `{"secret_hash":"` + strings.Repeat("zz", 32) + `"}`, `{"secret_hash":[1,2]}`} {
		var tok AgentToken
		if err := json.Unmarshal([]byte(bad), &tok); err == nil {
			t.Errorf("decoding %s succeeded", bad)
		}
	}
}

func TestSetupTokens(t *testing.T) {
	c, _ := openTemp(t, Options{})
	expires := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	before := time.Now()
	for _, id := range []string{"zzzzzzzzzzz1", "AAAAAAAAAAA2", "mmmmmmmmmmm3"} {
		update(t, c, func(tx *Tx) error {
			return tx.AddSetupToken(SetupToken{ID: id, SecretHash: hashOf(id), Label: "for " + id, ExpiresAt: expires, MaxUses: 5,
				CreatedAt: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)})
		})
	}
	s := setupToken(t, c, "AAAAAAAAAAA2")
	if s.ID != "AAAAAAAAAAA2" || s.SecretHash != hashOf("AAAAAAAAAAA2") || s.Label != "for AAAAAAAAAAA2" ||
		!s.ExpiresAt.Equal(expires) || s.MaxUses != 5 || len(s.UsedBy) != 0 || s.Revoked() {
		t.Errorf("SetupToken = %+v", s)
	}
	if s.CreatedAt.Before(before.Add(-time.Second)) || s.CreatedAt.After(time.Now()) {
		t.Errorf("CreatedAt = %v, want about now", s.CreatedAt)
	}

	// Two more records with the same creation time, written directly, sort
	// by ID after the others.
	tie := time.Now().Add(time.Hour).UTC()
	update(t, c, func(tx *Tx) error {
		for _, id := range []string{"tie000000002", "tie000000001"} {
			if err := put(tx.tx.Bucket(bucketSetupTokens), []byte(id), SetupToken{ID: id, SecretHash: hashOf(id), CreatedAt: tie, ExpiresAt: expires, MaxUses: 1}); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, c, func(tx *Tx) error {
		all, err := tx.SetupTokens()
		var ids []string
		for _, s := range all {
			ids = append(ids, s.ID)
		}
		if got := strings.Join(ids, ","); got != "zzzzzzzzzzz1,AAAAAAAAAAA2,mmmmmmmmmmm3,tie000000001,tie000000002" {
			t.Errorf("SetupTokens order = %s", got)
		}
		_, err2 := tx.SetupToken("nosuchtoken0")
		wantErr(t, "SetupToken(unknown)", err2, ErrNotFound)
		return err
	})
}

func TestAddSetupTokenValidation(t *testing.T) {
	c, _ := openTemp(t, Options{})
	addSetup(t, c, "taken0000000", 1)
	with := func(f func(*SetupToken)) SetupToken {
		s := SetupToken{ID: "Ab3dEf6hIj9L", SecretHash: hashOf("s"), ExpiresAt: time.Now().Add(time.Hour), MaxUses: 1}
		f(&s)
		return s
	}
	tests := []struct {
		name string
		s    SetupToken
		want error
	}{
		{"short ID", with(func(s *SetupToken) { s.ID = "Ab3dEf6hIj9" }), ErrInvalid},
		{"long ID", with(func(s *SetupToken) { s.ID = "Ab3dEf6hIj9LM" }), ErrInvalid},
		{"no ID", with(func(s *SetupToken) { s.ID = "" }), ErrInvalid},
		{"dash in ID", with(func(s *SetupToken) { s.ID = "Ab3dEf6hIj9-" }), ErrInvalid},
		{"underscore in ID", with(func(s *SetupToken) { s.ID = "Ab3dEf6h_j9L" }), ErrInvalid},
		{"non-ASCII ID", with(func(s *SetupToken) { s.ID = "Ab3dEf6hIjé" }), ErrInvalid},
		{"zero hash", with(func(s *SetupToken) { s.SecretHash = [32]byte{} }), ErrInvalid},
		{"no uses", with(func(s *SetupToken) { s.MaxUses = 0 }), ErrInvalid},
		{"negative uses", with(func(s *SetupToken) { s.MaxUses = -1 }), ErrInvalid},
		{"no expiry", with(func(s *SetupToken) { s.ExpiresAt = time.Time{} }), ErrInvalid},
		{"expired", with(func(s *SetupToken) { s.ExpiresAt = time.Now().Add(-time.Second) }), ErrInvalid},
		{"already used", with(func(s *SetupToken) { s.UsedBy = []string{"SHA256:x"} }), ErrInvalid},
		{"duplicate ID", with(func(s *SetupToken) { s.ID = "taken0000000" }), ErrExists},
		{"duplicate ID is invalid", with(func(s *SetupToken) { s.ID = "taken0000000" }), ErrInvalid},
	}
	for _, tt := range tests {
		err := c.Update(context.Background(), func(tx *Tx) error { return tx.AddSetupToken(tt.s) })
		wantErr(t, tt.name, err, tt.want)
	}
	if errors.Is(ErrInvalid, ErrExists) {
		t.Error("ErrInvalid matches ErrExists")
	}
	if s := setupToken(t, c, "taken0000000"); s.SecretHash != hashOf("setup-taken0000000") {
		t.Errorf("duplicate add replaced the token: %+v", s)
	}
	view(t, c, func(tx *Tx) error {
		all, err := tx.SetupTokens()
		if len(all) != 1 {
			t.Errorf("%d setup tokens stored, want 1", len(all))
		}
		return err
	})
}

func TestRevokeSetupToken(t *testing.T) {
	c, _ := openTemp(t, Options{})
	addSetup(t, c, "Ab3dEf6hIj9L", 2)
	var tokenID uint64
	update(t, c, func(tx *Tx) (err error) {
		tokenID, err = tx.UseSetupToken("Ab3dEf6hIj9L", "SHA256:k1", time.Now(), AgentToken{AgentID: "srv", SecretHash: hashOf("s")})
		return err
	})
	update(t, c, func(tx *Tx) error { return tx.RevokeSetupToken("Ab3dEf6hIj9L") })
	first := setupToken(t, c, "Ab3dEf6hIj9L")
	if !first.Revoked() {
		t.Fatalf("not revoked: %+v", first)
	}
	update(t, c, func(tx *Tx) error { return tx.RevokeSetupToken("Ab3dEf6hIj9L") })
	if again := setupToken(t, c, "Ab3dEf6hIj9L"); !again.RevokedAt.Equal(first.RevokedAt) {
		t.Errorf("second revoke moved RevokedAt from %v to %v", first.RevokedAt, again.RevokedAt)
	}
	err := c.Update(context.Background(), func(tx *Tx) error { return tx.RevokeSetupToken("nosuchtoken0") })
	wantErr(t, "revoke unknown", err, ErrNotFound)
	// The agent token already obtained is not affected.
	view(t, c, func(tx *Tx) error {
		tok, err := tx.AgentToken(tokenID)
		if tok.Revoked() {
			t.Errorf("agent token revoked with its setup token: %+v", tok)
		}
		return err
	})
}

func TestUseSetupToken(t *testing.T) {
	c, _ := openTemp(t, Options{})
	const id = "Ab3dEf6hIj9L"
	addSetup(t, c, id, 2)
	at := time.Now()
	use := func(id, fp string, at time.Time, agent AgentToken) (uint64, error) {
		var tokenID uint64
		err := c.Update(context.Background(), func(tx *Tx) (err error) {
			tokenID, err = tx.UseSetupToken(id, fp, at, agent)
			return err
		})
		return tokenID, err
	}

	first, err := use(id, "SHA256:k1", at, AgentToken{AgentID: "web-1", SecretHash: hashOf("w1"), Source: "ignored"})
	if err != nil || first != 1 {
		t.Fatalf("first use: %d, %v", first, err)
	}
	second, err := use(id, "SHA256:k2", at, AgentToken{AgentID: "web-2", SecretHash: hashOf("w2"), Fingerprint: "SHA256:k2", BoundAt: at})
	if err != nil || second != 2 {
		t.Fatalf("second use: %d, %v", second, err)
	}
	view(t, c, func(tx *Tx) error {
		tok, err := tx.AgentToken(first)
		if err != nil {
			return err
		}
		if tok.AgentID != "web-1" || tok.Source != "setup:"+id || tok.SecretHash != hashOf("w1") || tok.CreatedAt.IsZero() || tok.Fingerprint != "" {
			t.Errorf("first agent token = %+v", tok)
		}
		tok, err = tx.AgentToken(second)
		if tok.AgentID != "web-2" || tok.Fingerprint != "SHA256:k2" || !tok.BoundAt.Equal(at) {
			t.Errorf("second agent token = %+v", tok)
		}
		return err
	})
	if s := setupToken(t, c, id); !slices.Equal(s.UsedBy, []string{"SHA256:k1", "SHA256:k2"}) {
		t.Errorf("UsedBy = %q", s.UsedBy)
	}

	// Refusals and invalid calls. Each runs in an Update that ignores the
	// error and commits, so the call itself must leave nothing behind.
	const fresh, revoked = "fresh0000000", "revoked00000"
	addSetup(t, c, fresh, 3)
	addSetup(t, c, revoked, 3)
	expires := setupToken(t, c, fresh).ExpiresAt
	update(t, c, func(tx *Tx) error { return tx.RevokeSetupToken(revoked) })
	valid := AgentToken{AgentID: "new", SecretHash: hashOf("n")}
	tests := []struct {
		name, setup, fp string
		at              time.Time
		agent           AgentToken
		want            error
	}{
		{"used up", id, "SHA256:k3", at, valid, ErrSetupRefused},
		{"already used by this key", id, "SHA256:k1", at, valid, ErrSetupRefused},
		{"expired at ExpiresAt", fresh, "SHA256:k3", expires, valid, ErrSetupRefused},
		{"expired after ExpiresAt", fresh, "SHA256:k3", expires.Add(time.Hour), valid, ErrSetupRefused},
		{"revoked", revoked, "SHA256:k3", at, valid, ErrSetupRefused},
		{"unknown setup token", "nosuchtoken0", "SHA256:k3", at, valid, ErrNotFound},
		{"no fingerprint", fresh, "", at, valid, ErrInvalid},
		{"zero time", fresh, "SHA256:k3", time.Time{}, valid, ErrInvalid},
		{"bad agent ID", fresh, "SHA256:k3", at, AgentToken{AgentID: "No", SecretHash: hashOf("n")}, ErrInvalid},
		{"zero hash", fresh, "SHA256:k3", at, AgentToken{AgentID: "new"}, ErrInvalid},
		{"ID given", fresh, "SHA256:k3", at, AgentToken{ID: 9, AgentID: "new", SecretHash: hashOf("n")}, ErrInvalid},
		{"bound to another key", fresh, "SHA256:k3", at, AgentToken{AgentID: "new", SecretHash: hashOf("n"), Fingerprint: "SHA256:k4"}, ErrInvalid},
	}
	for _, tt := range tests {
		var err error
		update(t, c, func(tx *Tx) error {
			_, err = tx.UseSetupToken(tt.setup, tt.fp, tt.at, tt.agent)
			return nil
		})
		wantErr(t, tt.name, err, tt.want)
		if tt.want == ErrSetupRefused && err != nil {
			t.Logf("%s: %v", tt.name, err)
		}
	}
	if got := tokenIDs(t, c, ""); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("agent tokens after refusals: %v", got)
	}
	for _, s := range []string{fresh, revoked} {
		if used := setupToken(t, c, s).UsedBy; len(used) != 0 {
			t.Errorf("%s used by %q after refusals", s, used)
		}
	}
	if used := setupToken(t, c, id).UsedBy; len(used) != 2 {
		t.Errorf("%s used by %q after refusals", id, used)
	}

	// A use whose transaction fails later is undone as a whole.
	boom := errors.New("boom")
	err = c.Update(context.Background(), func(tx *Tx) error {
		if _, err := tx.UseSetupToken(fresh, "SHA256:k5", at, valid); err != nil {
			return err
		}
		return boom
	})
	wantErr(t, "rolled back use", err, boom)
	if used := setupToken(t, c, fresh).UsedBy; len(used) != 0 {
		t.Errorf("rolled back use recorded: %q", used)
	}
	if got := tokenIDs(t, c, "new"); len(got) != 0 {
		t.Errorf("rolled back use left agent tokens %v", got)
	}
	// Just before expiry is still fine.
	if _, err := use(fresh, "SHA256:k6", expires.Add(-time.Nanosecond), valid); err != nil {
		t.Errorf("use just before expiry: %v", err)
	}
}

func TestConcurrentUseSetupToken(t *testing.T) {
	c, _ := openTemp(t, Options{})
	const id, maxUses, workers = "Ab3dEf6hIj9L", 3, 12
	addSetup(t, c, id, maxUses)
	start := make(chan struct{})
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- c.Update(context.Background(), func(tx *Tx) error {
				_, err := tx.UseSetupToken(id, fmt.Sprintf("SHA256:key%d", i), time.Now(),
					AgentToken{AgentID: fmt.Sprintf("agent-%d", i), SecretHash: hashOf(fmt.Sprint(i))})
				return err
			})
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	ok, refused := 0, 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrSetupRefused):
			refused++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != maxUses || refused != workers-maxUses {
		t.Errorf("%d uses succeeded, %d refused; want %d and %d", ok, refused, maxUses, workers-maxUses)
	}
	s := setupToken(t, c, id)
	view(t, c, func(tx *Tx) error {
		tokens, err := tx.AgentTokens("")
		if len(tokens) != maxUses || len(s.UsedBy) != maxUses {
			t.Fatalf("%d agent tokens, UsedBy %q; want %d of each", len(tokens), s.UsedBy, maxUses)
		}
		// The tokens match the recorded uses one to one, in order.
		for i, tok := range tokens {
			n := strings.TrimPrefix(s.UsedBy[i], "SHA256:key")
			if tok.ID != uint64(i+1) || tok.AgentID != "agent-"+n || tok.Source != "setup:"+id {
				t.Errorf("token %d = %+v, use %d by %s", tok.ID, tok, i, s.UsedBy[i])
			}
		}
		return err
	})
}

func TestDeleteAgentDeletesTokens(t *testing.T) {
	c, _ := openTemp(t, Options{})
	putAgents(t, c, "gone", "kept")
	addSetup(t, c, "Ab3dEf6hIj9L", 5)
	update(t, c, func(tx *Tx) error {
		for _, agent := range []string{"gone", "kept", "gone"} {
			if _, err := tx.AddAgentToken(operatorToken(agent, agent)); err != nil {
				return err
			}
		}
		_, err := tx.UseSetupToken("Ab3dEf6hIj9L", "SHA256:g", time.Now(), AgentToken{AgentID: "gone", SecretHash: hashOf("g")})
		return err
	})
	if got := tokenIDs(t, c, "gone"); !slices.Equal(got, []uint64{1, 3, 4}) {
		t.Fatalf("tokens of gone = %v", got)
	}
	update(t, c, func(tx *Tx) error { return tx.DeleteAgent("gone") })
	view(t, c, func(tx *Tx) error {
		for _, id := range []uint64{1, 3, 4} {
			_, err := tx.AgentToken(id)
			wantErr(t, fmt.Sprintf("AgentToken(%d) of deleted agent", id), err, ErrNotFound)
		}
		return nil
	})
	if got := tokenIDs(t, c, ""); !slices.Equal(got, []uint64{2}) {
		t.Errorf("tokens left = %v, want [2]", got)
	}
	// The setup token still remembers the use: the same key cannot get a
	// new token with it.
	if used := setupToken(t, c, "Ab3dEf6hIj9L").UsedBy; !slices.Equal(used, []string{"SHA256:g"}) {
		t.Errorf("UsedBy = %q", used)
	}
	// A new agent with the same ID starts without tokens, and new tokens
	// get fresh IDs.
	putAgents(t, c, "gone")
	if got := tokenIDs(t, c, "gone"); len(got) != 0 {
		t.Errorf("re-added agent has tokens %v", got)
	}
	update(t, c, func(tx *Tx) error {
		id, err := tx.AddAgentToken(operatorToken("gone", "again"))
		if id != 5 {
			t.Errorf("new token after delete got ID %d, want 5", id)
		}
		return err
	})
}

func TestMigrationFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	v1 := builtinMigrations[:1]
	c, err := Open(path, Options{Migrations: v1})
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
		return tx.Audit(AuditEvent{Action: "agent.add", Target: "old"})
	})
	// Token methods need the version 2 buckets.
	err = c.View(context.Background(), func(tx *Tx) error {
		_, err := tx.AgentTokens("")
		return err
	})
	if err == nil {
		t.Error("AgentTokens on a version 1 file succeeded")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if v, exists := inspect(t, path, string(bucketAgentTokens)); v != 1 || exists {
		t.Fatalf("version 1 file: version %d, agent_tokens bucket %v", v, exists)
	}

	for round := range 2 { // the second open finds the file current
		c, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if v, err := c.SchemaVersion(); err != nil || v != SchemaVersion {
			t.Errorf("round %d: SchemaVersion() = %d, %v; want %d", round, v, err, SchemaVersion)
		}
		view(t, c, func(tx *Tx) error {
			for _, name := range [][]byte{bucketAgentTokens, bucketSetupTokens} {
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
			return nil
		})
		if round == 0 {
			update(t, c, func(tx *Tx) error {
				if _, err := tx.AddAgentToken(operatorToken("old", "s")); err != nil {
					return err
				}
				return tx.AddSetupToken(SetupToken{ID: "Ab3dEf6hIj9L", SecretHash: hashOf("s"), ExpiresAt: time.Now().Add(time.Hour), MaxUses: 1})
			})
		}
		if got := tokenIDs(t, c, "old"); !slices.Equal(got, []uint64{1}) {
			t.Errorf("round %d: tokens %v", round, got)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
