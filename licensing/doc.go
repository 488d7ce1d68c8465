// Package licensing holds product keys, signed activations and their offline
// verification: what the appliance and the vendor's activation service
// (subpackage server) share.
//
// A product key (Key) is 25 Crockford base32 symbols, "XXXXX-XXXXX-XXXXX-
// XXXXX-XXXXX": 24 random symbols (120 bits from crypto/rand) and one check
// symbol that catches every single mistyped symbol and every swap of two
// symbols, so that ParseKey rejects a typo before any network call. A key is
// the customer's secret: it leaves this package in clear only through
// Key.Reveal. Logs, URLs, errors and the service's catalog know a key by its
// ID, a short hash that is not secret.
//
// An Activation binds a key to one agent (by its key fingerprint) on one
// appliance, until an expiry. The activation service signs it with its
// Ed25519 key (Sign), the appliance verifies it offline with the vendor's
// public key (Verify), keeps it (Record) and renews it on a schedule;
// Validator says whether an agent is licensed now, including a grace period
// when the service cannot be reached. Client talks to the service's HTTP API.
//
// docs/licensing.md describes the formats and the trust model.
package licensing
