package appliance

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cairnbackup/cairn/internal/durable"
	"github.com/cairnbackup/cairn/licensing"
	"github.com/cairnbackup/cairn/licensing/server"
	"github.com/cairnbackup/cairn/pairing/resolve"
)

// DemoProductKey is known to the embedded activation service that an
// appliance without -activation-url runs, so that a new user can pair at
// once (5 seats, "demo" edition). Production appliances use the vendor's
// service, which does not know it.
const DemoProductKey = "BFBPF-51RGX-B1MXQ-BGGFQ-Z9PDE"

// startActivation returns the activation client: for the vendor's service
// when configured, else for an embedded service it starts on loopback.
func (a *Appliance) startActivation(ctx context.Context) (*licensing.Client, error) {
	httpc := &http.Client{Timeout: 30 * time.Second}
	if a.cfg.ActivationURL != "" {
		if a.cfg.ActivationPublicKey == "" {
			return nil, errors.New("an activation service URL needs its public key (-activation-pubkey)")
		}
		pub, err := licensing.ParsePublicKey(a.cfg.ActivationPublicKey)
		if err != nil {
			return nil, fmt.Errorf("activation public key: %w", err)
		}
		a.activationURL = a.cfg.ActivationURL
		return &licensing.Client{BaseURL: a.cfg.ActivationURL, HTTP: httpc, PublicKey: pub}, nil
	}
	svc, err := server.Listen(server.ServiceConfig{Dir: filepath.Join(a.cfg.DataDir, "activation"), Listen: "127.0.0.1:0",
		Logger: a.log.With("component", "activation")})
	if err != nil {
		return nil, err
	}
	key, err := licensing.ParseKey(DemoProductKey)
	if err != nil {
		return nil, err
	}
	_, _, err = svc.Store().CreateKey(ctx, server.CreateKeyRequest{Edition: "demo", Seats: 5,
		Expires: time.Now().AddDate(10, 0, 0).Truncate(time.Second), Actor: "appliance", Key: key})
	if err != nil && !errors.Is(err, server.ErrExists) {
		return nil, fmt.Errorf("demo product key: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	a.stopActivation = func() error {
		cancel()
		return <-done
	}
	a.activationURL = "http://" + svc.Addr().String()
	a.log.Info("embedded activation service running", "url", a.activationURL, "demo_product_key", DemoProductKey)
	return &licensing.Client{BaseURL: a.activationURL, HTTP: httpc, PublicKey: svc.PublicKey()}, nil
}

// loadOrCreateSecretKey reads the key that seals the catalog's secrets, or
// makes one (32 random bytes, mode 0600).
func loadOrCreateSecretKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(b) != 32 {
			return nil, fmt.Errorf("%s: %d bytes, want 32", path, len(b))
		}
		if info, err := os.Stat(path); err == nil && info.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%s: mode %v: others may read it; chmod 600", path, info.Mode().Perm())
		}
		return b, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := durable.Replace(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	return b, nil
}

// dnsConfig is the Resolve step's resolver: /etc/resolv.conf, with the
// servers and search domains of the configuration, if any, instead.
func dnsConfig(cfg Config) (resolve.Config, error) {
	rc, err := resolve.FromResolvConf("/etc/resolv.conf")
	if err != nil && len(cfg.DNSServers) == 0 {
		rc = resolve.Config{} // pairing by IP still works; Resolve says what is missing
	}
	if len(cfg.DNSServers) > 0 {
		rc.Servers = cfg.DNSServers
	}
	if len(cfg.DNSSearch) > 0 {
		rc.Search = cfg.DNSSearch
	}
	if rc.Timeout == 0 || rc.Timeout > 5*time.Second {
		rc.Timeout = 2 * time.Second
	}
	if cfg.HostsFile != "" {
		h, err := resolve.ReadHosts(cfg.HostsFile)
		switch {
		case err == nil:
			rc.Hosts = h
		case !errors.Is(err, fs.ErrNotExist):
			return resolve.Config{}, err
		}
	}
	return rc, nil
}
