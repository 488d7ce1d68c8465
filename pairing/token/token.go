// Package token makes, parses and checks the bearer tokens of reverse-mode
// agents.
//
// An agent token "ID|SECRET" is what a reverse-mode agent presents to the
// appliance's gateway; a setup token "cairn-setup-ID-SECRET" goes into install
// scripts and is exchanged once per agent for an agent token. The ID says
// which token is meant and is not secret; the SECRET proves possession.
//
// Trust model: the appliance keeps only HashSecret of each secret and checks
// a presented one with VerifySecret, in constant time, so its database does
// not hold usable tokens. A secret leaves this package in clear only through
// Reveal (shown to the operator once, written to the agent's config): the
// String, fmt, slog and JSON forms of a token are redacted, and parse errors
// never quote their input. Secrets are 48 (agent) or 40 (setup) characters
// from crypto/rand in base62, about 285 or 238 bits.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MinSecretLen and MaxSecretLen bound the length of a secret that the
// parsers accept.
const (
	MinSecretLen = 40
	MaxSecretLen = 256
)

// ErrMalformed is matched (errors.Is) by every error of ParseAgentToken and
// ParseSetupToken.
var ErrMalformed = errors.New("token: malformed")

// redacted replaces a secret in every printed form of a token.
const redacted = "<redacted>"

// base62 is the alphabet of IDs and secrets.
const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// HashSecret returns the SHA-256 of secret: what the appliance stores.
func HashSecret(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

// VerifySecret reports whether secret is the one whose HashSecret is hash,
// comparing the hashes in constant time. It is false for an empty secret.
func VerifySecret(hash [32]byte, secret string) bool {
	if secret == "" {
		return false
	}
	got := HashSecret(secret)
	return subtle.ConstantTimeCompare(got[:], hash[:]) == 1
}

// randomBase62 returns n characters of base62 read from r, each uniformly
// distributed: a byte b is used only if b < 248 (= 4*62), as b%62, and
// skipped otherwise, so that no character is more likely than another.
func randomBase62(r io.Reader, n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/8+8) // about 3% of bytes are skipped
	for len(out) < n {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("token: read random bytes: %w", err)
		}
		for _, b := range buf {
			if b >= 248 {
				continue
			}
			out = append(out, base62[b%62])
			if len(out) == n {
				break
			}
		}
	}
	return string(out), nil
}

// randomSecret returns n random characters of base62 from crypto/rand.
func randomSecret(n int) (string, error) { return randomBase62(rand.Reader, n) }

// isBase62 reports whether c is in the base62 alphabet.
func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

// checkSecret checks a secret of either kind of token. Its errors say what
// is wrong without quoting the secret.
func checkSecret(kind, secret string) error {
	if secret == "" {
		return malformed(kind, "secret is empty")
	}
	for i := 0; i < len(secret); i++ {
		if !isBase62(secret[i]) {
			return malformed(kind, "secret has a character that is not [0-9A-Za-z] at byte %d", i+1)
		}
	}
	if len(secret) < MinSecretLen {
		return malformed(kind, "secret is %d characters, want at least %d", len(secret), MinSecretLen)
	}
	if len(secret) > MaxSecretLen {
		return malformed(kind, "secret is %d characters, want at most %d", len(secret), MaxSecretLen)
	}
	return nil
}

// malformed returns an error wrapping ErrMalformed. Callers must never pass
// any part of the input as an argument, only lengths and positions.
func malformed(kind, format string, args ...any) error {
	return fmt.Errorf("%w %s: %s", ErrMalformed, kind, fmt.Sprintf(format, args...))
}

// redactedFormat prints s (gs for %#v, s quoted for %q) for every verb, so
// that no verb prints a token's fields.
func redactedFormat(f fmt.State, verb rune, s, gs string) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, gs)
	case verb == 'q':
		_, _ = io.WriteString(f, strconv.Quote(s))
	default:
		_, _ = io.WriteString(f, s)
	}
}
