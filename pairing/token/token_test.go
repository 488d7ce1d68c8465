package token

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// secret is a valid secret that must never appear where it is not revealed.
const secret = "Zq8rT3vLw0pXk2NcYh7sGm4bFd9jUa1eRt5oPi6yQxWz" // 44 characters

var base62RE = regexp.MustCompile(`^[0-9A-Za-z]+$`)

func TestNewAgentToken(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		tok, err := NewAgentToken(42)
		if err != nil {
			t.Fatal(err)
		}
		if tok.ID != 42 {
			t.Errorf("ID = %d, want 42", tok.ID)
		}
		if len(tok.Secret) != 48 || !base62RE.MatchString(tok.Secret) {
			t.Errorf("secret %q is not 48 characters of base62", tok.Secret)
		}
		if seen[tok.Secret] {
			t.Errorf("secret %q made twice", tok.Secret)
		}
		seen[tok.Secret] = true
		back, err := ParseAgentToken(tok.Reveal())
		if err != nil || back != tok {
			t.Errorf("ParseAgentToken(Reveal()) = %#v, %v; want the token", back, err)
		}
	}
	for _, id := range []uint64{0, math.MaxInt64 + 1, math.MaxUint64} {
		if _, err := NewAgentToken(id); err == nil {
			t.Errorf("NewAgentToken(%d) succeeded", id)
		}
	}
	if _, err := NewAgentToken(math.MaxInt64); err != nil {
		t.Errorf("NewAgentToken(2^63-1): %v", err)
	}
}

func TestNewSetupToken(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		tok, err := NewSetupToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok.ID) != 12 || !base62RE.MatchString(tok.ID) {
			t.Errorf("id %q is not 12 characters of base62", tok.ID)
		}
		if len(tok.Secret) != 40 || !base62RE.MatchString(tok.Secret) {
			t.Errorf("secret %q is not 40 characters of base62", tok.Secret)
		}
		if seen[tok.ID] || seen[tok.Secret] {
			t.Errorf("id or secret of %q made twice", tok.Reveal())
		}
		seen[tok.ID], seen[tok.Secret] = true, true
		text := tok.Reveal()
		if !regexp.MustCompile(`^cairn-setup-[0-9A-Za-z]{12}-[0-9A-Za-z]{40}$`).MatchString(text) {
			t.Errorf("Reveal() = %q, not cairn-setup-<12>-<40>", text)
		}
		back, err := ParseSetupToken(text)
		if err != nil || back != tok {
			t.Errorf("ParseSetupToken(Reveal()) = %#v, %v; want the token", back, err)
		}
	}
}

// countingReader returns 0, 1, 2, ..., 255, 0, 1, ...
type countingReader struct{ next byte }

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.next
		r.next++
	}
	return len(p), nil
}

// randomBase62 maps a byte b < 248 to base62[b%62] and skips the others, so
// each character comes from exactly 4 of the 248 byte values used.
func TestRandomBase62Mapping(t *testing.T) {
	got, err := randomBase62(&countingReader{}, 2*248)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for range 2 {
		for b := range 248 {
			want.WriteByte(base62[b%62])
		}
	}
	if got != want.String() {
		t.Errorf("randomBase62 over 0..255 twice =\n%s\nwant\n%s", got, want.String())
	}
	counts := map[rune]int{}
	for _, c := range got {
		counts[c]++
	}
	for _, c := range base62 {
		if counts[c] != 8 {
			t.Errorf("character %c made %d times from 2*256 byte values, want 8", c, counts[c])
		}
	}
}

func TestRandomBase62ReadError(t *testing.T) {
	if _, err := randomBase62(bytes.NewReader(make([]byte, 10)), 48); err == nil {
		t.Error("randomBase62 of a short reader succeeded")
	}
}

