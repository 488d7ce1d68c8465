package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrNotFound is returned when a record (or the agent it belongs to)
	// does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid is returned for malformed input, such as a bad agent ID.
	ErrInvalid = errors.New("invalid")
	// ErrExists is returned when adding a record whose key is already
	// taken, such as a duplicate setup token ID. It also matches
	// ErrInvalid.
	ErrExists error = existsError{}
	// ErrSetupRefused is returned by Tx.UseSetupToken when the setup token
	// may not be exchanged (revoked, expired, used up, or already used by
	// the same agent key); the error text gives the reason.
	ErrSetupRefused = errors.New("catalog: setup token refused")
	// ErrSchemaTooNew is returned by Open for a file written by a newer
	// version of the code; the file is left untouched.
	ErrSchemaTooNew = errors.New("catalog schema is newer than this program supports")
	// ErrLocked is returned by Open when another process (or another
	// Catalog in this process) holds the file open.
	ErrLocked = errors.New("catalog file is in use (locked)")
	// ErrNoSecretKey is returned by Tx.PutSecret and Tx.Secret when the
	// catalog was opened without Options.SecretKey.
	ErrNoSecretKey = errors.New("catalog opened without a secret key")
)

// existsError is the type of ErrExists.
type existsError struct{}

func (existsError) Error() string { return "already exists" }

// Is makes ErrExists match ErrInvalid.
func (existsError) Is(target error) bool { return target == ErrInvalid }

// DefaultTimeout is how long Open waits for the file lock when
// Options.Timeout is zero.
const DefaultTimeout = time.Second

// Options configure Open. The zero value is ready to use.
type Options struct {
	// Logger receives schema migration messages. Nil discards them.
	Logger *slog.Logger
	// Timeout bounds the wait for the file lock; zero means DefaultTimeout.
	Timeout time.Duration
	// Migrations replaces the built-in schema migrations; nil or empty
	// means the built-in list. Only tests should set it.
	Migrations []Migration
	// SecretKey is the AES-256 key that seals the values of Tx.PutSecret:
	// SecretKeySize bytes, or empty for a catalog without secrets (then
	// PutSecret and Secret fail with ErrNoSecretKey). The catalog never
	// stores it; Open keeps a copy.
	SecretKey []byte
}

// SecretKeySize is the length of Options.SecretKey.
const SecretKeySize = 32

// Catalog is an open catalog file. It is safe for concurrent use; write
// transactions are serialised, read transactions run concurrently.
type Catalog struct {
	db        *bbolt.DB
	log       *slog.Logger
	secretKey []byte // nil if none; never modified
}

// Open opens or creates the catalog file at path (mode 0600) and migrates
// it to the newest schema version. It fails with ErrLocked if the file is
// still locked by someone else after opts.Timeout, and with ErrSchemaTooNew
// if the file comes from a newer program. A SecretKey of another length than
// SecretKeySize fails with ErrInvalid before the file is touched.
func Open(path string, opts Options) (*Catalog, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	migrations := opts.Migrations
	if len(migrations) == 0 {
		migrations = builtinMigrations
	}
	if err := validateMigrations(migrations); err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	if n := len(opts.SecretKey); n != 0 && n != SecretKeySize {
		return nil, fmt.Errorf("open catalog %s: secret key is %d bytes, want %d: %w", path, n, SecretKeySize, ErrInvalid)
	}

	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open catalog %s: %w (lock timeout %s)", path, ErrLocked, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	if err := migrate(db, migrations, log); err != nil {
		db.Close()
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	c := &Catalog{db: db, log: log}
	if len(opts.SecretKey) != 0 {
		c.secretKey = bytes.Clone(opts.SecretKey)
	}
	return c, nil
}

// Close releases the file. Transactions must not be in progress.
func (c *Catalog) Close() error {
	return c.db.Close()
}

// Update runs fn in a read-write transaction. If fn returns an error (or
// panics) nothing it wrote is kept; otherwise its writes are committed and
// synced to disk before Update returns. ctx is checked before the
// transaction starts and again once the write lock is held.
func (c *Catalog) Update(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.db.Update(func(btx *bbolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(&Tx{tx: btx, secretKey: c.secretKey})
	})
}

// View runs fn in a read-only transaction that sees a consistent snapshot
// of the catalog. Write methods of the Tx fail inside View.
func (c *Catalog) View(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.db.View(func(btx *bbolt.Tx) error {
		return fn(&Tx{tx: btx, secretKey: c.secretKey})
	})
}

// SchemaVersion returns the schema version stored in the file.
func (c *Catalog) SchemaVersion() (uint64, error) {
	var v uint64
	err := c.db.View(func(btx *bbolt.Tx) (err error) {
		v, err = storedVersion(btx)
		return err
	})
	return v, err
}
