package identity

import (
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Fingerprint identifies a peer: the SHA-256 of its public key as a PKIX
// SubjectPublicKeyInfo in DER. It is not secret; it is what a peer is pinned
// by and what people compare.
type Fingerprint [32]byte

// fingerprintPrefix starts the String form, as in OpenSSH.
const fingerprintPrefix = "SHA256:"

// fingerprintEncoding is the encoding of the String form. Strict: the unused
// low bits of the last character must be zero, so every Fingerprint has
// exactly one String form.
var fingerprintEncoding = base64.RawStdEncoding.Strict()

// shortEncoding is the alphabet of Short: RFC 4648 base32, upper case.
var shortEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// FingerprintOf returns the Fingerprint of pub, which must be a key type that
// crypto/x509 can marshal (Ed25519, ECDSA, RSA, ...). Only Ed25519 peers are
// accepted by ServerConfig and ClientConfig.
func FingerprintOf(pub crypto.PublicKey) (Fingerprint, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Fingerprint{}, fmt.Errorf("identity: fingerprint of %T: %w", pub, err)
	}
	return sha256.Sum256(der), nil
}

// ParseFingerprint parses the String form, "SHA256:" followed by 43
// characters of unpadded standard base64. It accepts nothing else: no
// surrounding space, no padding, no other encoding or case.
func ParseFingerprint(s string) (Fingerprint, error) {
	rest, ok := strings.CutPrefix(s, fingerprintPrefix)
	if !ok {
		return Fingerprint{}, errors.New(`identity: fingerprint does not start with "SHA256:"`)
	}
	var f Fingerprint
	if fingerprintEncoding.EncodedLen(len(f)) != len(rest) {
		return Fingerprint{}, fmt.Errorf("identity: fingerprint has %d characters after \"SHA256:\", want %d",
			len(rest), fingerprintEncoding.EncodedLen(len(f)))
	}
	n, err := fingerprintEncoding.Decode(f[:], []byte(rest))
	if err != nil || n != len(f) {
		return Fingerprint{}, errors.New("identity: fingerprint is not valid unpadded base64")
	}
	return f, nil
}

// String returns "SHA256:" and the unpadded standard base64 of f, the form
// OpenSSH uses for its (differently computed) key fingerprints.
func (f Fingerprint) String() string {
	return fingerprintPrefix + fingerprintEncoding.EncodeToString(f[:])
}

// Short returns a form of f for people to compare, on screen or read aloud:
// the first 10 bytes (80 bits) in RFC 4648 base32, upper case, in four groups
// of four separated by '-', e.g. "4KPQ-ZN7A-W2XE-M3BD". The alphabet is A–Z
// and 2–7: no 0, 1, 8 or 9 to mistake for O, I/L, B or g, and letters
// survive being read aloud in either case. Matching a chosen Short form with
// another key takes about 2^80 key generations.
func (f Fingerprint) Short() string {
	enc := shortEncoding.EncodeToString(f[:10]) // 16 characters
	return enc[0:4] + "-" + enc[4:8] + "-" + enc[8:12] + "-" + enc[12:16]
}

// IsZero reports whether f is the zero Fingerprint, which no key has: it
// means "no peer" (not paired, not known yet).
func (f Fingerprint) IsZero() bool { return f == Fingerprint{} }

// Equal reports whether f and g are the same, in constant time.
func (f Fingerprint) Equal(g Fingerprint) bool {
	return subtle.ConstantTimeCompare(f[:], g[:]) == 1
}

// MarshalText returns the String form.
func (f Fingerprint) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText parses the String form, as ParseFingerprint.
func (f *Fingerprint) UnmarshalText(b []byte) error {
	g, err := ParseFingerprint(string(b))
	if err != nil {
		return err
	}
	*f = g
	return nil
}