// The characters of real secrets are uniform: a chi-squared test that a
// modulo bias (the first 8 characters 25% more likely) fails by far, and
// that uniform output fails with a probability far below 1e-9.
func TestSecretsUniform(t *testing.T) {
	counts := map[byte]int{}
	total := 0
	for range 2000 {
		tok, err := NewAgentToken(1)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(tok.Secret); i++ {
			counts[tok.Secret[i]]++
			total++
		}
	}
	expected := float64(total) / 62
	chi2 := 0.0
	for i := 0; i < len(base62); i++ {
		d := float64(counts[base62[i]]) - expected
		chi2 += d * d / expected
	}
	// 61 degrees of freedom: P(chi2 > 160) < 1e-9. The bias above gives ~900.
	if chi2 > 160 {
		t.Errorf("chi-squared of secret characters = %.1f over %d characters, want < 160: not uniform", chi2, total)
	}
}

func TestParseAgentToken(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want AgentToken
	}{
		{"1|" + secret, AgentToken{1, secret}},
		{"9223372036854775807|" + secret, AgentToken{math.MaxInt64, secret}},
		{"  42|" + secret + "\n", AgentToken{42, secret}},
		{"\t42|" + secret + "\r\n", AgentToken{42, secret}},
		{"7|" + secret[:MinSecretLen], AgentToken{7, secret[:MinSecretLen]}},
		{"7|" + strings.Repeat("a", MaxSecretLen), AgentToken{7, strings.Repeat("a", MaxSecretLen)}},
	} {
		got, err := ParseAgentToken(tc.in)
		if err != nil {
			t.Errorf("ParseAgentToken(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseAgentToken(%q) = %s/%s, want %s", tc.in, got, got.Secret, tc.want)
		}
		if got.Reveal() != strings.TrimSpace(tc.in) {
			t.Errorf("Reveal() = %q, want %q", got.Reveal(), strings.TrimSpace(tc.in))
		}
	}
}

// checkMalformed checks a parse error: it wraps ErrMalformed, says want, and
// quotes neither the input nor the secret.
func checkMalformed(t *testing.T, in string, err error, want, secret string) {
	t.Helper()
	if err == nil {
		t.Errorf("parse of %q succeeded", in)
		return
	}
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("error %q is not ErrMalformed", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	msg := err.Error()
	if secret != "" && strings.Contains(msg, secret) {
		t.Errorf("error %q contains the secret", msg)
	}
	if trimmed := strings.TrimSpace(in); len(trimmed) >= 8 && strings.Contains(msg, trimmed) {
		t.Errorf("error %q contains the input", msg)
	}
}

func TestParseAgentTokenRejects(t *testing.T) {
	short := secret[:12]
	for _, tc := range []struct {
		name, in, want, secret string
	}{
		{"empty", "", "is empty", ""},
		{"white space", " \n\t", "is empty", ""},
		{"no bar", "7" + secret, "no '|'", secret},
		{"secret only", secret, "no '|'", secret},
		{"two bars", "7|" + secret + "|x", "2 '|'", secret},
		{"two bars in a row", "7||" + secret, "2 '|'", secret},
		{"bar only", "|", "id is empty", ""},
		{"no id", "|" + secret, "id is empty", secret},
		{"no secret", "7|", "secret is empty", ""},
		{"id 0", "0|" + secret, "id is 0", secret},
		{"leading zero", "07|" + secret, "leading zero", secret},
		{"zeros", "00|" + secret, "leading zero", secret},
		{"negative", "-7|" + secret, "negative", secret},
		{"plus", "+7|" + secret, "sign", secret},
		{"hex id", "0x7|" + secret, "not a decimal digit at byte 2", secret},
		{"space in id", "7 |" + secret, "not a decimal digit at byte 2", secret},
		{"unicode digit", "٧|" + secret, "not a decimal digit at byte 1", secret},
		{"2^63", "9223372036854775808|" + secret, "larger than 2^63-1", secret},
		{"2^64", "18446744073709551616|" + secret, "larger than 2^63-1", secret},
		{"huge id", strings.Repeat("9", 40) + "|" + secret, "larger than 2^63-1", secret},
		{"secret in id", secret + "|" + secret, "not a decimal digit", secret},
		{"short secret", "7|" + short, "secret is 12 characters, want at least 40", short},
		{"39 characters", "7|" + secret[:39], "secret is 39 characters, want at least 40", secret[:39]},
		{"long secret", "7|" + strings.Repeat(secret, 6), "secret is 264 characters, want at most 256", secret},
		{"bad character", "7|" + secret + "!", "not [0-9A-Za-z] at byte 45", secret},
		{"dash", "7|" + secret[:20] + "-" + secret[20:], "not [0-9A-Za-z] at byte 21", secret[20:]},
		{"inner space", "7|" + secret[:20] + " " + secret[20:], "not [0-9A-Za-z] at byte 21", secret[20:]},
		{"non-ASCII", "7|" + secret + "é", "not [0-9A-Za-z] at byte 45", secret},
		{"setup token", "cairn-setup-abcdefghijkl-" + secret, "no '|'", secret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := ParseAgentToken(tc.in)
			if err == nil {
				t.Fatalf("ParseAgentToken(%q) = %s, want an error", tc.in, tok)
			}
			checkMalformed(t, tc.in, err, tc.want, tc.secret)
		})
	}
}

