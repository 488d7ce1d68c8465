package licensing

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// Key format. A key is keyLen symbols of the Crockford base32 alphabet: the
// first keyRandom are random, the last is the check symbol.
const (
	keyLen     = 25
	keyRandom  = keyLen - 1
	keyGroup   = 5
	keyIDLen   = 10  // symbols of a key ID (50 bits of a SHA-256)
	maxKeyText = 128 // bytes ParseKey reads at most: a key, separators and white space
)

// crockford is the Crockford base32 alphabet: digits and upper-case letters
// without I, L, O and U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// Domain separation of the two hashes of a key.
const (
	keyIDDomain   = "cairn product key id v1\x00"
	keyHashDomain = "cairn product key hash v1\x00"
)

// ErrKeyFormat is matched (errors.Is) by ParseKey's errors when the text is
// not 25 Crockford base32 symbols.
var ErrKeyFormat = errors.New("licensing: not a product key")

// ErrKeyChecksum is matched by ParseKey's errors when the text has the form of
// a key but its check symbol does not match: a symbol was mistyped.
var ErrKeyChecksum = errors.New("licensing: product key check symbol does not match")

// symbolValue maps an input byte to its Crockford value plus one (0: not a
// symbol). Decoding is case-insensitive, and I and L read as 1, O as 0, as
// Crockford specifies. U is not a symbol.
var symbolValue = func() (t [256]byte) {
	for i := 0; i < len(crockford); i++ {
		c := crockford[i]
		t[c] = byte(i + 1)
		if 'A' <= c && c <= 'Z' {
			t[c+'a'-'A'] = byte(i + 1)
		}
	}
	for _, c := range "IiLl" {
		t[c] = 1 + 1
	}
	for _, c := range "Oo" {
		t[c] = 0 + 1
	}
	return t
}()

// isKeySeparator reports whether ParseKey skips c: the group separator and
// white space.
func isKeySeparator(c byte) bool {
	return c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// Key is a product key. The zero Key is no key (IsZero).
//
// A Key is a secret of the customer: every printed form (String, fmt's verbs,
// slog, JSON) shows only its ID; Reveal returns it in clear, to send it to
// the activation service or to show it to the vendor once. The symbols are
// kept behind a pointer so that fmt, when it prints a struct that holds a
// Key in an unexported field (where it cannot call Key's methods), shows an
// address and not the key. Compare keys with Equal, not ==.
type Key struct {
	sym *[keyLen]byte // symbol values 0..31; nil for the zero Key
}

// NewKey returns a new random key: 120 bits from crypto/rand.
func NewKey() (Key, error) { return newKeyFrom(rand.Reader) }

// newKeyFrom returns a key whose random symbols are 15 bytes read from r.
func newKeyFrom(r io.Reader) (Key, error) {
	var b [keyRandom * 5 / 8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Key{}, fmt.Errorf("licensing: read random bytes for a product key: %w", err)
	}
	var sym [keyLen]byte
	copy(sym[:], bitsToSymbols(b[:], keyRandom))
	sym[keyRandom] = checkSymbol(sym[:keyRandom])
	return Key{sym: &sym}, nil
}

// ParseKey parses a product key. It ignores case, '-' and white space, and
// reads I and L as 1 and O as 0 (Crockford). Errors wrap ErrKeyFormat or
// ErrKeyChecksum and say what is wrong by position and count, never quoting
// the input.
func ParseKey(s string) (Key, error) {
	if len(s) > maxKeyText {
		return Key{}, keyFormatError("it is %d bytes long, too long for a key", len(s))
	}
	var sym [keyLen]byte
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isKeySeparator(c) {
			continue
		}
		v := symbolValue[c]
		if v == 0 {
			if c == 'U' || c == 'u' {
				return Key{}, keyFormatError("symbol %d is U, which keys do not use", n+1)
			}
			return Key{}, keyFormatError("symbol %d is not a digit or a letter of the key alphabet", n+1)
		}
		if n == keyLen {
			return Key{}, keyFormatError("it has more than %d symbols", keyLen)
		}
		sym[n] = v - 1
		n++
	}
	if n != keyLen {
		return Key{}, keyFormatError("it has %d symbols, want %d", n, keyLen)
	}
	if checkSymbol(sym[:keyRandom]) != sym[keyRandom] {
		return Key{}, fmt.Errorf("%w: a symbol is mistyped or two are swapped", ErrKeyChecksum)
	}
	return Key{sym: &sym}, nil
}

// keyFormatError returns an error wrapping ErrKeyFormat. Callers pass only
// counts and positions, never the input.
func keyFormatError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrKeyFormat, fmt.Sprintf(format, args...))
}

// IsZero reports whether k is the zero Key.
func (k Key) IsZero() bool { return k.sym == nil }

// Equal reports whether k and l are the same key, in constant time.
func (k Key) Equal(l Key) bool {
	if k.sym == nil || l.sym == nil {
		return k.sym == nil && l.sym == nil
	}
	return subtle.ConstantTimeCompare(k.sym[:], l.sym[:]) == 1
}

// canonical returns the 25 symbols without separators.
func (k Key) canonical() []byte {
	out := make([]byte, keyLen)
	for i, v := range k.sym {
		out[i] = crockford[v]
	}
	return out
}

