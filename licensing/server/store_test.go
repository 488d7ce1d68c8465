package server

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/licensing"
)

func TestCreateKeyValidation(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), StoreFileName), Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	year := t0.AddDate(1, 0, 0)
	for name, req := range map[string]CreateKeyRequest{
		"no edition":      {Seats: 1, Expires: year},
		"edition upper":   {Edition: "STD", Seats: 1, Expires: year},
		"edition space":   {Edition: "s d", Seats: 1, Expires: year},
		"edition dash":    {Edition: "-std", Seats: 1, Expires: year},
		"edition long":    {Edition: strings.Repeat("a", 33), Seats: 1, Expires: year},
		"no seats":        {Edition: "std", Expires: year},
		"negative seats":  {Edition: "std", Seats: -1, Expires: year},
		"too many seats":  {Edition: "std", Seats: MaxSeats + 1, Expires: year},
		"expired":         {Edition: "std", Seats: 1, Expires: t0},
		"no expiry":       {Edition: "std", Seats: 1},
		"control in name": {Edition: "std", Seats: 1, Expires: year, Actor: "a\x00b"},
	} {
		if _, _, err := st.CreateKey(ctx, req); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: CreateKey error %v, want ErrInvalidArgument", name, err)
		}
	}
	k, info, err := st.CreateKey(ctx, CreateKeyRequest{Edition: "std-2.x_y", Seats: 5, Expires: year.Add(1500 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Expires.Equal(year.Add(time.Second)) || !info.Created.Equal(t0) || info.Used != 0 {
		t.Fatalf("KeyInfo %+v", info)
	}
	// A given key (the demo key of an embedded service) is stored once.
	if _, _, err := st.CreateKey(ctx, CreateKeyRequest{Edition: "std", Seats: 1, Expires: year, Key: k}); !errors.Is(err, ErrExists) {
		t.Fatalf("CreateKey of a stored key: %v, want ErrExists", err)
	}
	demo, err := licensing.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := st.CreateKey(ctx, CreateKeyRequest{Edition: "demo", Seats: 1, Expires: year, Key: demo})
	if err != nil || !got.Equal(demo) {
		t.Fatalf("CreateKey with a given key = %s, %v", got, err)
	}
	if _, err := st.ShowKey(ctx, "0000000000"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ShowKey of an unknown ID: %v", err)
	}
	if _, err := st.ShowKey(ctx, "short"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ShowKey of a malformed ID: %v", err)
	}
	if _, err := st.RevokeKey(ctx, "0000000000", "", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RevokeKey of an unknown ID: %v", err)
	}
	keys, err := st.ListKeys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("ListKeys = %+v, %v", keys, err)
	}
	// Lower case and Crockford's aliases name the same key.
	if d, err := st.ShowKey(ctx, strings.ToLower(k.ID())); err != nil || d.Key.ID != k.ID() {
		t.Fatalf("ShowKey(lower case ID) = %+v, %v", d.Key, err)
	}
}

// The store keeps a key's hash, never the key; it survives a reopen.
func TestStorePersistsWithoutKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), StoreFileName)
	st, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var keys []licensing.Key
	for range 3 {
		k, _, err := st.CreateKey(ctx, CreateKeyRequest{Edition: "std", Seats: 2, Expires: time.Now().AddDate(1, 0, 0), Actor: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		for _, form := range []string{k.Reveal(), strings.ReplaceAll(k.Reveal(), "-", "")} {
			if bytes.Contains(raw, []byte(form)) {
				t.Fatalf("the store file contains key %s", k)
			}
		}
		if !bytes.Contains(raw, []byte(k.ID())) {
			t.Fatalf("the store file does not contain key ID %s", k.ID())
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("store file mode %v, %v", fi.Mode(), err)
	}

	st, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	list, err := st.ListKeys(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("after reopen: %+v, %v", list, err)
	}
	d, err := st.ShowKey(ctx, keys[0].ID())
	if err != nil || len(d.Audit) != 1 || d.Audit[0].Action != AuditKeyCreate || d.Audit[0].Actor != "alice" {
		t.Fatalf("audit after reopen: %+v, %v", d.Audit, err)
	}
}

func TestStoreLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), StoreFileName)
	st, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = Open(path, Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

func TestStoreSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), StoreFileName)
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keySchema, []byte("2"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "schema version") {
		t.Fatalf("Open of a newer store: %v", err)
	}
}

// The audit log is append-only and numbered: every seat change leaves one
// record, in order.
func TestAuditLog(t *testing.T) {
	e := newEnv(t)
	k := e.key(2)
	steps := []func() error{
		func() error { _, err := e.activate(k, "app-1", "agent-a"); return err },
		func() error { _, err := e.activate(k, "app-1", "agent-a"); return err }, // renewal: not audited
		func() error { return e.deactivate(k, "app-1", "agent-a") },
		func() error { _, err := e.activate(k, "app-2", "agent-a"); return err },
		func() error {
			_, err := e.store.ForceRelease(context.Background(), ForceReleaseRequest{KeyID: k.ID(), AgentFingerprint: "agent-a", Actor: "bob", Reason: "moved"})
			return err
		},
		func() error { _, err := e.store.RevokeKey(context.Background(), k.ID(), "bob", "ended"); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	d, err := e.store.ShowKey(context.Background(), k.ID())
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for i, r := range d.Audit {
		actions = append(actions, r.Action)
		if i > 0 && r.Seq <= d.Audit[i-1].Seq {
			t.Fatalf("audit sequence not rising: %+v", d.Audit)
		}
	}
	want := []string{AuditKeyCreate, AuditActivate, AuditDeactivate, AuditActivate, AuditForceRelease, AuditKeyRevoke}
	if strings.Join(actions, " ") != strings.Join(want, " ") {
		t.Fatalf("audit actions %v, want %v", actions, want)
	}
}

func TestCanceledContext(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := e.store.CreateKey(ctx, CreateKeyRequest{Edition: "std", Seats: 1, Expires: t0.AddDate(1, 0, 0)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateKey with a canceled context: %v", err)
	}
	if _, err := e.store.ListKeys(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("ListKeys with a canceled context: %v", err)
	}
}
