package catalog

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// openTemp opens a new catalog in a temporary directory and closes it
// when the test ends.
func openTemp(t *testing.T, opts Options) (*Catalog, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "catalog.db")
	c, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func update(t *testing.T, c *Catalog, fn func(*Tx) error) {
	t.Helper()
	if err := c.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func view(t *testing.T, c *Catalog, fn func(*Tx) error) {
	t.Helper()
	if err := c.View(context.Background(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

func putAgents(t *testing.T, c *Catalog, ids ...string) {
	t.Helper()
	update(t, c, func(tx *Tx) error {
		for _, id := range ids {
			if err := tx.PutAgent(Agent{ID: id, Hostname: id + ".lan", Mode: ModeDirect}); err != nil {
				return err
			}
		}
		return nil
	})
}

// wantErr fails the test unless err matches target (nil means no error).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if target == nil && err != nil || target != nil && !errors.Is(err, target) {
		t.Errorf("%s: error %v, want %v", what, err, target)
	}
}
