// Package catalog is the appliance's metadata store: a single bbolt file
// holding protected agents, their backup settings, their recovery points,
// the job history, an append-only audit log, the credentials of
// reverse-mode agents, pairing runs, license activations and sealed
// secrets.
//
// All reads and writes go through [Catalog.View] and [Catalog.Update], which
// run a function against a [Tx] with typed accessors; everything written in
// one Update commits atomically or not at all, including when the process is
// killed mid-write. The file carries a schema version, and [Open] brings an
// older file up to date by running the pending [Migration]s in one
// transaction.
//
// Records are stored as JSON under keys chosen so that iteration is
// meaningful: recovery points are listed oldest first, jobs, audit events,
// agent tokens and pairings in the order they were created. The top-level
// buckets are:
//
//   - meta: the schema version
//   - agents: [Agent] by ID
//   - settings: [Settings] by agent ID
//   - recovery_points: one nested bucket per agent ID holding its
//     [RecoveryPoint]s by creation time and snapshot name
//   - jobs: [Job] by big-endian ID
//   - audit: [AuditEvent] by big-endian Seq
//   - agent_tokens: [AgentToken] by big-endian ID (since version 2)
//   - setup_tokens: [SetupToken] by ID (since version 2)
//   - pairings: [Pairing] by big-endian ID (since version 3)
//   - activations: [Activation] by agent ID (since version 3)
//   - secrets: sealed secret values by name (since version 3)
//
// Schema versions: 1 created the buckets up to audit; 2 ("tokens") added
// agent_tokens and setup_tokens; 3 ("pairings") added pairings,
// activations and secrets. Token records hold only the SHA-256 of a
// secret, never the secret itself. [Tx.DeleteAgent] also deletes the
// agent's settings, recovery point records, tokens, activation and
// pairings; jobs and audit events stay as history.
//
// # Sealed secrets
//
// Some values must be kept but never in clear in the file, such as a
// product key between a failed License step and its retry. [Tx.PutSecret]
// encrypts them with AES-256-GCM under [Options.SecretKey], a
// [SecretKeySize]-byte key the catalog does not store: the appliance keeps
// it in a 0600 file next to the catalog, so a copy of the catalog file
// alone does not reveal the secrets. Each value gets a fresh random nonce,
// and its name is bound as additional data, so a sealed value moved to
// another name does not open; names are stored in clear. A record also holds a short ID of the key
// (derived from it by HMAC-SHA256, revealing nothing usable), so that
// [Tx.Secret] can tell a wrong key from an altered value; both fail with
// [ErrInvalid] and an error that says which. A catalog opened without a key
// refuses [Tx.PutSecret] and [Tx.Secret] with [ErrNoSecretKey];
// [Tx.DeleteSecret] needs no key. Losing the key loses the secrets, nothing
// else.
package catalog
