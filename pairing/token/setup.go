package token

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
)

// SetupTokenPrefix starts the text of every setup token.
const SetupTokenPrefix = "cairn-setup-"

const (
	setupIDLen     = 12 // characters of base62
	setupSecretLen = 40 // characters of base62 in a new setup token
	setupKind      = "setup token"
)

// SetupToken is a token for install scripts, exchanged once per agent for an
// AgentToken. Its text is "cairn-setup-ID-SECRET": ID 12 characters of
// [0-9A-Za-z] (the appliance's key for the token), SECRET MinSecretLen to
// MaxSecretLen characters of [0-9A-Za-z] (40 in a new token).
//
// Every printed form is redacted ("cairn-setup-ID-<redacted>"); only Reveal
// shows the secret. The caveats of AgentToken about %p and unexported struct
// fields apply.
type SetupToken struct {
	ID     string
	Secret string
}

// NewSetupToken returns a setup token with a new random ID and secret.
func NewSetupToken() (SetupToken, error) {
	id, err := randomSecret(setupIDLen)
	if err != nil {
		return SetupToken{}, err
	}
	secret, err := randomSecret(setupSecretLen)
	if err != nil {
		return SetupToken{}, err
	}
	return SetupToken{ID: id, Secret: secret}, nil
}

// ParseSetupToken parses "cairn-setup-ID-SECRET", ignoring surrounding white
// space. Errors wrap ErrMalformed and say what is wrong without quoting the
// input.
func ParseSetupToken(s string) (SetupToken, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return SetupToken{}, malformed(setupKind, "it is empty")
	}
	rest, ok := strings.CutPrefix(s, SetupTokenPrefix)
	if !ok {
		return SetupToken{}, malformed(setupKind, "it does not start with %q", SetupTokenPrefix)
	}
	switch n := strings.Count(rest, "-"); {
	case n == 0:
		return SetupToken{}, malformed(setupKind, "it has no '-' between id and secret")
	case n > 1:
		return SetupToken{}, malformed(setupKind, "it has %d '-' after %q, want one between id and secret", n, SetupTokenPrefix)
	}
	id, secret, _ := strings.Cut(rest, "-")
	for i := 0; i < len(id); i++ {
		if !isBase62(id[i]) {
			return SetupToken{}, malformed(setupKind, "id has a character that is not [0-9A-Za-z] at byte %d", i+1)
		}
	}
	if len(id) != setupIDLen {
		return SetupToken{}, malformed(setupKind, "id is %d characters, want %d", len(id), setupIDLen)
	}
	if err := checkSecret(setupKind, secret); err != nil {
		return SetupToken{}, err
	}
	return SetupToken{ID: id, Secret: secret}, nil
}

// Reveal returns the token's text in clear: only for showing the operator
// once and for install scripts.
func (t SetupToken) Reveal() string { return SetupTokenPrefix + t.ID + "-" + t.Secret }

// String returns "cairn-setup-ID-<redacted>".
func (t SetupToken) String() string { return SetupTokenPrefix + t.ID + "-" + redacted }

// GoString returns the Go syntax of t with the secret redacted.
func (t SetupToken) GoString() string {
	return fmt.Sprintf("token.SetupToken{ID:%q, Secret:%q}", t.ID, redacted)
}

// Format prints the redacted form for every verb: String, quoted for %q,
// GoString for %#v.
func (t SetupToken) Format(f fmt.State, verb rune) { redactedFormat(f, verb, t.String(), t.GoString()) }

// LogValue logs the ID only.
func (t SetupToken) LogValue() slog.Value { return slog.GroupValue(slog.String("id", t.ID)) }

// MarshalJSON returns the String form, redacted. There is deliberately no
// UnmarshalJSON.
func (t SetupToken) MarshalJSON() ([]byte, error) { return json.Marshal(t.String()) }

// Hash returns the SHA-256 of the secret (HashSecret).
func (t SetupToken) Hash() [32]byte { return HashSecret(t.Secret) }
