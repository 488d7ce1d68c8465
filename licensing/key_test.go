package licensing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
)

// testKeys returns n keys made from deterministic "random" bytes.
func testKeys(t *testing.T, n int) []Key {
	t.Helper()
	keys := make([]Key, n)
	for i := range keys {
		b := bytes.Repeat([]byte{byte(i*37 + 11)}, 15)
		for j := range b {
			b[j] ^= byte(j * (i + 3))
		}
		k, err := newKeyFrom(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	return keys
}

var keyFormat = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){4}$`)

func TestNewKeyParses(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		k, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		s := k.Reveal()
		if !keyFormat.MatchString(s) {
			t.Fatalf("Reveal() = %q, not 5 groups of 5 Crockford symbols", s)
		}
		if seen[s] {
			t.Fatalf("NewKey returned %q twice", s)
		}
		seen[s] = true
		got, err := ParseKey(s)
		if err != nil {
			t.Fatalf("ParseKey(NewKey().Reveal()): %v", err)
		}
		if !got.Equal(k) || got.Reveal() != s || got.ID() != k.ID() {
			t.Fatalf("ParseKey(%q) = %q, want the same key", s, got.Reveal())
		}
	}
}

func TestParseKeyNormalises(t *testing.T) {
	k := testKeys(t, 1)[0]
	s := k.Reveal()
	plain := strings.ReplaceAll(s, "-", "")
	for _, in := range []string{
		plain,
		strings.ToLower(s),
		" " + strings.ReplaceAll(s, "-", " ") + "\n",
		strings.ReplaceAll(s, "-", "--"),
		"\t" + plain[:7] + "-" + plain[7:] + "\r\n",
	} {
		got, err := ParseKey(in)
		if err != nil {
			t.Fatalf("ParseKey(%q): %v", in, err)
		}
		if !got.Equal(k) {
			t.Fatalf("ParseKey(%q) = %s, want %s", in, got.Reveal(), s)
		}
	}
	// Crockford's aliases: I and L read as 1, O as 0, in either case.
	zero, err := newKeyFrom(bytes.NewReader(make([]byte, 15)))
	if err != nil {
		t.Fatal(err)
	}
	if got := zero.Reveal(); got != "00000-00000-00000-00000-00000" {
		t.Fatalf("key of zero bits = %q", got)
	}
	if got, err := ParseKey("OoOOO-00000-0o000-00000-0000O"); err != nil || !got.Equal(zero) {
		t.Fatalf("ParseKey with O for 0 = %v, %v", got.Reveal(), err)
	}
	one := withSymbol(zero, 3, 1)
	one = withSymbol(one, 24, checkSymbol(one.sym[:keyRandom]))
	for _, alias := range []string{"I", "i", "L", "l", "1"} {
		text := strings.Replace(one.Reveal(), "1", alias, 1)
		if got, err := ParseKey(text); err != nil || !got.Equal(one) {
			t.Fatalf("ParseKey with %s for 1 = %v, %v", alias, got.Reveal(), err)
		}
	}
}

// withSymbol returns a copy of k with symbol i set to v.
func withSymbol(k Key, i int, v byte) Key {
	sym := *k.sym
	sym[i] = v
	return Key{sym: &sym}
}

func TestParseKeyErrors(t *testing.T) {
	good := testKeys(t, 1)[0].Reveal()
	bad := []byte(good)
	bad[0] = map[bool]byte{true: '1', false: '0'}[bad[0] == '0']
	for _, tc := range []struct {
		name, in string
		want     error
		msg      string
	}{
		{"empty", "", ErrKeyFormat, "it has 0 symbols, want 25"},
		{"separators only", " - - ", ErrKeyFormat, "it has 0 symbols"},
		{"short", good[:28], ErrKeyFormat, "it has 24 symbols, want 25"},
		{"long", good + "A", ErrKeyFormat, "more than 25 symbols"},
		{"way too long", strings.Repeat("A", 200), ErrKeyFormat, "200 bytes long"},
		{"U", "U" + good[1:], ErrKeyFormat, "symbol 1 is U"},
		{"punctuation", good[:6] + "*" + good[7:], ErrKeyFormat, "symbol 6 is not"},
		{"non-ASCII", good[:6] + "é" + good[8:], ErrKeyFormat, "symbol 6 is not"},
		{"checksum", string(bad), ErrKeyChecksum, "mistyped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseKey(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseKey = %v, %v; want %v", k.Reveal(), err, tc.want)
			}
			if !k.IsZero() {
				t.Fatalf("ParseKey returned a key with the error")
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not say %q", err, tc.msg)
			}
			for _, g := range strings.Split(good, "-") {
				if strings.Contains(err.Error(), g) {
					t.Fatalf("error %q quotes the input", err)
				}
			}
		})
	}
}

// The check symbol catches every single-symbol substitution, at every
// position including the check symbol itself: all 25 × 31 of them.
func TestCheckSymbolCatchesEverySubstitution(t *testing.T) {
	for _, k := range testKeys(t, 20) {
		for i := range keyLen {
			for v := range byte(32) {
				if v == k.sym[i] {
					continue
				}
				typo := withSymbol(k, i, v)
				if _, err := ParseKey(typo.Reveal()); !errors.Is(err, ErrKeyChecksum) {
					t.Fatalf("key %s with symbol %d changed to %c: ParseKey error %v, want ErrKeyChecksum",
						k.Reveal(), i+1, crockford[v], err)
				}
			}
		}
	}
}

// The check symbol catches every swap of two different symbols, adjacent
// (the common typo) or not.
func TestCheckSymbolCatchesEveryTransposition(t *testing.T) {
	adjacent := 0
	for _, k := range testKeys(t, 20) {
		for i := range keyLen {
			for j := i + 1; j < keyLen; j++ {
				if k.sym[i] == k.sym[j] {
					continue
				}
				if j == i+1 {
					adjacent++
				}
				swapped := withSymbol(withSymbol(k, i, k.sym[j]), j, k.sym[i])
				if _, err := ParseKey(swapped.Reveal()); !errors.Is(err, ErrKeyChecksum) {
					t.Fatalf("key %s with symbols %d and %d swapped: ParseKey error %v, want ErrKeyChecksum",
						k.Reveal(), i+1, j+1, err)
				}
			}
		}
	}
	if adjacent < 20*20 {
		t.Fatalf("only %d adjacent transpositions tried", adjacent)
	}
}

// The argument of checkSymbol's comment, checked: the weights α^(24-i) are
// 25 distinct non-zero elements, and mulAlpha generates all 31.
func TestCheckSymbolWeights(t *testing.T) {
	seen := map[byte]bool{}
	w := byte(1)
	for range 31 {
		if w == 0 || w >= 32 || seen[w] {
			t.Fatalf("α is not a generator of GF(32)*: repeated or zero power %d", w)
		}
		seen[w] = true
		w = mulAlpha(w)
	}
	if w != 1 {
		t.Fatalf("α^31 = %d, want 1", w)
	}
}

func TestKeyID(t *testing.T) {
	keys := testKeys(t, 30)
	ids := map[string]bool{}
	for _, k := range keys {
		id := k.ID()
		if len(id) != keyIDLen || ids[id] {
			t.Fatalf("ID() = %q: not %d symbols or not unique", id, keyIDLen)
		}
		ids[id] = true
		if got, err := ParseKeyID(strings.ToLower(id)); err != nil || got != id {
			t.Fatalf("ParseKeyID(lower %q) = %q, %v", id, got, err)
		}
		if strings.Contains(k.Reveal(), id) || strings.Contains(strings.ReplaceAll(k.Reveal(), "-", ""), id) {
			t.Fatalf("ID %q is part of the key", id)
		}
		h := k.Hash()
		if bytes.Contains(h[:], []byte(id)) || h == [32]byte{} {
			t.Fatalf("Hash() = %x", h)
		}
	}
	for _, bad := range []string{"", "ABC", "7KQ2M9XAB3X", "7KQ2M9XAB!", "7KQ2M9XABU"} {
		if _, err := ParseKeyID(bad); err == nil {
			t.Errorf("ParseKeyID(%q) accepted", bad)
		}
	}
}

func TestZeroKey(t *testing.T) {
	var k Key
	if !k.IsZero() || k.Reveal() != "" || k.ID() != "" || k.String() != "key:none" || !k.Equal(Key{}) {
		t.Fatalf("zero Key: IsZero %v Reveal %q ID %q String %q", k.IsZero(), k.Reveal(), k.ID(), k.String())
	}
	if k.Equal(testKeys(t, 1)[0]) || testKeys(t, 1)[0].Equal(k) {
		t.Fatal("the zero Key equals a key")
	}
}

// No printed form of a key shows it: fmt's verbs, slog, JSON, and a struct
// holding it in an exported or unexported field.
func TestKeyIsRedacted(t *testing.T) {
	k := testKeys(t, 1)[0]
	type holder struct {
		Key    Key
		hidden Key
		Ptr    *Key
	}
	h := holder{Key: k, hidden: k, Ptr: &k}
	var printed []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%p", "%T"} {
		printed = append(printed, fmt.Sprintf(verb, k), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h))
	}
	printed = append(printed, fmt.Sprint(k), fmt.Sprintln(k, h), k.String(), k.GoString())
	var logs bytes.Buffer
	for _, hd := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		slog.New(hd).Info("activate", "key", k, "holder", h, slog.Any("ptr", &k))
	}
	printed = append(printed, logs.String())
	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	printed = append(printed, string(j))
	secret := []string{k.Reveal(), strings.ReplaceAll(k.Reveal(), "-", ""), strings.ToLower(k.Reveal())}
	for _, p := range printed {
		for _, s := range secret {
			if strings.Contains(p, s) {
				t.Fatalf("printed form %q contains the key", p)
			}
		}
	}
	if got, want := fmt.Sprint(k), "key:"+k.ID(); got != want {
		t.Errorf("fmt.Sprint(key) = %q, want %q", got, want)
	}
	if !strings.Contains(logs.String(), "key="+k.ID()) || !strings.Contains(logs.String(), `"key":"`+k.ID()+`"`) {
		t.Errorf("slog does not log the key ID: %s", logs.String())
	}
}
