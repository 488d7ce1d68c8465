// Package appliance is the Cairn appliance service: it opens the catalog and
// the storage pool and serves the appliance's HTTP endpoints. Later parts
// (agent gateway, pairing, scheduler, offsite) are built and started here.
package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cairnbackup/cairn/appliance/backup"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/gateway"
	"github.com/cairnbackup/cairn/appliance/pairer"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/zfs"
	"github.com/cairnbackup/cairn/zfs/embedded"
	"github.com/cairnbackup/cairn/zfs/openzfs"
)

// Pool kinds for Config.PoolKind.
const (
	PoolEmbedded = "embedded"
	PoolOpenZFS  = "openzfs"
)

// Config is everything the appliance needs to start. cmd/cairn-appliance
// fills it from flags; components never read configuration themselves.
type Config struct {
	// HTTP, if set, builds the handler the HTTP listener serves from the
	// REST API's handler (Handler). cairn-appliance mounts the web UI with
	// it, which puts the API behind a login or an API token; without it
	// the API is served as is.
	HTTP func(api http.Handler) (http.Handler, error)
	// DataDir holds the catalog and, for the embedded pool, the pool.
	DataDir string
	// Listen is the HTTP address, e.g. "127.0.0.1:8080".
	Listen string
	// GatewayListen is the agent gateway's address for reverse-mode
	// agents, e.g. ":8443"; "" disables it.
	GatewayListen string
	// Name is the appliance's name, shown by paired agents; default the
	// host name.
	Name string
	// PoolKind is PoolEmbedded (default) or PoolOpenZFS.
	PoolKind string
	// ZFSRoot is the dataset the appliance owns on OpenZFS, e.g. "tank/cairn".
	ZFSRoot string
	// ActivationURL is the vendor's activation service; "" runs an
	// embedded one (data in DataDir/activation) that knows DemoProductKey.
	ActivationURL string
	// ActivationPublicKey verifies a remote service's activations
	// (licensing.FormatPublicKey form); required with ActivationURL.
	ActivationPublicKey string
	// DNSServers ("ip:port") and DNSSearch override /etc/resolv.conf for
	// the Resolve step of pairing.
	DNSServers []string
	DNSSearch  []string
	// HostsFile is consulted before DNS, as the C library does ("hosts:
	// files dns"); "" for none. A missing file is no error.
	HostsFile string
	// NBDHost is the address NBD exports of recovery points listen on
	// (each on a port of its own); "" is 127.0.0.1.
	NBDHost string
	// MaxConcurrentBackups bounds the backups that run at once (0:
	// backup.DefaultMaxConcurrent).
	MaxConcurrentBackups int
	Logger               *slog.Logger
}

// Appliance is the running service.
type Appliance struct {
	cfg     Config
	log     *slog.Logger
	catalog *catalog.Catalog
	pool    zfs.Pool
	id      *identity.Identity
	gw      *gateway.Gateway
	pairer  *pairer.Pairer
	backups *backup.Runner
	nbd     *exports
	started time.Time
	// stopActivation stops the embedded activation service, if any.
	stopActivation func() error
	// activationURL is the activation service in use.
	activationURL string
}

