package licensing

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// testSigner returns a deterministic signing key; seed varies it.
func testSigner(t *testing.T, seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testActivation() Activation {
	return Activation{
		KeyID: "7KQ2M9XAB3", AgentFingerprint: "SHA256:abcDEF0123+/xyz", ApplianceID: "appliance-1",
		Hostname: "fileserver.example.com", Edition: "std",
		Issued: t0.Add(500 * time.Millisecond), Expires: t0.Add(30 * 24 * time.Hour), Serial: "SERIAL0000000001",
	}
}

func TestSignVerify(t *testing.T) {
	pub, priv := testSigner(t, 1)
	a := testActivation()
	s, err := Sign(priv, a)
	if err != nil {
		t.Fatal(err)
	}
	if s.SignerID != SignerID(pub) || len(s.SignerID) != 16 {
		t.Fatalf("SignerID = %q, want %q", s.SignerID, SignerID(pub))
	}
	got, err := Verify(pub, s, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := a
	want.Issued = t0 // whole seconds
	if got != want {
		t.Fatalf("Verify = %+v, want %+v", got, want)
	}
	// A Signed survives JSON, as the appliance stores it.
	j, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Signed
	if err := json.Unmarshal(j, &back); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(pub, back, t0); err != nil {
		t.Fatalf("Verify after JSON: %v", err)
	}
}

// The canonical payload is fixed: field order, names, Unix seconds. A change
// here breaks every stored activation.
func TestPayloadEncoding(t *testing.T) {
	_, priv := testSigner(t, 1)
	s, err := Sign(priv, testActivation())
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"v":1,"serial":"SERIAL0000000001","key_id":"7KQ2M9XAB3","agent_fingerprint":"SHA256:abcDEF0123+/xyz",` +
		`"appliance_id":"appliance-1","hostname":"fileserver.example.com","edition":"std","issued":1772366400,"expires":1774958400}`
	if string(s.Payload) != want {
		t.Fatalf("payload\n%s\nwant\n%s", s.Payload, want)
	}
	if !ed25519.Verify(priv.Public().(ed25519.PublicKey), append([]byte("cairn activation v1\x00"), s.Payload...), s.Signature) {
		t.Fatal("the signature is not over the domain prefix and the payload")
	}
}

func TestVerifyExpiry(t *testing.T) {
	pub, priv := testSigner(t, 1)
	a := testActivation()
	s, err := Sign(priv, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(pub, s, a.Expires.Add(-time.Second)); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	for _, now := range []time.Time{a.Expires, a.Expires.Add(time.Nanosecond), a.Expires.AddDate(1, 0, 0)} {
		got, err := Verify(pub, s, now)
		if !errors.Is(err, ErrExpired) || errors.Is(err, ErrInvalidActivation) {
			t.Fatalf("Verify at %s: %v, want ErrExpired", now, err)
		}
		if got.Serial != a.Serial || !got.Expires.Equal(a.Expires) {
			t.Fatalf("Verify of an expired activation returned %+v, want the activation", got)
		}
	}
}

// signRaw signs any payload as the service would, to test what Verify does
// with well-signed garbage.
func signRaw(priv ed25519.PrivateKey, payload string) Signed {
	return Signed{
		Payload:   []byte(payload),
		Signature: ed25519.Sign(priv, signedMessage([]byte(payload))),
		SignerID:  SignerID(priv.Public().(ed25519.PublicKey)),
	}
}

func TestVerifyRejects(t *testing.T) {
	pub, priv := testSigner(t, 1)
	otherPub, otherPriv := testSigner(t, 2)
	good, err := Sign(priv, testActivation())
	if err != nil {
		t.Fatal(err)
	}
	byOther, err := Sign(otherPriv, testActivation())
	if err != nil {
		t.Fatal(err)
	}
	goodPayload := string(good.Payload)
	edit := func(f func(s *Signed)) Signed {
		s := Signed{Payload: bytes.Clone(good.Payload), Signature: bytes.Clone(good.Signature), SignerID: good.SignerID}
		f(&s)
		return s
	}
	for _, tc := range []struct {
		name string
		pub  ed25519.PublicKey
		s    Signed
	}{
		{"payload changed", pub, edit(func(s *Signed) { s.Payload = bytes.Replace(s.Payload, []byte("appliance-1"), []byte("appliance-2"), 1) })},
		{"signature changed", pub, edit(func(s *Signed) { s.Signature[10] ^= 1 })},
		{"signature short", pub, edit(func(s *Signed) { s.Signature = s.Signature[:63] })},
		{"no signature", pub, edit(func(s *Signed) { s.Signature = nil })},
		{"signer ID changed", pub, edit(func(s *Signed) { s.SignerID = SignerID(otherPub) })},
		{"signed by another key", pub, byOther},
		{"another key's ID claimed", pub, Signed{Payload: byOther.Payload, Signature: byOther.Signature, SignerID: good.SignerID}},
		{"verified with another key", otherPub, good},
		{"no verifying key", nil, good},
		{"empty", pub, Signed{}},
		{"no domain prefix", pub, edit(func(s *Signed) { s.Signature = ed25519.Sign(priv, s.Payload) })},
		{"unknown field", pub, signRaw(priv, strings.Replace(goodPayload, `"v":1,`, `"v":1,"seats":99,`, 1))},
		{"trailing data", pub, signRaw(priv, goodPayload+`{}`)},
		{"version 2", pub, signRaw(priv, strings.Replace(goodPayload, `"v":1`, `"v":2`, 1))},
		{"not JSON", pub, signRaw(priv, "activation")},
		{"bad key ID", pub, signRaw(priv, strings.Replace(goodPayload, "7KQ2M9XAB3", "7kq2m9xab3", 1))},
		{"no agent", pub, signRaw(priv, strings.Replace(goodPayload, `"SHA256:abcDEF0123+/xyz"`, `""`, 1))},
		{"agent with space", pub, signRaw(priv, strings.Replace(goodPayload, `SHA256:abcDEF0123`, `SHA256 abcDEF0123`, 1))},
		{"expires before issued", pub, signRaw(priv, strings.Replace(goodPayload, `"expires":1774958400`, `"expires":1772366399`, 1))},
		{"huge payload", pub, signRaw(priv, goodPayload+strings.Repeat(" ", maxPayloadLen))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.pub, tc.s, t0)
			if !errors.Is(err, ErrInvalidActivation) {
				t.Fatalf("Verify = %v, want ErrInvalidActivation", err)
			}
		})
	}
}

func TestSignRefusesMalformed(t *testing.T) {
	_, priv := testSigner(t, 1)
	for name, f := range map[string]func(a *Activation){
		"no key ID":         func(a *Activation) { a.KeyID = "" },
		"no appliance":      func(a *Activation) { a.ApplianceID = "" },
		"no serial":         func(a *Activation) { a.Serial = "" },
		"no edition":        func(a *Activation) { a.Edition = "" },
		"long agent":        func(a *Activation) { a.AgentFingerprint = strings.Repeat("a", MaxIDLen+1) },
		"control hostname":  func(a *Activation) { a.Hostname = "host\nname" },
		"expires at issued": func(a *Activation) { a.Expires = a.Issued },
		"no times":          func(a *Activation) { a.Issued, a.Expires = time.Time{}, time.Time{} },
	} {
		a := testActivation()
		f(&a)
		if _, err := Sign(priv, a); err == nil {
			t.Errorf("%s: Sign accepted %+v", name, a)
		}
	}
	if _, err := Sign(priv[:10], testActivation()); err == nil {
		t.Error("Sign accepted a short private key")
	}
}

func TestPublicKeyText(t *testing.T) {
	pub, _ := testSigner(t, 7)
	s := FormatPublicKey(pub)
	if !strings.HasPrefix(s, "ed25519:") || len(s) != len("ed25519:")+44 {
		t.Fatalf("FormatPublicKey = %q", s)
	}
	got, err := ParsePublicKey(" " + s + "\n")
	if err != nil || !got.Equal(pub) {
		t.Fatalf("ParsePublicKey(FormatPublicKey) = %x, %v", got, err)
	}
	for _, bad := range []string{"", "ed25519:", strings.TrimPrefix(s, "ed25519:"), "ssh-ed25519:" + s[8:], s[:len(s)-4], s + "AAAA", "ed25519:!!!!"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", bad)
		}
	}
}
