package catalog

import (
	"encoding/binary"
	"fmt"
	"log/slog"

	"go.etcd.io/bbolt"
)

// SchemaVersion is the schema version written by this version of the code:
// the Version of the last built-in migration.
const SchemaVersion uint64 = 4

// Bucket and key names. The layout is part of the on-disk format: change it
// only through a new migration.
var (
	bucketMeta           = []byte("meta")
	bucketAgents         = []byte("agents")
	bucketSettings       = []byte("settings")
	bucketRecoveryPoints = []byte("recovery_points") // one nested bucket per agent
	bucketJobs           = []byte("jobs")
	bucketAudit          = []byte("audit")
	bucketAgentTokens    = []byte("agent_tokens") // since version 2
	bucketSetupTokens    = []byte("setup_tokens") // since version 2
	bucketPairings       = []byte("pairings")     // since version 3
	bucketActivations    = []byte("activations")  // since version 3
	bucketSecrets        = []byte("secrets")      // since version 3
	bucketDirtyImages    = []byte("dirty_images") // since version 4

	keySchemaVersion = []byte("schema_version")
)

// Migration upgrades the file from schema Version-1 to Version. Up runs
// inside the single write transaction that Open uses for all pending
// migrations, so a failure leaves the file as it was.
type Migration struct {
	Version uint64
	Name    string
	Up      func(tx *bbolt.Tx) error
}

// builtinMigrations is the schema history. Append to it; never edit or
// reorder a released entry, and keep SchemaVersion equal to the last
// Version.
var builtinMigrations = []Migration{
	{Version: 1, Name: "create buckets", Up: createBuckets},
	{Version: 2, Name: "tokens", Up: createTokenBuckets},
	{Version: 3, Name: "pairings", Up: createPairingBuckets},
	{Version: 4, Name: "dirty images", Up: createDirtyBucket},
}

func createBuckets(tx *bbolt.Tx) error {
	for _, name := range [][]byte{bucketAgents, bucketSettings, bucketRecoveryPoints, bucketJobs, bucketAudit} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return nil
}

// createTokenBuckets adds the buckets of reverse-mode agent credentials.
func createTokenBuckets(tx *bbolt.Tx) error {
	for _, name := range [][]byte{bucketAgentTokens, bucketSetupTokens} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return nil
}

// createPairingBuckets adds the buckets of pairing runs, license
// activations and sealed secrets.
func createPairingBuckets(tx *bbolt.Tx) error {
	for _, name := range [][]byte{bucketPairings, bucketActivations, bucketSecrets} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return nil
}

// createDirtyBucket adds the bucket of images a backup wrote without
// making a recovery point yet (DirtyImage).
func createDirtyBucket(tx *bbolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(bucketDirtyImages); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketDirtyImages, err)
	}
	return nil
}

// validateMigrations checks that versions start at 1 or more and strictly
// increase, and that every migration has an Up function.
func validateMigrations(ms []Migration) error {
	var prev uint64
	for i, m := range ms {
		if m.Version <= prev {
			return fmt.Errorf("migration %d (%q): version %d does not follow %d: %w", i, m.Name, m.Version, prev, ErrInvalid)
		}
		if m.Up == nil {
			return fmt.Errorf("migration %d (%q): no Up function: %w", m.Version, m.Name, ErrInvalid)
		}
		prev = m.Version
	}
	return nil
}

// storedVersion returns the schema version in the file, 0 for a new file.
func storedVersion(tx *bbolt.Tx) (uint64, error) {
	b := tx.Bucket(bucketMeta)
	if b == nil {
		return 0, nil
	}
	v := b.Get(keySchemaVersion)
	if len(v) != 8 {
		return 0, fmt.Errorf("meta/%s: malformed value %x", keySchemaVersion, v)
	}
	return binary.BigEndian.Uint64(v), nil
}

// migrate brings the file to the last version in ms (which must be
// validated): every migration newer than the stored version runs, in order,
// in one write transaction that also records the new version. A file that is
// already current is only read.
func migrate(db *bbolt.DB, ms []Migration, log *slog.Logger) error {
	target := ms[len(ms)-1].Version
	var current uint64
	err := db.View(func(tx *bbolt.Tx) (err error) {
		current, err = storedVersion(tx)
		return err
	})
	if err != nil || current == target {
		return err
	}
	if current > target {
		return fmt.Errorf("file has schema version %d, this program knows up to %d: %w", current, target, ErrSchemaTooNew)
	}
	return db.Update(func(tx *bbolt.Tx) error {
		for _, m := range ms {
			if m.Version <= current {
				continue
			}
			log.Info("catalog: applying schema migration", "version", m.Version, "name", m.Name)
			if err := m.Up(tx); err != nil {
				return fmt.Errorf("schema migration %d (%s): %w", m.Version, m.Name, err)
			}
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return fmt.Errorf("create meta bucket: %w", err)
		}
		if err := meta.Put(keySchemaVersion, binary.BigEndian.AppendUint64(nil, target)); err != nil {
			return fmt.Errorf("store schema version: %w", err)
		}
		log.Info("catalog: schema up to date", "from", current, "to", target)
		return nil
	})
}
