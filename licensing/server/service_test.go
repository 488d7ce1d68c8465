package server

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/licensing"
)

// startService runs a Service in dir on 127.0.0.1 and returns it and a
// function that stops it and returns Run's error.
func startService(t *testing.T, dir string, logs *syncBuffer) (*Service, func() error) {
	t.Helper()
	svc, err := Listen(ServiceConfig{Dir: dir, Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return svc, stop
}

// The vendor administers a running service through its admin socket, and
// the same store directly once it stops.
func TestServiceAndAdminSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	logs := &syncBuffer{}
	svc, stop := startService(t, dir, logs)
	ctx := context.Background()

	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory mode %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, AdminSocketName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket %v, %v", fi, err)
	}
	if !strings.Contains(logs.String(), licensing.FormatPublicKey(svc.PublicKey())) {
		t.Fatalf("the public key is not logged:\n%s", logs)
	}
	// The store is locked by the service: only the socket works.
	if _, err := Open(filepath.Join(dir, StoreFileName), Options{LockTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("Open while serving: %v, want ErrLocked", err)
	}
	adm, closeAdm, err := OpenAdmin(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAdm()
	if _, ok := adm.(*AdminClient); !ok {
		t.Fatalf("OpenAdmin while serving returned %T, want *AdminClient", adm)
	}
	k, info, err := adm.CreateKey(ctx, CreateKeyRequest{Edition: "std", Seats: 1, Expires: time.Now().AddDate(1, 0, 0), Actor: "alice"})
	if err != nil || info.ID != k.ID() {
		t.Fatalf("CreateKey over the socket = %s %+v, %v", k, info, err)
	}
	if _, _, err := adm.CreateKey(ctx, CreateKeyRequest{Edition: "std", Seats: 0, Expires: time.Now().AddDate(1, 0, 0)}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("CreateKey with 0 seats over the socket: %v, want ErrInvalidArgument", err)
	}

	client := &licensing.Client{BaseURL: "http://" + svc.Addr().String(), PublicKey: svc.PublicKey()}
	a, _, err := client.Activate(ctx, licensing.ActivateRequest{Key: k, ApplianceID: "app-1", AgentFingerprint: "agent-a", Hostname: "fs1"})
	if err != nil || a.KeyID != k.ID() {
		t.Fatalf("Activate = %+v, %v", a, err)
	}
	keys, err := adm.ListKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].Used != 1 {
		t.Fatalf("ListKeys over the socket = %+v, %v", keys, err)
	}
	d, err := adm.ShowKey(ctx, k.ID())
	if err != nil || len(d.Activations) != 1 || d.Activations[0].Hostname != "fs1" {
		t.Fatalf("ShowKey over the socket = %+v, %v", d, err)
	}
	if _, err := adm.ShowKey(ctx, "0000000000"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ShowKey of an unknown key over the socket: %v", err)
	}
	rel, err := adm.ForceRelease(ctx, ForceReleaseRequest{KeyID: k.ID(), AgentFingerprint: "agent-a", Actor: "alice", Reason: "ticket 7"})
	if err != nil || rel.Active() || rel.ApplianceID != "app-1" {
		t.Fatalf("ForceRelease over the socket = %+v, %v", rel, err)
	}
	info, err = adm.RevokeKey(ctx, k.ID(), "alice", "test")
	if err != nil || info.State != licensing.KeyRevoked {
		t.Fatalf("RevokeKey over the socket = %+v, %v", info, err)
	}
	_, _, err = client.Activate(ctx, licensing.ActivateRequest{Key: k, ApplianceID: "app-1", AgentFingerprint: "agent-a"})
	wantCode(t, err, licensing.CodeKeyRevoked)
	if strings.Contains(logs.String(), k.Reveal()) {
		t.Fatalf("the service logged a key:\n%s", logs)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, AdminSocketName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("admin socket left after stop: %v", err)
	}
	// Stopped: the admin operations open the store directly.
	adm2, closeAdm2, err := OpenAdmin(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := adm2.(*Store); !ok {
		t.Fatalf("OpenAdmin while stopped returned %T, want *Store", adm2)
	}
	d, err = adm2.ShowKey(ctx, k.ID())
	if err != nil || d.Key.State != licensing.KeyRevoked || len(d.Audit) != 4 {
		t.Fatalf("ShowKey directly = %+v, %v", d, err)
	}
	if err := closeAdm2(); err != nil {
		t.Fatal(err)
	}

	// Restarted: the same signing key, the same store.
	svc2, _ := startService(t, dir, &syncBuffer{})
	if !svc2.PublicKey().Equal(svc.PublicKey()) {
		t.Fatal("the signing key changed across restarts")
	}
}

func TestOpenAdminWithoutStore(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := OpenAdmin(dir, false); err == nil || !strings.Contains(err.Error(), "no activation store") {
		t.Fatalf("OpenAdmin on an empty directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, StoreFileName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("OpenAdmin without create made a store")
	}
	adm, closeAdm, err := OpenAdmin(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAdm()
	if _, ok := adm.(*Store); !ok {
		t.Fatalf("OpenAdmin returned %T", adm)
	}
}

// A second service on the same directory fails with a clear error, and so do
// the admin commands if the socket does not answer while the store is held.
func TestServiceDirInUse(t *testing.T) {
	dir := t.TempDir()
	startService(t, dir, &syncBuffer{})
	_, err := Listen(ServiceConfig{Dir: dir, Listen: "127.0.0.1:0"})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Listen: %v, want ErrLocked", err)
	}
	// The socket of the running service goes missing: the admin command
	// cannot reach it and cannot open the store.
	if err := os.Remove(filepath.Join(dir, AdminSocketName)); err != nil {
		t.Fatal(err)
	}
	_, _, err = OpenAdmin(dir, false)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("OpenAdmin with a locked store and no socket: %v", err)
	}
}

func TestSigningKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, SigningKeyFileName)
	priv, created, err := LoadOrCreateSigningKey(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreateSigningKey = created %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
	again, created, err := LoadOrCreateSigningKey(path)
	if err != nil || created || !again.Equal(priv) {
		t.Fatalf("second LoadOrCreateSigningKey = created %v, %v", created, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("files left in the directory: %v", entries)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigningKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("LoadSigningKey of a readable key: %v", err)
	}
	const garbage = "ed25519-seed:c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n"
	if err := os.WriteFile(path, []byte(garbage), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadSigningKey(path)
	if err == nil || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Fatalf("LoadSigningKey of a short seed: %v", err)
	}
}
