package identity

import (
	"crypto/ed25519"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Verifier decides whether a peer's key is acceptable. A non-nil error aborts
// the TLS handshake and is returned by the Handshake of the side that checked.
// It is called during every handshake, possibly concurrently.
type Verifier func(peer Fingerprint) error

// ErrPinMismatch is matched (errors.Is) by a *PinError: the peer's key is not
// the pinned one.
var ErrPinMismatch = errors.New("identity: peer key does not match the pinned key")

// PinError is returned by a Pinned Verifier for any other key.
type PinError struct {
	Want Fingerprint // the pinned key
	Got  Fingerprint // the peer's key
}

func (e *PinError) Error() string {
	return fmt.Sprintf("identity: peer key %s is not the pinned %s", e.Got, e.Want)
}

// Is makes errors.Is(err, ErrPinMismatch) true.
func (e *PinError) Is(target error) bool { return target == ErrPinMismatch }

// Pinned accepts only the key with Fingerprint want, and returns a *PinError
// for any other. Pinned of the zero Fingerprint accepts no key.
func Pinned(want Fingerprint) Verifier {
	return func(peer Fingerprint) error {
		if want.IsZero() || subtle.ConstantTimeCompare(want[:], peer[:]) != 1 {
			return &PinError{Want: want, Got: peer}
		}
		return nil
	}
}

// AnyPeer accepts every (Ed25519) key: trust on first use. The caller must
// pin the key it saw (PeerFingerprint) before it relies on the peer again.
func AnyPeer() Verifier {
	return func(Fingerprint) error { return nil }
}

// ServerConfig returns the TLS configuration for the side that accepts: TLS
// 1.3 only, id's certificate presented, a client certificate required, and
// the connection refused unless the client negotiated the ALPN protocol alpn
// and presented an Ed25519 key that verify accepts. Certificate chains and
// names are not checked: the key is all that counts.
func ServerConfig(id *Identity, alpn string, verify Verifier) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{id.Certificate()},
		ClientAuth:             tls.RequireAnyClientCert,
		NextProtos:             []string{alpn},
		SessionTicketsDisabled: true, // every connection shows its certificate
		VerifyConnection:       verifyConnection(alpn, verify),
	}
}

// ClientConfig returns the TLS configuration for the side that dials: TLS 1.3
// only, id's certificate presented, and the connection refused unless the
// server negotiated the ALPN protocol alpn and presented an Ed25519 key that
// verify accepts. Certificate chains and names are not checked (the server
// name need not be set): the key is all that counts.
func ClientConfig(id *Identity, alpn string, verify Verifier) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Certificate()},
		NextProtos:   []string{alpn},
		// No CA and no names: VerifyConnection pins the key instead.
		InsecureSkipVerify: true,
		VerifyConnection:   verifyConnection(alpn, verify),
	}
}

// verifyConnection is the check both configurations make once the peer's
// certificate is known. It fails closed: an empty alpn or a nil verify
// refuses every connection.
func verifyConnection(alpn string, verify Verifier) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if verify == nil {
			return errors.New("identity: no Verifier configured")
		}
		if alpn == "" {
			return errors.New("identity: no ALPN protocol configured")
		}
		if cs.Version != tls.VersionTLS13 {
			return fmt.Errorf("identity: peer negotiated %s, want TLS 1.3", tls.VersionName(cs.Version))
		}
		if cs.NegotiatedProtocol != alpn {
			if cs.NegotiatedProtocol == "" {
				return fmt.Errorf("identity: peer did not negotiate ALPN protocol %q", alpn)
			}
			return fmt.Errorf("identity: peer negotiated ALPN protocol %q, want %q", cs.NegotiatedProtocol, alpn)
		}
		fp, err := PeerFingerprint(cs)
		if err != nil {
			return err
		}
		return verify(fp)
	}
}

// PeerFingerprint returns the Fingerprint of the peer's certificate in the
// state of a completed handshake. It fails if there is no peer certificate
// or its key is not Ed25519.
func PeerFingerprint(cs tls.ConnectionState) (Fingerprint, error) {
	if len(cs.PeerCertificates) == 0 {
		return Fingerprint{}, errors.New("identity: peer presented no certificate")
	}
	return leafFingerprint(cs.PeerCertificates[0])
}

// leafFingerprint returns the Fingerprint of leaf's key if it is Ed25519.
func leafFingerprint(leaf *x509.Certificate) (Fingerprint, error) {
	pub, ok := leaf.PublicKey.(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return Fingerprint{}, fmt.Errorf("identity: peer key is %s, want Ed25519", keyTypeName(leaf.PublicKey))
	}
	return FingerprintOf(pub)
}
