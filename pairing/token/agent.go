package token

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
)

// agentSecretLen is the length of the secret of a new agent token.
const agentSecretLen = 48

// agentKind names agent tokens in errors.
const agentKind = "agent token"

// AgentToken is a reverse-mode agent's credential, "ID|SECRET": ID a decimal
// number from 1 to 2^63-1 (the appliance's key for the token), SECRET
// MinSecretLen to MaxSecretLen characters of [0-9A-Za-z].
//
// Every printed form is redacted ("ID|<redacted>"); only Reveal shows the
// secret. Two holes are fmt's, not closable while Secret is an exported
// string, and go vet does not report them: %p of a token value (not a
// pointer) prints its fields, and so does printing a struct that holds a
// token in an unexported field (fmt cannot call methods there). Keep tokens
// in exported fields or behind pointers, and print them with %v or %s.
type AgentToken struct {
	ID     uint64
	Secret string
}

// NewAgentToken returns a token for id (1 to 2^63-1) with a new random
// secret of 48 characters.
func NewAgentToken(id uint64) (AgentToken, error) {
	if id == 0 || id > math.MaxInt64 {
		return AgentToken{}, fmt.Errorf("token: agent token id %d is out of range 1..2^63-1", id)
	}
	secret, err := randomSecret(agentSecretLen)
	if err != nil {
		return AgentToken{}, err
	}
	return AgentToken{ID: id, Secret: secret}, nil
}

// ParseAgentToken parses "ID|SECRET", ignoring surrounding white space. ID
// is decimal digits without sign or leading zero, from 1 to 2^63-1; there is
// exactly one '|'; SECRET is MinSecretLen to MaxSecretLen characters of
// [0-9A-Za-z]. Errors wrap ErrMalformed and say what is wrong without
// quoting the input.
func ParseAgentToken(s string) (AgentToken, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return AgentToken{}, malformed(agentKind, "it is empty")
	}
	switch n := strings.Count(s, "|"); {
	case n == 0:
		return AgentToken{}, malformed(agentKind, "it has no '|' between id and secret")
	case n > 1:
		return AgentToken{}, malformed(agentKind, "it has %d '|', want one between id and secret", n)
	}
	idText, secret, _ := strings.Cut(s, "|")
	id, err := parseAgentID(idText)
	if err != nil {
		return AgentToken{}, err
	}
	if err := checkSecret(agentKind, secret); err != nil {
		return AgentToken{}, err
	}
	return AgentToken{ID: id, Secret: secret}, nil
}

// parseAgentID parses the ID of an agent token.
func parseAgentID(s string) (uint64, error) {
	if s == "" {
		return 0, malformed(agentKind, "id is empty")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < '0' || c > '9' {
			switch {
			case i == 0 && c == '-':
				return 0, malformed(agentKind, "id is negative")
			case i == 0 && c == '+':
				return 0, malformed(agentKind, "id has a sign")
			}
			return 0, malformed(agentKind, "id has a character that is not a decimal digit at byte %d", i+1)
		}
	}
	if s == "0" {
		return 0, malformed(agentKind, "id is 0, want at least 1")
	}
	if s[0] == '0' {
		return 0, malformed(agentKind, "id has a leading zero")
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id > math.MaxInt64 { // only a range error is possible here
		return 0, malformed(agentKind, "id is larger than 2^63-1")
	}
	return id, nil
}

// Reveal returns "ID|SECRET" in clear: only for showing the operator once and
// for writing the agent's configuration.
func (t AgentToken) Reveal() string { return strconv.FormatUint(t.ID, 10) + "|" + t.Secret }

// String returns "ID|<redacted>".
func (t AgentToken) String() string { return strconv.FormatUint(t.ID, 10) + "|" + redacted }

// GoString returns the Go syntax of t with the secret redacted.
func (t AgentToken) GoString() string {
	return fmt.Sprintf("token.AgentToken{ID:%d, Secret:%q}", t.ID, redacted)
}

// Format prints the redacted form for every verb: String, quoted for %q,
// GoString for %#v.
func (t AgentToken) Format(f fmt.State, verb rune) { redactedFormat(f, verb, t.String(), t.GoString()) }

// LogValue logs the ID only.
func (t AgentToken) LogValue() slog.Value { return slog.GroupValue(slog.Uint64("id", t.ID)) }

// MarshalJSON returns the String form, redacted. There is deliberately no
// UnmarshalJSON.
func (t AgentToken) MarshalJSON() ([]byte, error) { return json.Marshal(t.String()) }

// Hash returns the SHA-256 of the secret (HashSecret).
func (t AgentToken) Hash() [32]byte { return HashSecret(t.Secret) }
