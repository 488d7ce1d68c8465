package catalog

import (
	"path/filepath"
	"testing"
)

func TestDirtyImages(t *testing.T) {
	c, _ := openTemp(t, Options{})
	putAgents(t, c, "a", "ab")
	update(t, c, func(tx *Tx) error {
		wantErr(t, "unknown agent", tx.PutDirtyImage(DirtyImage{AgentID: "nope", Image: "vol-1", BlockSize: 4096, Blocks: 1}), ErrNotFound)
		wantErr(t, "bad image name", tx.PutDirtyImage(DirtyImage{AgentID: "a", Image: "../x", BlockSize: 4096, Blocks: 1}), ErrInvalid)
		wantErr(t, "no block size", tx.PutDirtyImage(DirtyImage{AgentID: "a", Image: "vol-1", Blocks: 1}), ErrInvalid)
		for _, d := range []DirtyImage{
			{AgentID: "a", Image: "vol-2", BlockSize: 4096, Blocks: 10},
			{AgentID: "a", Image: "vol-1", BlockSize: 4096, Blocks: 5},
			{AgentID: "ab", Image: "vol-1", BlockSize: 4096, Blocks: 7}, // "a/" must not match "ab/"
			{AgentID: "a", Image: "vol-1", BlockSize: 4096, Blocks: 1024},
		} {
			if err := tx.PutDirtyImage(d); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, c, func(tx *Tx) error {
		ds, err := tx.DirtyImages("a")
		if err != nil {
			return err
		}
		if len(ds) != 2 || ds[0].Image != "vol-1" || ds[0].Blocks != 1024 || ds[1].Image != "vol-2" || ds[0].UpdatedAt.IsZero() {
			t.Errorf("DirtyImages(a) = %+v; want vol-1 (1024 blocks), vol-2", ds)
		}
		return nil
	})
	update(t, c, func(tx *Tx) error {
		if err := tx.DeleteDirtyImage("a", "vol-1"); err != nil {
			return err
		}
		if err := tx.DeleteDirtyImage("a", "vol-1"); err != nil {
			t.Errorf("deleting a missing record: %v", err)
		}
		return tx.DeleteAgent("ab")
	})
	view(t, c, func(tx *Tx) error {
		for id, want := range map[string]int{"a": 1, "ab": 0} {
			if ds, err := tx.DirtyImages(id); err != nil || len(ds) != want {
				t.Errorf("DirtyImages(%s) = %+v, %v; want %d records", id, ds, err, want)
			}
		}
		return nil
	})
}

// TestMigrateToDirtyImages upgrades a version 3 file: the new bucket works
// and the records already there are kept.
func TestMigrateToDirtyImages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	old, err := Open(path, Options{Migrations: builtinMigrations[:3]})
	if err != nil {
		t.Fatal(err)
	}
	putAgents(t, old, "a")
	old.Close()
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, err := c.SchemaVersion(); err != nil || v != 4 {
		t.Fatalf("schema version %d, %v; want 4", v, err)
	}
	update(t, c, func(tx *Tx) error {
		if _, err := tx.Agent("a"); err != nil {
			return err
		}
		return tx.PutDirtyImage(DirtyImage{AgentID: "a", Image: "vol-1", BlockSize: 4096, Blocks: 1})
	})
}
