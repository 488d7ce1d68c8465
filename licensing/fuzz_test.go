package licensing

import (
	"errors"
	"strings"
	"testing"
)

func FuzzParseKey(f *testing.F) {
	good, err := newKeyFrom(strings.NewReader("0123456789abcde"))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		good.Reveal(), strings.ToLower(good.Reveal()), strings.ReplaceAll(good.Reveal(), "-", ""),
		"00000-00000-00000-00000-00000", "OOOOO-ooooo-IIIII-lllll-LLLLL", "", "-", "U", "ABCDE-FGHJK",
		good.Reveal() + "0", good.Reveal()[1:], " \t" + good.Reveal() + "\r\n", "é" + good.Reveal(),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			if !errors.Is(err, ErrKeyFormat) && !errors.Is(err, ErrKeyChecksum) {
				t.Fatalf("ParseKey(%q) error %q is neither ErrKeyFormat nor ErrKeyChecksum", s, err)
			}
			// The messages are words separated by spaces, none longer than
			// 10 bytes: a longer input without spaces in the message is
			// quoted input.
			if len(s) >= 12 && !strings.ContainsAny(s, " ") && strings.Contains(err.Error(), s) {
				t.Fatalf("ParseKey(%q) error %q quotes the input", s, err)
			}
			if !k.IsZero() {
				t.Fatalf("ParseKey(%q) returned a key and an error", s)
			}
			return
		}
		// Accepted: the input is the key in Crockford's reading, with
		// separators.
		norm := strings.NewReplacer("-", "", " ", "", "\t", "", "\n", "", "\r", "",
			"I", "1", "L", "1", "O", "0").Replace(strings.ToUpper(s))
		if canon := strings.ReplaceAll(k.Reveal(), "-", ""); canon != norm {
			t.Fatalf("ParseKey(%q) = %q, want %q", s, k.Reveal(), norm)
		}
		again, err := ParseKey(k.Reveal())
		if err != nil || !again.Equal(k) || again.ID() != k.ID() {
			t.Fatalf("ParseKey(Reveal()) of %q = %v, %v", s, again.Reveal(), err)
		}
		if strings.Contains(k.String(), k.Reveal()) {
			t.Fatalf("String() %q shows the key", k.String())
		}
	})
}
