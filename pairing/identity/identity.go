// Package identity gives the appliance and each agent a long-lived Ed25519
// key, and makes the mutually authenticated TLS 1.3 configurations that
// connect them.
//
// Trust model: there is no certificate authority. Each side makes its key on
// first start and keeps it in its state directory; its certificate is
// self-signed and is only a carrier for the key. A peer is known by the
// Fingerprint of its public key, and a connection is accepted only if the
// Verifier accepts the peer's Fingerprint: Pinned for a peer already known,
// AnyPeer only for trust on first use, where the caller pins the key it saw
// (the operator confirms the agent's Fingerprint in the wizard). The TLS
// handshake proves that the peer holds the private key of the certificate it
// presented, so a pinned Fingerprint cannot be used by anyone else.
package identity

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// KeyFile is the name of the key file in the state directory given to
// LoadOrCreate.
const KeyFile = "identity.key"

// pemType is the PEM block type of the key file (PKCS #8).
const pemType = "PRIVATE KEY"

// maxKeyFileSize bounds what LoadOrCreate reads; a real key file is ~120 bytes.
const maxKeyFileSize = 64 << 10

// Identity is one side's key and the self-signed certificate that carries it.
// It is safe for concurrent use. Printing it (fmt, slog) shows only its name
// and Fingerprint.
type Identity struct {
	name string
	priv ed25519.PrivateKey
	fp   Fingerprint
	cert tls.Certificate
}

// LoadOrCreate loads the key from dir/identity.key, or makes one on first use.
//
// dir is created (0700) if missing. A new key is written atomically (temporary
// file 0600, fsync, hard link or rename into place, fsync of dir) and never
// replaces a file that exists, even one made concurrently by another process.
// An existing file is used as it is or refused with an error, never replaced:
// it must be a regular file holding one PEM "PRIVATE KEY" block (PKCS #8) with
// an Ed25519 key and, except on Windows, it must not be accessible to group or
// others (mode 0600 or stricter).
//
// The certificate is made anew on every call: CommonName name, a random
// serial, valid from an hour ago for 100 years. Peers do not validate it;
// they pin its key.
func LoadOrCreate(dir, name string) (*Identity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: create state directory: %w", err)
	}
	path := filepath.Join(dir, KeyFile)
	priv, err := readKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		priv, err = createKey(dir, path)
	}
	if err != nil {
		return nil, err
	}
	return newIdentity(name, priv)
}

// New makes an Identity with a new key that is kept only in memory (tests,
// tools).
func New(name string) (*Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	return newIdentity(name, priv)
}

// Fingerprint returns the Fingerprint of the identity's public key.
func (id *Identity) Fingerprint() Fingerprint { return id.fp }

// Certificate returns the self-signed certificate and private key, for a
// tls.Config. ServerConfig and ClientConfig use it.
func (id *Identity) Certificate() tls.Certificate { return id.cert }

// Name returns the name given to LoadOrCreate or New (the certificate's
// CommonName).
func (id *Identity) Name() string { return id.name }

// PublicKey returns the identity's public key.
func (id *Identity) PublicKey() ed25519.PublicKey {
	return id.priv.Public().(ed25519.PublicKey)
}

// String returns the name and the Fingerprint; never key material.
func (id Identity) String() string { return fmt.Sprintf("%q %s", id.name, id.fp) }

// GoString is as String: never key material.
func (id Identity) GoString() string {
	return fmt.Sprintf("identity.Identity{Name:%q, Fingerprint:%s}", id.name, id.fp)
}

// Format prints the String form for every verb (GoString for %#v), so that no
// verb prints the private key.
func (id Identity) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, id.GoString())
		return
	}
	_, _ = io.WriteString(f, id.String())
}

// LogValue logs the name and the Fingerprint.
func (id Identity) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", id.name), slog.String("fingerprint", id.fp.String()))
}

// newIdentity wraps priv in a new self-signed certificate.
func newIdentity(name string, priv ed25519.PrivateKey) (*Identity, error) {
	pub := priv.Public().(ed25519.PublicKey)
	fp, err := FingerprintOf(pub)
	if err != nil {
		return nil, err
	}
	// 127 random bits: positive, at most 20 octets as RFC 5280 requires.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("identity: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(100, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, fmt.Errorf("identity: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: parse own certificate: %w", err)
	}
	return &Identity{
		name: name,
		priv: priv,
		fp:   fp,
		cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf},
	}, nil
}

// readKey reads and checks the key file at path. An error wrapping
// fs.ErrNotExist means there is no file (and no dangling symlink) at path.
func readKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, lerr := os.Lstat(path); lerr == nil {
				return nil, fmt.Errorf("identity: key file %s is a dangling symlink", path)
			}
		}
		return nil, fmt.Errorf("identity: open key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity: key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("identity: key file %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity: key file %s has mode %04o, want 0600: it must not be accessible to group or others (chmod 600 it, and consider the key exposed)",
			path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("identity: read key file %s: %w", path, err)
	}
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("identity: key file %s is larger than %d bytes", path, maxKeyFileSize)
	}
	priv, err := parseKey(b)
	if err != nil {
		return nil, fmt.Errorf("identity: key file %s: %w", path, err)
	}
	return priv, nil
}

// parseKey parses a key file's contents. Its errors never contain key
// material.
func parseKey(b []byte) (ed25519.PrivateKey, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block (the file is corrupt)")
	}
	if block.Type != pemType {
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, pemType)
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("PEM block has headers (an encrypted key is not supported)")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("unexpected data after the PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not a valid PKCS #8 private key (the file is corrupt)")
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %s, want Ed25519", keyTypeName(key))
	}
	return priv, nil
}

// createKey makes a key and writes it to path (in dir) without ever replacing
// an existing file. If another process created path meanwhile, its key is
// loaded and returned instead.
func createKey(dir, path string) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("identity: marshal key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der})

	tmp, err := os.CreateTemp(dir, "."+KeyFile+".tmp-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("identity: create key file: %w", err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath) // after a link, or a failure; a no-op after a rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("identity: write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("identity: sync key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("identity: close key file: %w", err)
	}

	// A hard link never replaces an existing file, unlike rename.
	err = os.Link(tmpPath, path)
	switch {
	case errors.Is(err, fs.ErrExist):
		// Another process made the key first; use that one.
		return readKey(path)
	case err != nil:
		// The file system may not support hard links: fall back to rename,
		// checking just before that nothing is there.
		if _, lerr := os.Lstat(path); !errors.Is(lerr, fs.ErrNotExist) {
			if lerr == nil {
				return readKey(path)
			}
			return nil, fmt.Errorf("identity: key file: %w", lerr)
		}
		if err := os.Rename(tmpPath, path); err != nil {
			return nil, fmt.Errorf("identity: install key file: %w", err)
		}
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("identity: sync state directory: %w", err)
	}
	return priv, nil
}

// syncDir makes a new directory entry in dir durable. Windows cannot sync a
// directory, and NTFS does not need it.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// keyTypeName names a key's type for error messages.
func keyTypeName(key any) string {
	switch key.(type) {
	case ed25519.PrivateKey, ed25519.PublicKey:
		return "Ed25519"
	case *rsa.PrivateKey, *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PrivateKey, *ecdsa.PublicKey:
		return "ECDSA"
	case *ecdh.PrivateKey, *ecdh.PublicKey:
		return "ECDH"
	default:
		return fmt.Sprintf("%T", key)
	}
}
