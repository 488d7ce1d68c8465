package identity

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// rfc8032Key is the key of RFC 8032, section 7.1, test 1.
func rfc8032Key(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	seed, err := hex.DecodeString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	if err != nil {
		t.Fatal(err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if got, want := hex.EncodeToString(priv.Public().(ed25519.PublicKey)),
		"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"; got != want {
		t.Fatalf("RFC 8032 public key = %s, want %s", got, want)
	}
	return priv
}

// The golden values were computed independently of this package:
// SHA-256 of the DER 302a300506032b6570032100 || public key (openssl, python).
const (
	goldenString = "SHA256:BuP9j9opu2CrWVV95h7bCuzbIxE0vjDnW0Vfjht5L6k"
	goldenShort  = "A3R7-3D62-FG5W-BK2Z"
)

func TestFingerprintGolden(t *testing.T) {
	fp, err := FingerprintOf(rfc8032Key(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	if got := fp.String(); got != goldenString {
		t.Errorf("String() = %q, want %q", got, goldenString)
	}
	if got := fp.Short(); got != goldenShort {
		t.Errorf("Short() = %q, want %q", got, goldenShort)
	}
	if got, want := hex.EncodeToString(fp[:]), "06e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa9"; got != want {
		t.Errorf("bytes = %s, want %s", got, want)
	}
}

func TestFingerprintOfUnsupported(t *testing.T) {
	if _, err := FingerprintOf("not a key"); err == nil {
		t.Error("FingerprintOf(string) succeeded")
	}
	if _, err := FingerprintOf(nil); err == nil {
		t.Error("FingerprintOf(nil) succeeded")
	}
}

func randomFingerprints(t *testing.T, n int) []Fingerprint {
	t.Helper()
	fps := make([]Fingerprint, n)
	for i := range fps {
		pub, _, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		if fps[i], err = FingerprintOf(pub); err != nil {
			t.Fatal(err)
		}
	}
	return fps
}

func TestFingerprintRoundTrip(t *testing.T) {
	shortRE := regexp.MustCompile(`^[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}$`)
	stringRE := regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)
	fps := append(randomFingerprints(t, 50), Fingerprint{}, Fingerprint{0xff, 0xff, 0xff, 0xff})
	seenShort := map[string]bool{}
	for _, fp := range fps {
		s := fp.String()
		if !stringRE.MatchString(s) {
			t.Errorf("String() = %q, not of the form SHA256:<43 base64>", s)
		}
		got, err := ParseFingerprint(s)
		if err != nil {
			t.Errorf("ParseFingerprint(%q): %v", s, err)
		} else if got != fp {
			t.Errorf("ParseFingerprint(%q) = %x, want %x", s, got, fp)
		}

		text, err := fp.MarshalText()
		if err != nil || string(text) != s {
			t.Errorf("MarshalText() = %q, %v; want %q", text, err, s)
		}
		var u Fingerprint
		if err := u.UnmarshalText(text); err != nil || u != fp {
			t.Errorf("UnmarshalText(%q) = %x, %v; want %x", text, u, err, fp)
		}

		short := fp.Short()
		if !shortRE.MatchString(short) {
			t.Errorf("Short() = %q, not four groups of four base32 characters", short)
		}
		if seenShort[short] {
			t.Errorf("Short() = %q for two different fingerprints", short)
		}
		seenShort[short] = true
	}
}

func TestFingerprintJSON(t *testing.T) {
	fp := randomFingerprints(t, 1)[0]
	type state struct {
		Peer Fingerprint `json:"peer"`
	}
	b, err := json.Marshal(state{Peer: fp})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"peer":"` + fp.String() + `"}`; string(b) != want {
		t.Errorf("json.Marshal = %s, want %s", b, want)
	}
	var got state
	if err := json.Unmarshal(b, &got); err != nil || got.Peer != fp {
		t.Errorf("json.Unmarshal = %x, %v; want %x", got.Peer, err, fp)
	}
	if err := json.Unmarshal([]byte(`{"peer":"SHA256:nope"}`), &got); err == nil {
		t.Error("json.Unmarshal of a bad fingerprint succeeded")
	}
}

func TestParseFingerprintRejects(t *testing.T) {
	body := strings.TrimPrefix(goldenString, "SHA256:")
	if _, err := ParseFingerprint(goldenString); err != nil {
		t.Fatalf("golden: %v", err)
	}
	for _, s := range []string{
		"",
		"SHA256:",
		body,                                     // no prefix
		"sha256:" + body,                         // prefix case
		"SHA-256:" + body,                        // other prefix
		"MD5:" + body,                            // other prefix
		" " + goldenString,                       // leading space
		goldenString + " ",                       // trailing space
		goldenString + "\n",                      // trailing newline
		goldenString + "=",                       // padding
		goldenString[:len(goldenString)-1],       // one short
		goldenString + "A",                       // one long
		goldenString[:len(goldenString)-1] + "l", // non-zero unused bits: not canonical
		"SHA256:" + strings.Repeat("-", 43),      // URL alphabet
		"SHA256:" + strings.Repeat("_", 43),      // URL alphabet
		"SHA256:" + strings.Repeat("A", 42) + "=",                                 // padding inside
		"SHA256:06e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa9", // hex
		goldenShort, // the short form is not a fingerprint
	} {
		if fp, err := ParseFingerprint(s); err == nil {
			t.Errorf("ParseFingerprint(%q) = %s, want an error", s, fp)
		}
	}
}

func TestFingerprintIsZeroEqual(t *testing.T) {
	var zero Fingerprint
	if !zero.IsZero() {
		t.Error("zero Fingerprint: IsZero() = false")
	}
	fps := randomFingerprints(t, 2)
	if fps[0].IsZero() {
		t.Error("real fingerprint: IsZero() = true")
	}
	if !fps[0].Equal(fps[0]) || fps[0].Equal(fps[1]) || fps[0].Equal(zero) {
		t.Error("Equal is wrong")
	}
	one := Fingerprint{31: 1}
	if one.IsZero() {
		t.Error("Fingerprint with last byte 1: IsZero() = true")
	}
}

func FuzzParseFingerprint(f *testing.F) {
	f.Add(goldenString)
	f.Add("SHA256:")
	f.Add("")
	f.Add(goldenString[:len(goldenString)-1] + "l")
	f.Fuzz(func(t *testing.T, s string) {
		fp, err := ParseFingerprint(s)
		if err != nil {
			return
		}
		if got := fp.String(); got != s {
			t.Errorf("ParseFingerprint(%q) accepted, but String() = %q", s, got)
		}
	})
}
