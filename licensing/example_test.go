package licensing_test

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/cairnbackup/cairn/licensing"
)

// A product key is read the way people type it; printing it shows its ID
// only.
func ExampleParseKey() {
	k, err := licensing.ParseKey("cdgpj wke5n j6avb f5nnp ay9i6")
	if err != nil {
		panic(err)
	}
	fmt.Println(k.Reveal())
	fmt.Println(k.ID())
	fmt.Println(k)
	fmt.Printf("%#v\n", k)
	// Output:
	// CDGPJ-WKE5N-J6AVB-F5NNP-AY916
	// 2AVK2HHS1F
	// key:2AVK2HHS1F
	// licensing.Key{ID:"2AVK2HHS1F"}
}

// Two swapped symbols are caught before any network call.
func ExampleParseKey_typo() {
	_, err := licensing.ParseKey("CDGPJ-WEK5N-J6AVB-F5NNP-AY916")
	fmt.Println(errors.Is(err, licensing.ErrKeyChecksum))
	fmt.Println(err)
	// Output:
	// true
	// licensing: product key check symbol does not match: a symbol is mistyped or two are swapped
}

// The service signs an activation; the appliance verifies it offline with
// the vendor's public key, which it is configured with in text form.
func ExampleVerify() {
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)) // the service's key
	issued := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	signed, err := licensing.Sign(priv, licensing.Activation{
		KeyID: "2AVK2HHS1F", AgentFingerprint: "SHA256:agent", ApplianceID: "appliance-1", Edition: "std",
		Issued: issued, Expires: issued.AddDate(0, 0, 30), Serial: "0000000000000001",
	})
	if err != nil {
		panic(err)
	}

	text := licensing.FormatPublicKey(priv.Public().(ed25519.PublicKey))
	fmt.Println(text)
	pub, err := licensing.ParsePublicKey(text)
	if err != nil {
		panic(err)
	}
	a, err := licensing.Verify(pub, signed, issued.AddDate(0, 0, 1))
	fmt.Println(a.KeyID, a.Edition, a.Expires.Format(time.DateOnly), err)
	_, err = licensing.Verify(pub, signed, issued.AddDate(0, 0, 31))
	fmt.Println(errors.Is(err, licensing.ErrExpired))
	// Output:
	// ed25519:O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=
	// 2AVK2HHS1F std 2026-03-31 <nil>
	// true
}
