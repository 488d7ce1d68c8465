package catalog

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestOpenFresh(t *testing.T) {
	c, path := openTemp(t, Options{})
	if v, err := c.SchemaVersion(); err != nil || v != SchemaVersion {
		t.Errorf("SchemaVersion() = %d, %v; want %d", v, err, SchemaVersion)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, %v; want 0600", fi.Mode(), err)
	}
	c.db.View(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketAgents, bucketSettings, bucketRecoveryPoints, bucketJobs, bucketAudit, bucketAgentTokens, bucketSetupTokens,
			bucketPairings, bucketActivations, bucketSecrets} {
			if tx.Bucket(name) == nil {
				t.Errorf("bucket %s missing", name)
			}
		}
		return nil
	})
}

func TestReopenKeepsData(t *testing.T) {
	c, path := openTemp(t, Options{})
	putAgents(t, c, "a")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	view(t, c, func(tx *Tx) error {
		_, err := tx.Agent("a")
		return err
	})
}

func TestOpenLocked(t *testing.T) {
	first, path := openTemp(t, Options{})
	const timeout = 100 * time.Millisecond
	start := time.Now()
	c, err := Open(path, Options{Timeout: timeout})
	if err == nil {
		c.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open: %v, want ErrLocked", err)
	}
	// bbolt stops retrying one 50ms poll interval before the timeout.
	if elapsed := time.Since(start); elapsed < timeout/2 {
		t.Errorf("gave up after %v, well before the %v timeout", elapsed, timeout)
	}
	t.Log(err)

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := openClose(path, nil); err != nil {
		t.Errorf("Open after the holder closed: %v", err)
	}
}

// noop is a migration step that changes nothing.
func noop(*bbolt.Tx) error { return nil }

// openClose opens path with migrations ms and closes it again.
func openClose(path string, ms []Migration) error {
	c, err := Open(path, Options{Migrations: ms})
	if err != nil {
		return err
	}
	return c.Close()
}

// inspect returns the stored schema version of a closed file and whether
// bucket name exists.
func inspect(t *testing.T, path string, name string) (uint64, bool) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v uint64
	var exists bool
	err = db.View(func(tx *bbolt.Tx) (err error) {
		exists = tx.Bucket([]byte(name)) != nil
		v, err = storedVersion(tx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v, exists
}

func TestMigrationUpgrade(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	if err := openClose(path, builtinMigrations); err != nil {
		t.Fatal(err)
	}
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	putAgents(t, c, "old-agent")
	c.Close()

	// The next version rewrites every agent's hostname; it must run
	// exactly once and see the data written under the current one.
	runs := 0
	next := append(builtinMigrations[:len(builtinMigrations):len(builtinMigrations)], Migration{Version: SchemaVersion + 1, Name: "upper-case hostnames", Up: func(tx *bbolt.Tx) error {
		runs++
		b := tx.Bucket(bucketAgents)
		return b.ForEach(func(k, v []byte) error {
			return b.Put(k, bytes.Replace(v, []byte(".lan"), []byte(".LAN"), 1))
		})
	}})
	for range 2 {
		c, err := Open(path, Options{Migrations: next})
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := c.SchemaVersion(); v != SchemaVersion+1 {
			t.Errorf("version after upgrade = %d", v)
		}
		view(t, c, func(tx *Tx) error {
			a, err := tx.Agent("old-agent")
			if a.Hostname != "old-agent.LAN" {
				t.Errorf("hostname after migration = %q", a.Hostname)
			}
			return err
		})
		c.Close()
	}
	if runs != 1 {
		t.Errorf("migration %d ran %d times, want 1", SchemaVersion+1, runs)
	}
}

func TestSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	future := append(builtinMigrations[:1:1], Migration{Version: SchemaVersion + 7, Name: "future", Up: noop})
	if err := openClose(path, future); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, Options{})
	wantErr(t, "Open of newer file", err, ErrSchemaTooNew)
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("Open of a too-new file modified it")
	}
}

func TestFailingMigrationRollsBack(t *testing.T) {
	boom := errors.New("boom")
	failing := Migration{Version: SchemaVersion + 1, Name: "fails", Up: func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucket([]byte("extra")); err != nil {
			return err
		}
		return boom
	}}
	tests := []struct {
		name        string
		start       []Migration // nil: start from a missing file
		wantVersion uint64
	}{
		{"fresh file", nil, 0},
		{"upgrade", builtinMigrations, SchemaVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "catalog.db")
			if tt.start != nil {
				if err := openClose(path, tt.start); err != nil {
					t.Fatal(err)
				}
			}
			err := openClose(path, append(builtinMigrations[:len(builtinMigrations):len(builtinMigrations)], failing))
			wantErr(t, "Open", err, boom)
			if v, extra := inspect(t, path, "extra"); v != tt.wantVersion || extra {
				t.Errorf("after failed migration: version %d (want %d), extra bucket %v", v, tt.wantVersion, extra)
			}
			if _, agents := inspect(t, path, string(bucketAgents)); agents != (tt.start != nil) {
				t.Errorf("agents bucket exists = %v", agents)
			}
		})
	}
}

func TestInvalidMigrations(t *testing.T) {
	tests := []struct {
		name string
		ms   []Migration
	}{
		{"version zero", []Migration{{Version: 0, Up: noop}}},
		{"repeated version", []Migration{{Version: 1, Up: noop}, {Version: 1, Up: noop}}},
		{"decreasing", []Migration{{Version: 2, Up: noop}, {Version: 1, Up: noop}}},
		{"no Up", []Migration{{Version: 1}}},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "catalog.db")
		wantErr(t, tt.name, openClose(path, tt.ms), ErrInvalid)
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: file created anyway (%v)", tt.name, err)
		}
	}
}

func TestBuiltinMigrationsMatchSchemaVersion(t *testing.T) {
	if err := validateMigrations(builtinMigrations); err != nil {
		t.Fatal(err)
	}
	if last := builtinMigrations[len(builtinMigrations)-1].Version; last != SchemaVersion {
		t.Errorf("last built-in migration is %d, SchemaVersion is %d", last, SchemaVersion)
	}
}

func TestMissingBucketIsAnError(t *testing.T) {
	// A file migrated by a list that never created the buckets.
	c, _ := openTemp(t, Options{Migrations: []Migration{{Version: 1, Up: noop}}})
	err := c.View(context.Background(), func(tx *Tx) error {
		_, err := tx.Agents()
		return err
	})
	if err == nil {
		t.Error("Agents on a file without buckets succeeded")
	}
}