// Reveal returns the key in clear, in five groups of five symbols separated
// by '-': only for the activation service's request body and for showing a
// new key to the vendor once. It is "" for the zero Key.
func (k Key) Reveal() string {
	if k.sym == nil {
		return ""
	}
	c := k.canonical()
	out := make([]byte, 0, keyLen+keyLen/keyGroup-1)
	for i := 0; i < keyLen; i += keyGroup {
		if i > 0 {
			out = append(out, '-')
		}
		out = append(out, c[i:i+keyGroup]...)
	}
	return string(out)
}

// ID returns the key's identifier: 10 Crockford base32 symbols of the SHA-256
// of the key (with a domain prefix), e.g. "7KQ2M9XAB3". It is not secret and
// names the key in logs, URLs, errors and the service's catalog. It is "" for
// the zero Key.
func (k Key) ID() string {
	if k.sym == nil {
		return ""
	}
	h := sha256.New()
	h.Write([]byte(keyIDDomain))
	h.Write(k.canonical())
	return string(symbolsText(bitsToSymbols(h.Sum(nil), keyIDLen)))
}

// Hash returns the SHA-256 of the key (with a domain prefix other than ID's):
// what the activation service stores instead of the key.
func (k Key) Hash() [32]byte {
	if k.sym == nil {
		return [32]byte{}
	}
	h := sha256.New()
	h.Write([]byte(keyHashDomain))
	h.Write(k.canonical())
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// String returns "key:" and the ID, e.g. "key:7KQ2M9XAB3" ("key:none" for the
// zero Key). Use Reveal for the key itself.
func (k Key) String() string {
	if k.sym == nil {
		return "key:none"
	}
	return "key:" + k.ID()
}

// GoString returns the Go syntax of k with the key redacted.
func (k Key) GoString() string { return "licensing.Key{ID:" + strconv.Quote(k.ID()) + "}" }

// Format prints String for every verb (quoted for %q), GoString for %#v.
func (k Key) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, k.GoString())
	case verb == 'q':
		_, _ = io.WriteString(f, strconv.Quote(k.String()))
	default:
		_, _ = io.WriteString(f, k.String())
	}
}

// LogValue logs the ID only.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.ID()) }

// MarshalJSON returns the String form, not the key. There is deliberately no
// UnmarshalJSON: a key travels as Reveal's text and is read with ParseKey.
func (k Key) MarshalJSON() ([]byte, error) { return json.Marshal(k.String()) }

// ParseKeyID checks that s is a key ID (10 Crockford base32 symbols, as ID
// returns) and returns it in canonical form: upper case, with I and L read
// as 1 and O as 0.
func ParseKeyID(s string) (string, error) {
	if len(s) != keyIDLen {
		return "", fmt.Errorf("licensing: a key ID is %d symbols, not %d", keyIDLen, len(s))
	}
	out := make([]byte, keyIDLen)
	for i := 0; i < len(s); i++ {
		v := symbolValue[s[i]]
		if v == 0 {
			return "", fmt.Errorf("licensing: key ID symbol %d is not in the key alphabet", i+1)
		}
		out[i] = crockford[v-1]
	}
	return string(out), nil
}

// checkSymbol returns the check symbol of the random symbols s (values
// 0..31), so that the key s‖c satisfies
//
//	Σ w_i·s_i = 0 in GF(32), w_i = α^(24-i) for i = 0..24,
//
// with GF(32) = GF(2)[x]/(x⁵+x²+1) and α = x, a generator of its 31 non-zero
// elements. All 25 weights α²⁴ … α¹, α⁰ = 1 are non-zero and distinct. So
//   - a substitution s_i → s_i' changes the sum by w_i·(s_i−s_i') ≠ 0;
//   - a swap of s_i ≠ s_j (adjacent or not) changes it by
//     (w_i−w_j)·(s_i−s_j) ≠ 0,
//
// and neither can turn a key into another valid key. (Crockford's own mod-37
// check needs 5 more symbols than a 32-symbol key has.) Horner's rule over
// the random symbols computes c = Σ_{i<24} α^(24-i)·s_i, which is the check
// symbol since its weight is 1 and addition in GF(32) is XOR.
func checkSymbol(s []byte) byte {
	var c byte
	for _, v := range s {
		c = mulAlpha(c ^ v)
	}
	return c
}

// mulAlpha multiplies v by α in GF(32) = GF(2)[x]/(x⁵+x²+1).
func mulAlpha(v byte) byte {
	v <<= 1
	if v&0x20 != 0 {
		v ^= 0x25 // x⁵ = x² + 1
	}
	return v
}

// bitsToSymbols returns the first n 5-bit values of b, most significant bit
// first. b must hold at least 5n bits.
func bitsToSymbols(b []byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		var v byte
		for j := 0; j < 5; j++ {
			bit := i*5 + j
			v = v<<1 | (b[bit/8]>>(7-bit%8))&1
		}
		out[i] = v
	}
	return out
}

// symbolsText returns the Crockford symbols of the values v.
func symbolsText(v []byte) []byte {
	out := make([]byte, len(v))
	for i, x := range v {
		out[i] = crockford[x]
	}
	return out
}
