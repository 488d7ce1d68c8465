// Command cairn-appliance is the Cairn appliance daemon: web wizard and REST
// API, agent gateway, scheduler and storage.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/cairnbackup/cairn/appliance"
)

func main() {
	var cfg appliance.Config
	var level slog.Level
	flag.StringVar(&cfg.DataDir, "data", "./var", "directory for the catalog and the embedded pool")
	flag.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "HTTP listen address")
	flag.StringVar(&cfg.PoolKind, "pool", appliance.PoolEmbedded, "storage pool: embedded or openzfs")
	flag.StringVar(&cfg.ZFSRoot, "zfs-root", "", "with -pool openzfs: the dataset the appliance owns, e.g. tank/cairn")
	flag.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	flag.Parse()
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

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
