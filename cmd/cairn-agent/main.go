// Command cairn-agent runs on a protected machine and serves the agent API
// to the appliance it is paired with.
//
//	cairn-agent [run] [flags]   run the agent (the default)
//	cairn-agent unpair [flags]  forget the pinned appliance
//	cairn-agent fingerprint     print the agent's key fingerprint
//
// Configuration comes from flags, agent.conf next to the binary, and the
// environment (CAIRN_AGENT_TOKEN, CAIRN_SETUP_TOKEN, CAIRN_APPLIANCE,
// CAIRN_AGENT_VOLUMES), which wins over agent.conf; flags win over both. Exit codes: 0 done, 1 runtime failure, 2 bad
// configuration (fix it; restarting will not help).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/cairnbackup/cairn/agent"
	"github.com/cairnbackup/cairn/pairing/identity"
)

var version = "dev"

// memoryLimit is the agent's soft memory limit unless GOMEMLIMIT sets one:
// an agent shares its machine with the workload it protects, and its
// backups need a few MiB of blocks in flight whatever the volume's size.
const memoryLimit = 40 << 20

const (
	exitFailure = 1
	exitConfig  = 2
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	cmd := "run"
	if len(args) > 0 && (args[0] == "run" || args[0] == "unpair" || args[0] == "fingerprint") {
		cmd, args = args[0], args[1:]
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cairn-agent:", err)
		return exitFailure
	}
	exeDir := filepath.Dir(exe)
	fc, err := agent.ReadFileConfig(exeDir, os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cairn-agent:", err)
		return exitConfig
	}
	fs := flag.NewFlagSet("cairn-agent "+cmd, flag.ContinueOnError)
	stateDir := fs.String("state", or(fc.StateDir, filepath.Join(exeDir, "state")), "state directory (key, pinned appliance)")
	listen := fs.String("listen", fc.Listen, "direct-mode listen address (default "+agent.DefaultListen+" unless an appliance is configured; \"off\" disables)")
	appliance := fs.String("appliance", fc.Appliance, "reverse mode: the appliance's agent gateway, host[:port] (port "+agent.DefaultGatewayPort+" by default)")
	handshake := fs.Duration("handshake-timeout", 0, "bound on an appliance's TLS handshake (default 10s)")
	writers := fs.String("vss-writers-file", "", "report the VSS writers of this saved \"vssadmin list writers\" output instead of asking VSS (support, tests)")
	var volumes []string
	fs.Func("volume", "an image file or block device to protect, read as is (repeat for more; replaces the volumes of agent.conf and $"+agent.EnvVolumes+")", func(v string) error {
		if v == "" {
			return errors.New("empty path")
		}
		volumes = append(volumes, v)
		return nil
	})
	preScript := fs.String("pre-script", fc.PreScript, "executable run before each volume's snapshot; a failure fails the backup")
	postScript := fs.String("post-script", fc.PostScript, "executable run after each volume's snapshot (after the read for image volumes), always")
	scriptTimeout := fs.Duration("script-timeout", fc.ScriptTimeout, "bound on each pre and post script (default 5m)")
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	switch cmd {
	case "unpair":
		pin, ok, err := agent.Unpair(*stateDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cairn-agent unpair:", err)
			return exitFailure
		}
		if !ok {
			fmt.Println("not paired")
			return 0
		}
		fmt.Printf("unpaired from appliance %s (%s); the next appliance to pair will be pinned.\nRestart the agent service to close a live session.\n", pin.Name, pin.Fingerprint.Short())
		return 0
	case "fingerprint":
		host, _ := os.Hostname()
		id, err := identity.LoadOrCreate(*stateDir, host)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cairn-agent:", err)
			return exitFailure
		}
		fmt.Printf("%s\n%s\n", id.Fingerprint().Short(), id.Fingerprint())
		return 0
	}

	tok, setup, err := fc.Tokens(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cairn-agent:", err)
		return exitConfig
	}
	if volumes == nil {
		volumes = fc.Volumes
	}
	cfg := agent.Config{
		StateDir: *stateDir, Listen: *listen, Appliance: agent.GatewayAddress(*appliance),
		Token: tok, SetupToken: setup, Version: version, HandshakeTimeout: *handshake, WritersFile: *writers,
		Volumes: volumes, PreScript: *preScript, PostScript: *postScript, ScriptTimeout: *scriptTimeout,
	}
	switch {
	case cfg.Listen == "off":
		cfg.Listen = ""
	case cfg.Listen == "" && cfg.Appliance == "":
		cfg.Listen = agent.DefaultListen
	}
	a, err := agent.New(cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cairn-agent:", err)
		var ce *agent.ConfigError
		if errors.As(err, &ce) {
			return exitConfig
		}
		return exitFailure
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx); err != nil {
		log.Error("cairn-agent stopped", "err", err)
		var ce *agent.ConfigError
		if errors.As(err, &ce) {
			return exitConfig
		}
		return exitFailure
	}
	return 0
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