func TestParseSetupToken(t *testing.T) {
	id := "AbCdEf012345"
	for _, tc := range []struct {
		in   string
		want SetupToken
	}{
		{"cairn-setup-" + id + "-" + secret[:40], SetupToken{id, secret[:40]}},
		{" cairn-setup-" + id + "-" + secret + "\n", SetupToken{id, secret}},
		{"cairn-setup-" + id + "-" + strings.Repeat("Z", MaxSecretLen), SetupToken{id, strings.Repeat("Z", MaxSecretLen)}},
	} {
		got, err := ParseSetupToken(tc.in)
		if err != nil {
			t.Errorf("ParseSetupToken(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseSetupToken(%q) = %s/%s, want %s", tc.in, got, got.Secret, tc.want)
		}
		if got.Reveal() != strings.TrimSpace(tc.in) {
			t.Errorf("Reveal() = %q, want %q", got.Reveal(), strings.TrimSpace(tc.in))
		}
	}
}

func TestParseSetupTokenRejects(t *testing.T) {
	id := "AbCdEf012345"
	s40 := secret[:40]
	for _, tc := range []struct {
		name, in, want, secret string
	}{
		{"empty", "", "is empty", ""},
		{"no prefix", id + "-" + s40, `does not start with "cairn-setup-"`, s40},
		{"upper-case prefix", "CAIRN-SETUP-" + id + "-" + s40, "does not start with", s40},
		{"secret only", s40, "does not start with", s40},
		{"prefix only", "cairn-setup-", "no '-'", ""},
		{"no dash", "cairn-setup-" + id + s40, "no '-'", s40},
		{"two dashes", "cairn-setup-" + id + "-" + s40 + "-x", "2 '-'", s40},
		{"dash in secret", "cairn-setup-" + id + "-" + s40[:20] + "-" + s40[20:], "2 '-'", s40[20:]},
		{"no id", "cairn-setup--" + s40, "id is 0 characters, want 12", s40},
		{"short id", "cairn-setup-AbCdE-" + s40, "id is 5 characters, want 12", s40},
		{"long id", "cairn-setup-" + id + "X-" + s40, "id is 13 characters, want 12", s40},
		{"bad id character", "cairn-setup-AbCdEf01234_-" + s40, "id has a character that is not [0-9A-Za-z] at byte 12", s40},
		{"no secret", "cairn-setup-" + id + "-", "secret is empty", ""},
		{"short secret", "cairn-setup-" + id + "-" + s40[:39], "secret is 39 characters, want at least 40", s40[:39]},
		{"long secret", "cairn-setup-" + id + "-" + strings.Repeat(s40, 7), "secret is 280 characters, want at most 256", s40},
		{"bad secret character", "cairn-setup-" + id + "-" + s40 + "/", "not [0-9A-Za-z] at byte 41", s40},
		{"agent token", "7|" + secret, "does not start with", secret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := ParseSetupToken(tc.in)
			if err == nil {
				t.Fatalf("ParseSetupToken(%q) = %s, want an error", tc.in, tok)
			}
			checkMalformed(t, tc.in, err, tc.want, tc.secret)
		})
	}
}

