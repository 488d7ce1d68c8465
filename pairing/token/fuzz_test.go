package token

import (
	"errors"
	"strings"
	"testing"
)

func FuzzParseAgentToken(f *testing.F) {
	for _, s := range []string{
		"1|" + secret, " 42|" + secret + "\n", "0|" + secret, "01|" + secret, "-1|" + secret,
		"9223372036854775808|" + secret, "7|" + secret[:12], "7||" + secret, "", "|", "7|" + secret + "é",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseAgentToken(s)
		trimmed := strings.TrimSpace(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %q is not ErrMalformed", err)
			}
			if len(trimmed) >= MinSecretLen && strings.Contains(err.Error(), trimmed) {
				t.Fatalf("error %q contains the input", err)
			}
			return
		}
		if got := tok.Reveal(); got != trimmed {
			t.Fatalf("ParseAgentToken(%q) accepted, Reveal() = %q, want %q", s, got, trimmed)
		}
		if tok.ID == 0 || len(tok.Secret) < MinSecretLen || len(tok.Secret) > MaxSecretLen {
			t.Fatalf("ParseAgentToken(%q) accepted %d|%q", s, tok.ID, tok.Secret)
		}
		if strings.Contains(tok.String(), tok.Secret) {
			t.Fatalf("String() %q contains the secret", tok.String())
		}
	})
}

func FuzzParseSetupToken(f *testing.F) {
	for _, s := range []string{
		"cairn-setup-AbCdEf012345-" + secret[:40], "cairn-setup-", "cairn-setup--", "cairn-setup-AbCdEf012345-" + secret[:12],
		"", "cairn-setup-AbCdEf012345-" + secret + "-",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseSetupToken(s)
		trimmed := strings.TrimSpace(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %q is not ErrMalformed", err)
			}
			if len(trimmed) >= MinSecretLen && strings.Contains(err.Error(), trimmed) {
				t.Fatalf("error %q contains the input", err)
			}
			return
		}
		if got := tok.Reveal(); got != trimmed {
			t.Fatalf("ParseSetupToken(%q) accepted, Reveal() = %q, want %q", s, got, trimmed)
		}
		if len(tok.ID) != 12 || len(tok.Secret) < MinSecretLen || len(tok.Secret) > MaxSecretLen {
			t.Fatalf("ParseSetupToken(%q) accepted %q/%q", s, tok.ID, tok.Secret)
		}
		if strings.Contains(tok.String(), tok.Secret) {
			t.Fatalf("String() %q contains the secret", tok.String())
		}
	})
}
