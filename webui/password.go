package webui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// argonParams are the argon2id parameters of new password hashes; the
// parameters of a stored hash travel with it, so they can be raised later.
type argonParams struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
}

// defaultArgon follows RFC 9106's second recommended option (64 MiB, 3
// passes) with the parallelism of a small appliance.
var defaultArgon = argonParams{Memory: 64 * 1024, Time: 3, Threads: 2}

const (
	saltLen = 16
	keyLen  = 32
	// MinPasswordLen is the shortest admin password accepted.
	MinPasswordLen = 12
	// maxPasswordLen bounds the work one login attempt can ask for.
	maxPasswordLen = 1024
)

// hashPassword returns the PHC string of an argon2id hash of password
// with a new random salt: $argon2id$v=19$m=..,t=..,p=..$salt$hash.
func hashPassword(password string, p argonParams) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

var errBadHash = errors.New("password hash: not an argon2id PHC string")

// Bounds on the parameters of a stored hash, so that no stored string can
// make a login take unbounded memory or time.
const (
	maxArgonMemory  = 1 << 20 // KiB: 1 GiB
	maxArgonTime    = 16
	maxArgonThreads = 64
)

// parsePHC parses an argon2id PHC string.
func parsePHC(phc string) (p argonParams, salt, key []byte, err error) {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, errBadHash
	}
	if parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return p, nil, nil, errBadHash
	}
	var m, t, th uint64
	if n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &th); err != nil || n != 3 ||
		parts[3] != fmt.Sprintf("m=%d,t=%d,p=%d", m, t, th) ||
		m < 8*th || m > maxArgonMemory || t == 0 || t > maxArgonTime || th == 0 || th > maxArgonThreads {
		return p, nil, nil, errBadHash
	}
	p = argonParams{Memory: uint32(m), Time: uint32(t), Threads: uint8(th)}
	enc := base64.RawStdEncoding.Strict()
	// Only canonical base64: the decoder skips line breaks.
	if salt, err = enc.DecodeString(parts[4]); err != nil || len(salt) < 8 || len(salt) > 64 || enc.EncodeToString(salt) != parts[4] {
		return p, nil, nil, errBadHash
	}
	if key, err = enc.DecodeString(parts[5]); err != nil || len(key) < 16 || len(key) > 64 || enc.EncodeToString(key) != parts[5] {
		return p, nil, nil, errBadHash
	}
	return p, salt, key, nil
}

// checkPassword reports whether password matches the PHC string, in
// constant time for a given hash.
func checkPassword(password, phc string) (bool, error) {
	p, salt, want, err := parsePHC(phc)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