// redactedOutputs prints v in every way a program might: fmt with every verb
// (of the value, a pointer, and inside a struct, slice and map), slog with
// the JSON and text handlers, and encoding/json.
func redactedOutputs(t *testing.T, v, ptr any) map[string]string {
	t.Helper()
	out := map[string]string{}
	// Not %p: fmt prints a non-pointer given to %p field by field without
	// calling Format (go vet reports that call). %p of a pointer is below.
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%10.3s", "%-50v", "%U", "%c", "%t"} {
		out[verb] = fmt.Sprintf(verb, v)
		out[verb+" pointer"] = fmt.Sprintf(verb, ptr)
		out[verb+" struct"] = fmt.Sprintf(verb, struct{ Token any }{v})
		out[verb+" slice"] = fmt.Sprintf(verb, []any{v, ptr})
		out[verb+" map"] = fmt.Sprintf(verb, map[string]any{"t": v})
	}
	out["%p pointer"] = fmt.Sprintf("%p", ptr)
	out["Sprint"] = fmt.Sprint(v, ptr)
	out["Sprintln"] = fmt.Sprintln(v, ptr)
	out["error"] = fmt.Errorf("enrol with %v: %w", v, errors.New("refused")).Error()

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("enrol", "token", v, "ptr", ptr, slog.Any("any", v), slog.Group("g", "token", v))
	out["slog JSON"] = buf.String()
	buf.Reset()
	slog.New(slog.NewTextHandler(&buf, nil)).Info("enrol", "token", v, "ptr", ptr)
	out["slog text"] = buf.String()

	for name, x := range map[string]any{"json": v, "json pointer": ptr, "json struct": struct{ T any }{v}} {
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		out[name] = string(b)
	}
	// encoding/json escapes '<' and '>'; "json string" is the decoded value.
	var str string
	if err := json.Unmarshal([]byte(out["json"]), &str); err != nil {
		t.Fatalf("json.Unmarshal of %s: %v", out["json"], err)
	}
	out["json string"] = str
	return out
}

func checkRedacted(t *testing.T, outputs map[string]string, secret string) {
	t.Helper()
	forms := []string{
		secret,
		secret[:16],
		hex.EncodeToString([]byte(secret[:8])),
		strings.ToUpper(hex.EncodeToString([]byte(secret[:8]))),
		strings.Trim(fmt.Sprint([]byte(secret[:4])), "[]"),
	}
	for name, out := range outputs {
		for _, f := range forms {
			if strings.Contains(out, f) {
				t.Errorf("%s: %q contains the secret (as %q)", name, out, f)
			}
		}
	}
}

func TestAgentTokenRedacted(t *testing.T) {
	tok, err := ParseAgentToken("42|" + secret)
	if err != nil {
		t.Fatal(err)
	}
	outputs := redactedOutputs(t, tok, &tok)
	checkRedacted(t, outputs, secret)

	for name, want := range map[string]string{
		"%v":          "42|<redacted>",
		"%s":          "42|<redacted>",
		"%q":          `"42|<redacted>"`,
		"%#v":         `token.AgentToken{ID:42, Secret:"<redacted>"}`,
		"%v struct":   "{42|<redacted>}",
		"json string": "42|<redacted>",
	} {
		if outputs[name] != want {
			t.Errorf("%s = %q, want %q", name, outputs[name], want)
		}
	}
	if want := `"token":{"id":42}`; !strings.Contains(outputs["slog JSON"], want) {
		t.Errorf("slog JSON %q does not contain %q", outputs["slog JSON"], want)
	}
	if tok.String() != "42|<redacted>" {
		t.Errorf("String() = %q", tok.String())
	}
	if tok.Reveal() != "42|"+secret {
		t.Errorf("Reveal() = %q", tok.Reveal())
	}
}

