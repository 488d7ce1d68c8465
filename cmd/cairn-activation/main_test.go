package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/licensing"
	"github.com/cairnbackup/cairn/licensing/server"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"key"},
		{"key", "create", "-data", dir},
		{"key", "create", "-data", dir, "-edition", "std", "-seats", "5", "-expires", "next year"},
		{"key", "create", "-data", dir, "-edition", "std", "-seats", "five", "-expires", "2027-12-31"},
		{"key", "create", "-data", dir, "-edition", "std", "-seats", "0", "-expires", "2027-12-31"},
		{"key", "create", "-data", dir, "-edition", "STD!", "-seats", "5", "-expires", "2099-12-31"},
		{"key", "show", "-data", dir},
		{"key", "show", "-data", dir, "A", "B"},
		{"key", "revoke", "-data", dir},
		{"activation", "release", "-data", dir, "-key", "0000000000", "-agent", "x"},
		{"serve", "-nope"},
		{"serve", "-data", dir, "-ttl", "-1h"},
		{"public-key", "extra"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d (stderr %q)", args, code, exitUsage, stderr)
		}
	}
}

func TestKeyCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "activation")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, "key", "list", "-data", dir)
	if code != exitFailure || !strings.Contains(stderr, "no activation store") {
		t.Fatalf("key list on an empty directory: %d %q", code, stderr)
	}

	code, out, stderr := runCLI(t, "key", "create", "-data", dir, "-edition", "std", "-seats", "5", "-expires", "2099-12-31", "-actor", "alice")
	if code != 0 {
		t.Fatalf("key create: %d %s", code, stderr)
	}
	m := regexp.MustCompile(`\b[0-9A-Z]{5}(-[0-9A-Z]{5}){4}\b`).FindString(out)
	key, err := licensing.ParseKey(m)
	if err != nil {
		t.Fatalf("key create printed no key: %v\n%s", err, out)
	}
	if !strings.Contains(out, key.ID()) || !strings.Contains(out, "2100-01-01T00:00:00Z") {
		t.Fatalf("key create output:\n%s", out)
	}

	code, out, _ = runCLI(t, "key", "list", "-data", dir)
	if code != 0 || !strings.Contains(out, key.ID()) || strings.Contains(out, key.Reveal()) {
		t.Fatalf("key list: %d\n%s", code, out)
	}
	// Flags after the key ID work too.
	code, out, _ = runCLI(t, "key", "show", strings.ToLower(key.ID()), "-data", dir)
	if code != 0 || !strings.Contains(out, "0 used of 5") || !strings.Contains(out, "key.create") || strings.Contains(out, key.Reveal()) {
		t.Fatalf("key show: %d\n%s", code, out)
	}
	code, _, stderr = runCLI(t, "key", "show", "-data", dir, "0000000000")
	if code != exitFailure || !strings.Contains(stderr, "not found") {
		t.Fatalf("key show of an unknown key: %d %q", code, stderr)
	}
	code, _, stderr = runCLI(t, "activation", "release", "-data", dir, "-key", key.ID(), "-agent", "SHA256:x", "-reason", "test")
	if code != exitFailure || !strings.Contains(stderr, "no active activation") {
		t.Fatalf("release of an inactive agent: %d %q", code, stderr)
	}
	code, out, stderr = runCLI(t, "key", "revoke", "-data", dir, "-reason", "test", key.ID())
	if code != 0 || !strings.Contains(out, "revoked key "+key.ID()) {
		t.Fatalf("key revoke: %d %s %s", code, out, stderr)
	}
	st, err := server.Open(filepath.Join(dir, server.StoreFileName), server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.ShowKey(context.Background(), key.ID())
	st.Close()
	if err != nil || d.Key.State != licensing.KeyRevoked || d.Audit[0].Actor != "alice" {
		t.Fatalf("store after the commands: %+v, %v", d, err)
	}
}

func TestPublicKeyCommand(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runCLI(t, "public-key", "-data", dir)
	if code != exitFailure || !strings.Contains(stderr, "no signing key") {
		t.Fatalf("public-key without a key: %d %q", code, stderr)
	}
	priv, _, err := server.LoadOrCreateSigningKey(filepath.Join(dir, server.SigningKeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCLI(t, "public-key", "-data", dir)
	pub, err := licensing.ParsePublicKey(out)
	if code != 0 || err != nil || !pub.Equal(priv.Public()) {
		t.Fatalf("public-key: %d %q %v", code, out, err)
	}
}
