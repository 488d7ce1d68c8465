package webui

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFileStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "webui.json")
	s, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.Load(ctx); err != nil || st.Admin != nil || len(st.Sessions) != 0 {
		t.Fatalf("new store: %+v, %v", st, err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.Update(ctx, func(st *State) error {
		st.Admin = &Admin{Username: "admin", PasswordHash: "$argon2id$x", CreatedAt: at}
		st.Sessions = append(st.Sessions, Session{IDHash: "ab", Username: "admin", CreatedAt: at, LastSeen: at})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("store file: %v, %v; want mode 0600", fi, err)
	}
	// A failed update changes nothing, in memory or on disk.
	boom := errors.New("boom")
	if err := s.Update(ctx, func(st *State) error {
		st.Admin.Username = "changed"
		st.Sessions = nil
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Update: %v, want boom", err)
	}
	// What Load returns is a copy.
	st, _ := s.Load(ctx)
	st.Admin.Username = "mutated"
	for _, reopen := range []bool{false, true} {
		if reopen {
			if s, err = OpenFileStore(path); err != nil {
				t.Fatal(err)
			}
		}
		st, err := s.Load(ctx)
		if err != nil || st.Admin == nil || st.Admin.Username != "admin" || len(st.Sessions) != 1 || !st.Sessions[0].LastSeen.Equal(at) {
			t.Fatalf("reopen %v: %+v, %v", reopen, st, err)
		}
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFileStore(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt store: %v, want an error naming the file", err)
	}
}

func TestPassword(t *testing.T) {
	h, err := hashPassword(testPassword, testArgon)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=1024,t=1,p=1$") || strings.Contains(h, testPassword) {
		t.Fatalf("hash %q", h)
	}
	h2, _ := hashPassword(testPassword, testArgon)
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no per-hash salt")
	}
	for pw, want := range map[string]bool{testPassword: true, testPassword + " ": false, "": false, strings.ToUpper(testPassword): false} {
		if ok, err := checkPassword(pw, h); ok != want || err != nil {
			t.Errorf("checkPassword(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	for _, bad := range []string{"", "plain", "$argon2i$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA", "$argon2id$v=18$m=1024,t=1,p=1$c2FsdA$aGFzaA",
		"$argon2id$v=19$m=1024,t=0,p=1$c2FsdA$aGFzaA", "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdA$aGFzaA", "$argon2id$v=19$m=1024,t=1,p=1$!!$aGFzaA",
		"$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$", "$argon2id$v=19$m=1024,t=1,p=1 $c2FsdGFsdA$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=2097152,t=1,p=1$c2FsdGFsdA$aGFzaGhhc2hoYXNoaGFzaA"} {
		if _, err := checkPassword("x", bad); !errors.Is(err, errBadHash) {
			t.Errorf("checkPassword on %q: %v, want errBadHash", bad, err)
		}
	}
}

func TestPasswordDefaults(t *testing.T) {
	// RFC 9106 second recommended option: argon2id, 64 MiB, 3 passes.
	if defaultArgon.Memory < 64*1024 || defaultArgon.Time < 3 || defaultArgon.Threads < 1 {
		t.Fatalf("default argon2id parameters %+v are below RFC 9106's", defaultArgon)
	}
	ui, err := New(Config{API: stubAPI{}, Store: &FileStore{path: filepath.Join(t.TempDir(), "s.json")}})
	if err != nil {
		t.Fatal(err)
	}
	if ui.argon != defaultArgon {
		t.Fatalf("New uses %+v, want the defaults", ui.argon)
	}
}