func TestSetupTokenRedacted(t *testing.T) {
	tok, err := ParseSetupToken("cairn-setup-AbCdEf012345-" + secret)
	if err != nil {
		t.Fatal(err)
	}
	outputs := redactedOutputs(t, tok, &tok)
	checkRedacted(t, outputs, secret)

	for name, want := range map[string]string{
		"%v":          "cairn-setup-AbCdEf012345-<redacted>",
		"%q":          `"cairn-setup-AbCdEf012345-<redacted>"`,
		"%#v":         `token.SetupToken{ID:"AbCdEf012345", Secret:"<redacted>"}`,
		"json string": "cairn-setup-AbCdEf012345-<redacted>",
	} {
		if outputs[name] != want {
			t.Errorf("%s = %q, want %q", name, outputs[name], want)
		}
	}
	if want := `"token":{"id":"AbCdEf012345"}`; !strings.Contains(outputs["slog JSON"], want) {
		t.Errorf("slog JSON %q does not contain %q", outputs["slog JSON"], want)
	}
	if tok.Reveal() != "cairn-setup-AbCdEf012345-"+secret {
		t.Errorf("Reveal() = %q", tok.Reveal())
	}
}

// A token cannot be read back from its JSON: there is no UnmarshalJSON, and
// the redacted string is not a token.
func TestNoUnmarshalJSON(t *testing.T) {
	if _, ok := any(&AgentToken{}).(json.Unmarshaler); ok {
		t.Error("*AgentToken implements json.Unmarshaler")
	}
	if _, ok := any(&SetupToken{}).(json.Unmarshaler); ok {
		t.Error("*SetupToken implements json.Unmarshaler")
	}
	if _, err := ParseAgentToken("42|<redacted>"); err == nil {
		t.Error("the redacted form parses as an agent token")
	}
}

func TestHashAndVerify(t *testing.T) {
	tok, err := NewAgentToken(9)
	if err != nil {
		t.Fatal(err)
	}
	hash := tok.Hash()
	if hash != HashSecret(tok.Secret) {
		t.Error("Hash() != HashSecret(Secret)")
	}
	// SHA-256("abc"), FIPS 180-2.
	if got := hex.EncodeToString(func() []byte { h := HashSecret("abc"); return h[:] }()); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf(`HashSecret("abc") = %s`, got)
	}
	if !VerifySecret(hash, tok.Secret) {
		t.Error("VerifySecret of the right secret = false")
	}
	other, err := NewAgentToken(9)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{other.Secret, tok.Secret[:47], tok.Secret + "0", strings.ToUpper(tok.Secret), ""} {
		if s == tok.Secret {
			continue
		}
		if VerifySecret(hash, s) {
			t.Errorf("VerifySecret of a wrong secret %q = true", s)
		}
	}
	if VerifySecret(HashSecret(""), "") {
		t.Error("VerifySecret of an empty secret = true")
	}

	st, err := NewSetupToken()
	if err != nil {
		t.Fatal(err)
	}
	if !VerifySecret(st.Hash(), st.Secret) || VerifySecret(st.Hash(), st.ID) {
		t.Error("VerifySecret with a setup token's Hash is wrong")
	}
}

func TestMalformedMessage(t *testing.T) {
	_, err := ParseAgentToken("7|" + secret[:12])
	if got, want := err.Error(), "token: malformed agent token: secret is 12 characters, want at least "+strconv.Itoa(MinSecretLen); got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}
