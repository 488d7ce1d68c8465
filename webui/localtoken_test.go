package webui

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// TestLocalTokenNotCounted: with as many scripts' tokens as allowed, the
// appliance still writes its command line's token (it must start), and
// the page still refuses one more script token.
func TestLocalTokenNotCounted(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if err := e.store.Update(ctx, func(st *State) error {
		for i := range maxAPITokens {
			st.APITokens = append(st.APITokens, APIToken{ID: fmt.Sprintf("%08x", i), Name: "script", Hash: sha256Hex(fmt.Sprint(i))})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "api.token")
	if err := e.ui.WriteLocalToken(ctx, path); err != nil {
		t.Fatalf("with %d script tokens: %v", maxAPITokens, err)
	}
	b := e.browser(t)
	b.setup()
	p := b.post("/api-tokens", url.Values{"name": {"one more"}})
	if p.Code != http.StatusConflict {
		t.Errorf("token %d on the page: HTTP %d, want 409", maxAPITokens+1, p.Code)
	}
	b2, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(e.store.path)
	if err != nil {
		t.Fatal(err)
	}
	if secret := strings.TrimSpace(string(b2)); strings.Contains(string(raw), secret) {
		t.Error("the store file holds the local token in clear")
	}
	if n := len(st.APITokens); n != maxAPITokens+1 {
		t.Errorf("%d tokens stored, want %d", n, maxAPITokens+1)
	}
}
