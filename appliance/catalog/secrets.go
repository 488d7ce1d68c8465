package catalog

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Sealed secrets are values the appliance must keep but never in clear in
// the file, such as a product key between a failed License step and its
// retry. Each is stored under its name as a sealedSecret record: the value
// encrypted with AES-256-GCM under Options.SecretKey, which the file does
// not hold, with a fresh random nonce and the name bound as additional data
// (so a sealed value copied to another name does not open).

// MaxSecretLen bounds the length of a secret value.
const MaxSecretLen = 64 << 10

// sealedSecret is the stored form of a secret.
type sealedSecret struct {
	// KeyID identifies the key that sealed the value (see secretKeyID), so
	// that a wrong key can be told from a damaged value.
	KeyID  string `json:"key_id"`
	Nonce  []byte `json:"nonce"`  // the GCM nonce, random per value
	Sealed []byte `json:"sealed"` // the ciphertext followed by the GCM tag
}

// secretKeyIDLabel is the HMAC input that derives a key's ID.
const secretKeyIDLabel = "cairn catalog secret key id v1"

// secretKeyID returns a short public identifier of key: the first 8 bytes
// of HMAC-SHA256(key, secretKeyIDLabel), in hex. It reveals nothing usable
// about the key.
func secretKeyID(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(secretKeyIDLabel))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// secretAD is the additional data that binds a sealed value to its name.
func secretAD(name string) []byte {
	return append([]byte("cairn catalog secret\x00"), name...)
}

// validSecretName accepts 1 to 128 characters of [A-Za-z0-9._:/-].
func validSecretName(name string) error {
	if name == "" || len(name) > 128 {
		return fmt.Errorf("secret name %q: must be 1 to 128 characters: %w", name, ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '/' || c == '-') {
			return fmt.Errorf("secret name %q: character %q not allowed: %w", name, c, ErrInvalid)
		}
	}
	return nil
}

// aead returns the cipher of the catalog's secret key, or ErrNoSecretKey.
func (t *Tx) aead() (cipher.AEAD, error) {
	if t.secretKey == nil {
		return nil, ErrNoSecretKey
	}
	block, err := aes.NewCipher(t.secretKey)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// PutSecret seals value under the catalog's secret key and stores it under
// name (1 to 128 characters of [A-Za-z0-9._:/-]), replacing any value
// stored there. The value must be 1 to MaxSecretLen bytes, else ErrInvalid;
// it is not kept in clear anywhere in the file. Without a secret key
// PutSecret fails with ErrNoSecretKey.
func (t *Tx) PutSecret(name string, value []byte) error {
	if err := t.putSecret(name, value); err != nil {
		return fmt.Errorf("put secret %q: %w", name, err)
	}
	return nil
}

func (t *Tx) putSecret(name string, value []byte) error {
	aead, err := t.aead()
	if err != nil {
		return err
	}
	if err := validSecretName(name); err != nil {
		return err
	}
	if len(value) == 0 || len(value) > MaxSecretLen {
		return fmt.Errorf("value of %d bytes: must be 1 to %d: %w", len(value), MaxSecretLen, ErrInvalid)
	}
	b, err := t.bucket(bucketSecrets)
	if err != nil {
		return err
	}
	s := sealedSecret{KeyID: secretKeyID(t.secretKey), Nonce: make([]byte, aead.NonceSize())}
	if _, err := rand.Read(s.Nonce); err != nil {
		return fmt.Errorf("nonce: %w", err)
	}
	s.Sealed = aead.Seal(nil, s.Nonce, value, secretAD(name))
	return put(b, []byte(name), s)
}

// Secret returns the value stored under name, or ErrNotFound. A value that
// does not open fails with ErrInvalid, and the error says why: sealed under
// another secret key (the key file does not belong to this catalog), or
// altered or moved from another name. Without a secret key Secret fails
// with ErrNoSecretKey.
func (t *Tx) Secret(name string) ([]byte, error) {
	v, err := t.secret(name)
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return v, nil
}

func (t *Tx) secret(name string) ([]byte, error) {
	aead, err := t.aead()
	if err != nil {
		return nil, err
	}
	s, err := getIn[sealedSecret](t, bucketSecrets, []byte(name))
	if err != nil {
		return nil, err
	}
	if id := secretKeyID(t.secretKey); s.KeyID != id {
		return nil, fmt.Errorf("wrong secret key: the value was sealed under key ID %s, the catalog was opened with key ID %s: %w", s.KeyID, id, ErrInvalid)
	}
	if len(s.Nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("malformed: nonce of %d bytes, want %d: %w", len(s.Nonce), aead.NonceSize(), ErrInvalid)
	}
	v, err := aead.Open(nil, s.Nonce, s.Sealed, secretAD(name))
	if err != nil {
		return nil, fmt.Errorf("does not decrypt (the key is right): the stored value was altered or moved from another name: %w", ErrInvalid)
	}
	return v, nil
}

// DeleteSecret deletes the value stored under name. It needs no secret
// key.
func (t *Tx) DeleteSecret(name string) error {
	if err := t.deleteSecret(name); err != nil {
		return fmt.Errorf("delete secret %q: %w", name, err)
	}
	return nil
}

func (t *Tx) deleteSecret(name string) error {
	b, err := t.bucket(bucketSecrets)
	if err != nil {
		return err
	}
	if b.Get([]byte(name)) == nil {
		return ErrNotFound
	}
	return b.Delete([]byte(name))
}
