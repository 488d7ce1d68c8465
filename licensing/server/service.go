package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/licensing"
)

// Files in the service's data directory.
const (
	StoreFileName      = "activation.db" // the bbolt store
	SigningKeyFileName = "signing.key"   // the Ed25519 signing key, mode 0600
	AdminSocketName    = "admin.sock"    // the admin API's Unix socket, mode 0600
)

// signingKeyPrefix starts the text of the signing key file.
const signingKeyPrefix = "ed25519-seed:"

// ServiceConfig configures a Service.
type ServiceConfig struct {
	Dir           string // data directory: store, signing key, admin socket (made 0700 if missing)
	Listen        string // the API's TCP address, e.g. "127.0.0.1:8081"
	Logger        *slog.Logger
	Now           func() time.Time // nil: time.Now
	ActivationTTL time.Duration    // 0: DefaultActivationTTL
}

// Service is a running activation service: the HTTP API on a TCP address and
// the admin API on the admin socket, over one store.
type Service struct {
	log      *slog.Logger
	store    *Store
	api      *Server
	apiLn    net.Listener
	adminLn  net.Listener
	sockPath string
	runOnce  sync.Once
}

// Listen opens the store in cfg.Dir (making the directory and the signing
// key on first start), and binds the API and admin listeners. Run serves
// them.
func Listen(cfg ServiceConfig) (_ *Service, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Dir == "" {
		return nil, errors.New("activation service: no data directory")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("activation service: %w", err)
	}
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
		}
	}()
	st, err := Open(filepath.Join(cfg.Dir, StoreFileName), Options{Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("activation service: %w", err)
	}
	closers = append(closers, st.Close)
	priv, created, err := LoadOrCreateSigningKey(filepath.Join(cfg.Dir, SigningKeyFileName))
	if err != nil {
		return nil, fmt.Errorf("activation service: %w", err)
	}
	api, err := New(Config{Store: st, SigningKey: priv, Logger: log, Now: cfg.Now, ActivationTTL: cfg.ActivationTTL})
	if err != nil {
		return nil, err
	}
	apiLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("activation service: %w", err)
	}
	closers = append(closers, apiLn.Close)
	// The store's lock is ours, so a socket file left here is stale.
	sock := filepath.Join(cfg.Dir, AdminSocketName)
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("activation service: remove stale admin socket: %w", err)
	}
	adminLn, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("activation service: admin socket: %w", err)
	}
	closers = append(closers, adminLn.Close)
	if err := os.Chmod(sock, 0o600); err != nil {
		return nil, fmt.Errorf("activation service: admin socket: %w", err)
	}
	pub := api.PublicKey()
	if created {
		log.Info("made a new signing key; configure appliances with its public key", "public_key", licensing.FormatPublicKey(pub))
	}
	log.Info("activation service listening", "addr", apiLn.Addr().String(), "admin_socket", sock,
		"public_key", licensing.FormatPublicKey(pub), "signer_id", licensing.SignerID(pub))
	return &Service{log: log, store: st, api: api, apiLn: apiLn, adminLn: adminLn, sockPath: sock}, nil
}

// Addr returns the API's address.
func (s *Service) Addr() net.Addr { return s.apiLn.Addr() }

// PublicKey returns the public key of the service's signing key.
func (s *Service) PublicKey() ed25519.PublicKey { return s.api.PublicKey() }

// Store returns the service's store, e.g. to create a demo key in an
// embedded service.
func (s *Service) Store() *Store { return s.store }

// Run serves the API and the admin socket until ctx is done, then shuts
// both down (waiting up to 5 s for requests in flight), removes the socket
// and closes the store. It returns nil after a shutdown through ctx.
func (s *Service) Run(ctx context.Context) error {
	err := errors.New("activation service: Run called twice")
	s.runOnce.Do(func() { err = s.run(ctx) })
	return err
}

func (s *Service) run(ctx context.Context) error {
	apiSrv := &http.Server{Handler: s.api, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	adminSrv := &http.Server{Handler: AdminHandler(s.store, s.log), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 2)
	go func() { errc <- apiSrv.Serve(s.apiLn) }()
	go func() { errc <- adminSrv.Serve(s.adminLn) }()
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		runErr = fmt.Errorf("activation service: %w", runErr)
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = apiSrv.Shutdown(shutCtx)
	_ = adminSrv.Shutdown(shutCtx)
	_ = os.Remove(s.sockPath)
	if err := s.store.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("activation service: close store: %w", err)
	}
	s.log.Info("activation service stopped")
	return runErr
}

// LoadOrCreateSigningKey reads the Ed25519 signing key at path, or makes one
// there (mode 0600) if there is none; created says which. The file holds
// "ed25519-seed:" and the standard base64 of the 32-byte seed. A key file
// that others may read is refused. Errors never contain the key.
func LoadOrCreateSigningKey(path string) (priv ed25519.PrivateKey, created bool, err error) {
	priv, err = loadSigningKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return priv, false, err
	}
	_, priv, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("make signing key: %w", err)
	}
	text := signingKeyPrefix + base64.StdEncoding.EncodeToString(priv.Seed()) + "\n"
	// Write a temporary file and link it into place: a crash leaves no
	// partial key, and of two processes starting at once one key wins.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".signing-key-*")
	if err != nil {
		return nil, false, fmt.Errorf("make signing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("make signing key: %w", err)
	}
	if _, err := tmp.WriteString(text); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("make signing key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("make signing key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, false, fmt.Errorf("make signing key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		priv, err = loadSigningKey(path)
		return priv, false, err
	} else if err != nil {
		return nil, false, fmt.Errorf("make signing key: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return priv, true, nil
}

// LoadSigningKey reads the signing key at path (see LoadOrCreateSigningKey).
func LoadSigningKey(path string) (ed25519.PrivateKey, error) { return loadSigningKey(path) }

func loadSigningKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("signing key %s has mode %04o: others may read it; chmod 600 it", path, fi.Mode().Perm())
	}
	buf, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(string(buf)), signingKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("signing key %s is not an %q file", path, signingKeyPrefix)
	}
	seed, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("signing key %s does not hold a %d-byte base64 seed", path, ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
