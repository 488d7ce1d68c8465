package webui

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteLocalToken: each start replaces the command line's token; the
// file is private and holds a token the API accepts, the old one is
// refused, and a token made on the API tokens page survives.
func TestWriteLocalToken(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if err := e.store.Update(ctx, func(st *State) error {
		st.APITokens = append(st.APITokens, APIToken{ID: "0000beef", Name: "backup script", Hash: sha256Hex("cairn_api_0000beef_x")})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "api.token")
	// A temporary file left by a crash does not stop the next start.
	if err := os.WriteFile(path+".tmp", []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", fi.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	status := func(tok string) int {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "/api/v1/agents", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, req)
		return w.Code
	}

	if err := e.ui.WriteLocalToken(ctx, path); err != nil {
		t.Fatal(err)
	}
	first := read()
	if !strings.HasPrefix(first, apiTokenPrefix) {
		t.Fatalf("token %q lacks the prefix %q", first, apiTokenPrefix)
	}
	if code := status(first); code != http.StatusOK {
		t.Fatalf("first token: HTTP %d", code)
	}
	if err := e.ui.WriteLocalToken(ctx, path); err != nil {
		t.Fatal(err)
	}
	second := read()
	if second == first {
		t.Fatal("the second start wrote the same token")
	}
	if code := status(first); code != http.StatusUnauthorized {
		t.Errorf("the first start's token after a restart: HTTP %d, want 401", code)
	}
	if code := status(second); code != http.StatusOK {
		t.Errorf("second token: HTTP %d", code)
	}
	st, err := e.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var local, script int
	for _, tok := range st.APITokens {
		if tok.Local {
			local++
		}
		if tok.ID == "0000beef" {
			script++
		}
		if tok.Hash == second {
			t.Error("the store holds the token in clear")
		}
	}
	if local != 1 || script != 1 {
		t.Errorf("stored: %d local tokens (want 1), %d script tokens (want 1)", local, script)
	}
}
