// Package catalog is the appliance's metadata store: a single bbolt file
// holding protected agents, their backup settings, their recovery points,
// the job history and an append-only audit log.
//
// All reads and writes go through [Catalog.View] and [Catalog.Update], which
// run a function against a [Tx] with typed accessors; everything written in
// one Update commits atomically or not at all, including when the process is
// killed mid-write. The file carries a schema version, and [Open] brings an
// older file up to date by running the pending [Migration]s in one
// transaction.
//
// Records are stored as JSON under keys chosen so that iteration is
// meaningful: recovery points are listed oldest first, jobs and audit
// events in the order they were created.
package catalog
