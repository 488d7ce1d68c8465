package appliance

import (
	"testing"
	"time"

	"github.com/cairnbackup/cairn/appliance/catalog"
)

func TestSetupTokenState(t *testing.T) {
	now := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	later := now.Add(time.Hour)
	for _, tc := range []struct {
		tok  catalog.SetupToken
		want string
		uses int
	}{
		{catalog.SetupToken{ExpiresAt: later, MaxUses: 2, UsedBy: []string{"k1"}}, "active", 1},
		{catalog.SetupToken{ExpiresAt: later, MaxUses: 2, UsedBy: []string{"k1", "k2"}}, "used_up", 2},
		{catalog.SetupToken{ExpiresAt: now, MaxUses: 2, UsedBy: []string{"k1", "k2"}}, "expired", 2},
		{catalog.SetupToken{ExpiresAt: now, MaxUses: 2, RevokedAt: now}, "revoked", 0},
	} {
		got := setupTokenInfo(tc.tok, now)
		if got.State != tc.want || got.Uses != tc.uses || got.UsedBy == nil {
			t.Errorf("%+v: %+v, want %s with %d uses", tc.tok, got, tc.want, tc.uses)
		}
	}
}

func TestSameFingerprintRefusesOtherForms(t *testing.T) {
	for _, s := range []string{"", "SHA256:", "ABCD-EFGH", "sha256:" + string(make([]byte, 43))} {
		if _, err := sameFingerprint(s, [32]byte{1}); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}
