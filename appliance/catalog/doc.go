// Package catalog is the appliance's metadata store: a single bbolt file
// holding protected agents, their backup settings, their recovery points,
// the job history, an append-only audit log and the credentials of
// reverse-mode agents.
//
// All reads and writes go through [Catalog.View] and [Catalog.Update], which
// run a function against a [Tx] with typed accessors; everything written in
// one Update commits atomically or not at all, including when the process is
// killed mid-write. The file carries a schema version, and [Open] brings an
// older file up to date by running the pending [Migration]s in one
// transaction.
//
// Records are stored as JSON under keys chosen so that iteration is
// meaningful: recovery points are listed oldest first, jobs, audit events
// and agent tokens in the order they were created. The top-level buckets
// are:
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
//
// Schema versions: 1 created the buckets up to audit; 2 ("tokens") added
// agent_tokens and setup_tokens. Token records hold only the SHA-256 of a
// secret, never the secret itself.
package catalog
