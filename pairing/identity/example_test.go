package identity_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"

	"github.com/cairnbackup/cairn/pairing/identity"
)

// The two forms of a Fingerprint: String for files, logs and the API; Short
// for people comparing keys on the wizard and on the agent's console.
func ExampleFingerprint() {
	seed, _ := hex.DecodeString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	key := ed25519.NewKeyFromSeed(seed) // RFC 8032, 7.1, test 1
	fp, err := identity.FingerprintOf(key.Public())
	if err != nil {
		panic(err)
	}
	fmt.Println(fp)
	fmt.Println(fp.Short())
	// Output:
	// SHA256:BuP9j9opu2CrWVV95h7bCuzbIxE0vjDnW0Vfjht5L6k
	// A3R7-3D62-FG5W-BK2Z
}
