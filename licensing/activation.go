package licensing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidActivation is matched (errors.Is) by Verify's errors when a
// signed activation is not one of the service's: bad signature, another
// signer, or a payload that is not a well-formed activation.
var ErrInvalidActivation = errors.New("licensing: invalid activation")

// ErrExpired is matched by Verify's error for a genuine activation that has
// expired.
var ErrExpired = errors.New("licensing: activation expired")

// signDomain prefixes the payload in every signature, so that a signature
// over an activation cannot be taken for one over anything else.
const signDomain = "cairn activation v1\x00"

// payloadVersion is the "v" of the payload encoding.
const payloadVersion = 1

// Bounds of an activation's fields.
const (
	MaxIDLen       = 128  // KeyID, AgentFingerprint, ApplianceID, Serial, Edition
	MaxHostnameLen = 255  // Hostname
	maxPayloadLen  = 4096 // bytes of a Signed payload
)

// Activation is the service's statement that the key KeyID licenses the agent
// whose public key has the fingerprint AgentFingerprint on the appliance
// ApplianceID from Issued until Expires. Serial is unique per signature.
// Times are whole seconds, UTC.
type Activation struct {
	KeyID            string    `json:"key_id"`
	AgentFingerprint string    `json:"agent_fingerprint"`
	ApplianceID      string    `json:"appliance_id"`
	Hostname         string    `json:"hostname,omitempty"`
	Edition          string    `json:"edition"`
	Issued           time.Time `json:"issued"`
	Expires          time.Time `json:"expires"`
	Serial           string    `json:"serial"`
}

// Signed is an activation as the service sends it and the appliance stores
// it: Payload is the canonical encoding of the Activation, Signature the
// service's Ed25519 signature over the domain prefix and Payload, SignerID
// the SignerID of the service's public key.
type Signed struct {
	Payload   []byte `json:"payload"`
	Signature []byte `json:"signature"`
	SignerID  string `json:"signer_id"`
}

// payload is the canonical encoding of an Activation: JSON with the fields in
// this order and times as Unix seconds.
type payload struct {
	V                int    `json:"v"`
	Serial           string `json:"serial"`
	KeyID            string `json:"key_id"`
	AgentFingerprint string `json:"agent_fingerprint"`
	ApplianceID      string `json:"appliance_id"`
	Hostname         string `json:"hostname"`
	Edition          string `json:"edition"`
	Issued           int64  `json:"issued"`
	Expires          int64  `json:"expires"`
}

// Sign returns a with its times truncated to seconds, encoded canonically and
// signed with priv. It refuses an Activation that Verify would not accept.
func Sign(priv ed25519.PrivateKey, a Activation) (Signed, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return Signed{}, errors.New("licensing: sign activation: signing key is not an Ed25519 private key")
	}
	p := payload{
		V: payloadVersion, Serial: a.Serial, KeyID: a.KeyID, AgentFingerprint: a.AgentFingerprint,
		ApplianceID: a.ApplianceID, Hostname: a.Hostname, Edition: a.Edition,
		Issued: a.Issued.Unix(), Expires: a.Expires.Unix(),
	}
	if err := p.check(); err != nil {
		return Signed{}, fmt.Errorf("licensing: sign activation: %w", err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return Signed{}, fmt.Errorf("licensing: sign activation: %w", err)
	}
	return Signed{
		Payload:   b,
		Signature: ed25519.Sign(priv, signedMessage(b)),
		SignerID:  SignerID(priv.Public().(ed25519.PublicKey)),
	}, nil
}

// signedMessage returns what is signed: the domain prefix and the payload.
func signedMessage(payload []byte) []byte {
	return append([]byte(signDomain), payload...)
}