// New opens the catalog and the pool. Close releases them; Run serves.
func New(ctx context.Context, cfg Config) (*Appliance, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("appliance: no data directory")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if cfg.PoolKind == "" {
		cfg.PoolKind = PoolEmbedded
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("appliance: data directory: %w", err)
	}
	cfg.DataDir = dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("appliance: data directory: %w", err)
	}
	if cfg.NBDHost == "" {
		cfg.NBDHost = "127.0.0.1"
	}
	a := &Appliance{cfg: cfg, log: cfg.Logger, nbd: newExports(cfg.NBDHost)}
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()
	secret, err := loadOrCreateSecretKey(filepath.Join(dir, "secret.key"))
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	a.catalog, err = catalog.Open(filepath.Join(dir, "catalog.db"), catalog.Options{Logger: cfg.Logger, SecretKey: secret})
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	if a.pool, err = openPool(ctx, cfg); err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
		a.cfg.Name = cfg.Name
	}
	if a.id, err = identity.LoadOrCreate(filepath.Join(dir, "identity"), cfg.Name); err != nil {
		return nil, fmt.Errorf("appliance: identity: %w", err)
	}
	a.gw, err = gateway.New(gateway.Config{Catalog: a.catalog, Identity: a.id, Name: cfg.Name, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	activator, err := a.startActivation(ctx)
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	dns, err := dnsConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	a.pairer, err = pairer.New(pairer.Config{Catalog: a.catalog, Gateway: a.gw, Pool: a.pool, Activator: activator,
		ApplianceID: a.id.Fingerprint().String(), PublicKey: activator.PublicKey, DNS: dns, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	a.backups, err = backup.New(backup.Config{Catalog: a.catalog, Pool: a.pool, Clients: a.gw,
		MaxConcurrent: cfg.MaxConcurrentBackups, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	if err := a.backups.Recover(ctx); err != nil {
		a.log.Error("recover backups", "err", err)
	}
	ok = true
	return a, nil
}

func openPool(ctx context.Context, cfg Config) (zfs.Pool, error) {
	switch cfg.PoolKind {
	case PoolEmbedded:
		return embedded.Open(embedded.Config{Dir: filepath.Join(cfg.DataDir, "pool"), Logger: cfg.Logger})
	case PoolOpenZFS:
		if cfg.ZFSRoot == "" {
			return nil, errors.New("pool openzfs needs a root dataset (-zfs-root, e.g. tank/cairn)")
		}
		root, err := zfs.ParseDatasetName(cfg.ZFSRoot)
		if err != nil {
			return nil, fmt.Errorf("zfs root: %w", err)
		}
		return openzfs.Open(ctx, openzfs.Config{Root: root, Logger: cfg.Logger})
	default:
		return nil, fmt.Errorf("unknown pool kind %q (want %s or %s)", cfg.PoolKind, PoolEmbedded, PoolOpenZFS)
	}
}

// Close stops the pairings and the backups, closes the agent sessions and the embedded
// activation service, and releases the pool and the catalog.
func (a *Appliance) Close() error {
	var errs []error
	if a.pairer != nil {
		a.pairer.Close()
	}
	if a.nbd != nil {
		errs = append(errs, a.nbd.close(a.pool))
	}
	if a.backups != nil {
		a.backups.Close()
	}
	if a.gw != nil {
		errs = append(errs, a.gw.Close())
	}
	if a.stopActivation != nil {
		errs = append(errs, a.stopActivation())
	}
	if a.pool != nil {
		errs = append(errs, a.pool.Close())
	}
	if a.catalog != nil {
		errs = append(errs, a.catalog.Close())
	}
	return errors.Join(errs...)
}

// Backups is the appliance's backup runner.
func (a *Appliance) Backups() *backup.Runner { return a.backups }

// Gateway is the appliance's agent gateway.
func (a *Appliance) Gateway() *gateway.Gateway { return a.gw }

// Run serves HTTP and the agent gateway until ctx is canceled, then shuts
// down gracefully.
func (a *Appliance) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("appliance: listen: %w", err)
	}
	var gln net.Listener
	if a.cfg.GatewayListen != "" {
		if gln, err = net.Listen("tcp", a.cfg.GatewayListen); err != nil {
			ln.Close()
			return fmt.Errorf("appliance: agent gateway: %w", err)
		}
	}
	return a.Serve(ctx, ln, gln)
}

// Serve is Run on listeners the caller made (tests use port 0); gln may be
// nil for no agent gateway.
func (a *Appliance) Serve(ctx context.Context, ln, gln net.Listener) error {
	a.started = time.Now()
	h := a.Handler()
	if a.cfg.HTTP != nil {
		var err error
		if h, err = a.cfg.HTTP(h); err != nil {
			ln.Close()
			if gln != nil {
				gln.Close()
			}
			return fmt.Errorf("appliance: http handler: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	a.log.Info("cairn appliance running",
		"url", "http://"+ln.Addr().String()+"/",
		"data", a.cfg.DataDir,
		"pool", a.pool.Root().String(), "pool_kind", a.cfg.PoolKind,
		"fingerprint", a.id.Fingerprint().String(), "short", a.id.Fingerprint().Short())
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	gwDone := make(chan struct{})
	gctx, gcancel := context.WithCancel(ctx)
	if gln != nil {
		a.log.Info("agent gateway listening", "addr", gln.Addr().String())
		go func() {
			defer close(gwDone)
			if err := a.gw.Serve(gctx, gln); err != nil {
				errc <- fmt.Errorf("agent gateway: %w", err)
			}
		}()
	} else {
		close(gwDone)
	}
	// Connections the gateway is still handling end before Serve returns,
	// so that Close does not pull the catalog from under them.
	defer func() {
		gcancel()
		<-gwDone
	}()
	if err := a.pairer.Resume(ctx); err != nil {
		a.log.Error("resume pairings", "err", err)
	}
	keepDone := make(chan struct{})
	go func() {
		defer close(keepDone)
		a.gw.KeepDirect(gctx, time.Minute)
	}()
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		a.backups.Run(gctx)
	}()
	defer func() {
		gcancel()
		<-schedDone
	}()
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		a.pairer.RenewLoop(gctx, 10*time.Minute)
	}()
	defer func() {
		gcancel()
		<-renewDone
	}()
	defer func() {
		gcancel()
		<-keepDone
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("appliance: serve: %w", err)
	case <-ctx.Done():
	}
	a.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("appliance: shutdown: %w", err)
	}
	return nil
}

// Handler returns the appliance's HTTP handler.
func (a *Appliance) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	a.routeAPI(mux)
	a.routeV1(mux)
	return mux
}

// Health is the body of /healthz.
type Health struct {
	Status   string `json:"status"` // "ok" or "degraded"
	Pool     string `json:"pool"`
	PoolKind string `json:"pool_kind"`
	// PoolUsed and PoolAvailable are bytes.
	PoolUsed      int64    `json:"pool_used"`
	PoolAvailable int64    `json:"pool_available"`
	Catalog       string   `json:"catalog"` // "ok" or the error
	Uptime        string   `json:"uptime"`
	Problems      []string `json:"problems,omitempty"`
}

// healthz answers 200 when the catalog and the pool respond, 503 otherwise.
func (a *Appliance) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	h := Health{Status: "ok", Pool: a.pool.Root().String(), PoolKind: a.cfg.PoolKind, Catalog: "ok",
		Uptime: time.Since(a.started).Round(time.Second).String()}
	if sp, err := a.pool.Space(ctx); err != nil {
		h.Problems = append(h.Problems, "pool: "+err.Error())
	} else {
		h.PoolUsed, h.PoolAvailable = sp.Used, sp.Available
	}
	if _, err := a.catalog.SchemaVersion(); err != nil {
		h.Catalog = err.Error()
		h.Problems = append(h.Problems, "catalog: "+err.Error())
	}
	code := http.StatusOK
	if len(h.Problems) > 0 {
		h.Status, code = "degraded", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(h)
}
