package webui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/internal/durable"
)

// Admin is the appliance's administrator account.
type Admin struct {
	Username string `json:"username"`
	// PasswordHash is an argon2id PHC string; the password itself is
	// never stored.
	PasswordHash string    `json:"password_hash"`
	CreatedAt    time.Time `json:"created_at"`
}

// Session is one logged-in browser. The session ID is known only to the
// browser's cookie; the store keeps its SHA-256.
type Session struct {
	IDHash    string    `json:"id_hash"` // hex SHA-256 of the session ID
	Username  string    `json:"username"`
	CreatedAt time.Time `json:"created_at"`
	LastSeen  time.Time `json:"last_seen"`
}

// APIToken is a token for scripts ("Authorization: Bearer ..."). The
// store keeps the token's SHA-256 only; the token is shown once.
type APIToken struct {
	ID        string    `json:"id"` // public, names the token in lists
	Name      string    `json:"name"`
	Hash      string    `json:"hash"` // hex SHA-256 of the whole token
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	LastUsed  time.Time `json:"last_used,omitzero"`
	// Local marks the token the appliance writes for its own command
	// line at each start (WriteLocalToken).
	Local bool `json:"local,omitempty"`
}

// State is everything the UI stores.
type State struct {
	Admin     *Admin     `json:"admin,omitempty"`
	Sessions  []Session  `json:"sessions,omitempty"`
	APITokens []APIToken `json:"api_tokens,omitempty"`
}

func (s State) clone() State {
	c := State{Sessions: append([]Session(nil), s.Sessions...), APITokens: append([]APIToken(nil), s.APITokens...)}
	if s.Admin != nil {
		a := *s.Admin
		c.Admin = &a
	}
	return c
}

// Store keeps the UI's State. Implementations are safe for concurrent use.
type Store interface {
	// Load returns the stored state; the zero State when nothing is
	// stored yet. The caller may modify what it gets.
	Load(ctx context.Context) (State, error)
	// Update runs fn on a copy of the current state and stores what fn
	// leaves, atomically; if fn or the write fails, nothing changes.
	// Updates are serialized.
	Update(ctx context.Context, fn func(*State) error) error
}

// FileStore is a Store in one JSON file (mode 0600), replaced atomically
// and durably on every update.
type FileStore struct {
	path string

	mu    sync.Mutex
	state State
}

var _ Store = (*FileStore)(nil)

// maxStoreFile bounds the file OpenFileStore reads.
const maxStoreFile = 4 << 20

// OpenFileStore opens (or, on first update, creates) the JSON store at path.
func OpenFileStore(path string) (*FileStore, error) {
	s := &FileStore{path: path}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("webui store: %w", err)
		}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("webui store: %w", err)
	case len(data) > maxStoreFile:
		return nil, fmt.Errorf("webui store %s: larger than %d bytes", path, maxStoreFile)
	}
	if err := json.Unmarshal(data, &s.state); err != nil {
		return nil, fmt.Errorf("webui store %s: %w", path, err)
	}
	return s, nil
}

// Load implements Store.
func (s *FileStore) Load(ctx context.Context) (State, error) {
	if err := ctx.Err(); err != nil {
		return State{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.clone(), nil
}

// Update implements Store.
func (s *FileStore) Update(ctx context.Context, fn func(*State) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.state.clone()
	if err := fn(&next); err != nil {
		return err
	}
	data, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return fmt.Errorf("webui store: encode: %w", err)
	}
	if err := durable.Replace(s.path, data, 0o600); err != nil {
		return fmt.Errorf("webui store: write %s: %w", s.path, err)
	}
	s.state = next
	return nil
}
