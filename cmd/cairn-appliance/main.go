// Command cairn-appliance is the Cairn appliance daemon: web wizard and REST
// API, agent gateway, scheduler and storage.
//
//	cairn-appliance [flags]                      run the appliance
//	cairn-appliance token create -agent ID       create an agent token (reverse mode)
//	cairn-appliance setup-token create [-uses N] create a setup token
//	cairn-appliance agents                       list agents and their sessions
//
// The appliance serves its web UI and, behind it, the REST API at -listen.
// The subcommands talk to a running appliance's API (-url) with the API
// token it writes to <data>/api.token at every start (-data, or
// $CAIRN_API_TOKEN).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cairnbackup/cairn/appliance"
	"github.com/cairnbackup/cairn/webui"
)

func main() {
	if ok, code := clientCommand(os.Args[1:]); ok {
		os.Exit(code)
	}
	var cfg appliance.Config
	var level slog.Level
	flag.StringVar(&cfg.DataDir, "data", "./var", "directory for the catalog and the embedded pool")
	flag.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "HTTP listen address")
	flag.StringVar(&cfg.GatewayListen, "gateway", ":8443", "agent gateway address for reverse-mode agents (\"\" disables)")
	flag.StringVar(&cfg.Name, "name", "", "appliance name shown by paired agents (default: host name)")
	flag.StringVar(&cfg.PoolKind, "pool", appliance.PoolEmbedded, "storage pool: embedded or openzfs")
	flag.StringVar(&cfg.ZFSRoot, "zfs-root", "", "with -pool openzfs: the dataset the appliance owns, e.g. tank/cairn")
	flag.StringVar(&cfg.ActivationURL, "activation-url", "", "the vendor's activation service (default: an embedded one that knows the demo product key)")
	flag.StringVar(&cfg.ActivationPublicKey, "activation-pubkey", "", "with -activation-url: the service's public key (cairn-activation public-key)")
	flag.IntVar(&cfg.MaxConcurrentBackups, "max-backups", 2, "backups that run at once; more wait queued")
	var dnsServers, dnsSearch string
	flag.StringVar(&dnsServers, "dns", "", "DNS servers for pairing, ip[:port] comma-separated (default: /etc/resolv.conf)")
	flag.StringVar(&dnsSearch, "dns-search", "", "search domains for pairing by short host name, comma-separated (default: /etc/resolv.conf)")
	flag.StringVar(&cfg.NBDHost, "nbd-host", "127.0.0.1", "address that NBD exports of recovery points listen on (a port each; 0.0.0.0 to attach from other machines)")
	flag.StringVar(&cfg.HostsFile, "hosts", "/etc/hosts", "hosts file consulted before DNS when pairing by name (\"\" for none)")
	flag.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	flag.Parse()
	cfg.DNSServers, cfg.DNSSearch = splitList(dnsServers), splitList(dnsSearch)
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.HTTP = webUI(cfg.DataDir, cfg.Logger)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "cairn-appliance:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg appliance.Config) error {
	a, err := appliance.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}

// webUI mounts the web interface over the REST API, which it then serves
// under /api/ to a logged-in browser or an API token, and writes the
// command line's API token to <data>/api.token.
func webUI(dataDir string, log *slog.Logger) func(http.Handler) (http.Handler, error) {
	return func(api http.Handler) (http.Handler, error) {
		store, err := webui.OpenFileStore(filepath.Join(dataDir, "webui.json"))
		if err != nil {
			return nil, err
		}
		ui, err := webui.New(webui.Config{API: api, Store: store, Logger: log.With("component", "webui")})
		if err != nil {
			return nil, err
		}
		if err := ui.WriteLocalToken(context.Background(), filepath.Join(dataDir, tokenFile)); err != nil {
			return nil, err
		}
		return ui.Handler(), nil
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