// Verify checks that s is signed by pub and returns its activation. Errors
// wrap ErrInvalidActivation (bad signature, other signer, malformed payload)
// or ErrExpired (a genuine activation whose Expires is not after now; the
// activation is returned with it). Verify needs no network: the appliance
// calls it with the vendor's public key.
func Verify(pub ed25519.PublicKey, s Signed, now time.Time) (Activation, error) {
	if len(pub) != ed25519.PublicKeySize {
		return Activation{}, fmt.Errorf("%w: the verifying key is not an Ed25519 public key", ErrInvalidActivation)
	}
	if s.SignerID != SignerID(pub) {
		return Activation{}, fmt.Errorf("%w: signed by key %q, want %q", ErrInvalidActivation, printable(s.SignerID), SignerID(pub))
	}
	if len(s.Payload) > maxPayloadLen {
		return Activation{}, fmt.Errorf("%w: payload is %d bytes, more than %d", ErrInvalidActivation, len(s.Payload), maxPayloadLen)
	}
	if len(s.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, signedMessage(s.Payload), s.Signature) {
		return Activation{}, fmt.Errorf("%w: bad signature", ErrInvalidActivation)
	}
	var p payload
	dec := json.NewDecoder(bytes.NewReader(s.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Activation{}, fmt.Errorf("%w: payload: %v", ErrInvalidActivation, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Activation{}, fmt.Errorf("%w: payload has data after the activation", ErrInvalidActivation)
	}
	if err := p.check(); err != nil {
		return Activation{}, fmt.Errorf("%w: %v", ErrInvalidActivation, err)
	}
	a := Activation{
		KeyID: p.KeyID, AgentFingerprint: p.AgentFingerprint, ApplianceID: p.ApplianceID,
		Hostname: p.Hostname, Edition: p.Edition, Serial: p.Serial,
		Issued: time.Unix(p.Issued, 0).UTC(), Expires: time.Unix(p.Expires, 0).UTC(),
	}
	if !now.Before(a.Expires) {
		return a, fmt.Errorf("%w: activation %s of key %s expired at %s", ErrExpired, a.Serial, a.KeyID, a.Expires.Format(time.RFC3339))
	}
	return a, nil
}

// check reports what makes p not a well-formed activation.
func (p payload) check() error {
	if p.V != payloadVersion {
		return fmt.Errorf("payload version %d, want %d", p.V, payloadVersion)
	}
	if id, err := ParseKeyID(p.KeyID); err != nil || id != p.KeyID {
		return errors.New("key_id is not a key ID")
	}
	for _, f := range []struct{ name, v string }{
		{"serial", p.Serial}, {"agent_fingerprint", p.AgentFingerprint},
		{"appliance_id", p.ApplianceID}, {"edition", p.Edition},
	} {
		if err := CheckID(f.name, f.v); err != nil {
			return err
		}
	}
	if err := CheckHostname(p.Hostname); err != nil {
		return err
	}
	if p.Issued <= 0 || p.Expires <= p.Issued {
		return errors.New("expires is not after issued")
	}
	const maxUnix = 253402300799 // 9999-12-31T23:59:59Z
	if p.Expires > maxUnix {
		return errors.New("expires is after the year 9999")
	}
	return nil
}

// CheckID reports whether v is a valid identifier field (agent fingerprint,
// appliance ID, edition, serial): 1 to MaxIDLen printable ASCII characters
// without spaces. name names the field in the error.
func CheckID(name, v string) error {
	if v == "" {
		return fmt.Errorf("%s is empty", name)
	}
	if len(v) > MaxIDLen {
		return fmt.Errorf("%s is %d bytes, more than %d", name, len(v), MaxIDLen)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%s has a character that is not printable ASCII at byte %d", name, i+1)
		}
	}
	return nil
}

// CheckHostname reports whether v is a valid hostname field: empty, or up to
// MaxHostnameLen bytes of UTF-8 without control characters.
func CheckHostname(v string) error {
	if len(v) > MaxHostnameLen {
		return fmt.Errorf("hostname is %d bytes, more than %d", len(v), MaxHostnameLen)
	}
	if !utf8.ValidString(v) {
		return errors.New("hostname is not UTF-8")
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return errors.New("hostname has a control character")
		}
	}
	return nil
}

// printable returns s cut to 64 bytes with what is not printable ASCII
// replaced, for quoting untrusted text in errors.
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '?'
		}
		return r
	}, s)
}

// publicKeyPrefix starts the text form of a public key.
const publicKeyPrefix = "ed25519:"

// FormatPublicKey returns the text form of pub for configuration files:
// "ed25519:" and the standard base64 of its 32 bytes.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return publicKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey parses FormatPublicKey's form, ignoring surrounding white
// space.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), publicKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("licensing: public key does not start with %q", publicKeyPrefix)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("licensing: public key is not base64: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("licensing: public key is %d bytes, want %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// SignerID returns the identifier of a service's public key: 16 Crockford
// base32 symbols of its SHA-256. Signed.SignerID carries it, so that an
// appliance can tell which key signed an activation.
func SignerID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return string(symbolsText(bitsToSymbols(h[:], 16)))
}
