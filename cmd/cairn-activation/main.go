// Command cairn-activation is the vendor's activation service and its admin
// CLI: product keys, seats, and activations signed with the service's
// Ed25519 key.
//
//	cairn-activation serve -data DIR [-listen 127.0.0.1:8081] [-ttl 720h]
//	cairn-activation key create -data DIR -edition std -seats 5 -expires 2027-12-31
//	cairn-activation key list -data DIR
//	cairn-activation key show -data DIR KEYID
//	cairn-activation key revoke -data DIR [-reason TEXT] KEYID
//	cairn-activation activation release -data DIR -key KEYID -agent FP -reason TEXT
//	cairn-activation public-key -data DIR
//
// serve makes the signing key in DIR on first start (signing.key, mode 0600)
// and logs its public key, which appliances are configured with. The admin
// commands work on the store in DIR: through the running service's admin
// socket (DIR/admin.sock) if it runs, on the store file directly otherwise.
// Exit codes: 0 done, 1 failure, 2 usage error.
package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cairnbackup/cairn/licensing"
	"github.com/cairnbackup/cairn/licensing/server"
)

const (
	exitFailure = 1
	exitUsage   = 2
)

const defaultData = "/var/lib/cairn-activation"

const usage = `usage:
  cairn-activation serve -data DIR [-listen 127.0.0.1:8081] [-ttl 720h]
  cairn-activation key create -data DIR -edition EDITION -seats N -expires YYYY-MM-DD
  cairn-activation key list -data DIR
  cairn-activation key show -data DIR KEYID
  cairn-activation key revoke -data DIR [-reason TEXT] KEYID
  cairn-activation activation release -data DIR -key KEYID -agent FINGERPRINT -reason TEXT
  cairn-activation public-key -data DIR
`

// errUsage marks an error as the user's: exit code 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command in args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return exitUsage
	case errors.Is(err, errUsage) || errors.Is(err, server.ErrInvalidArgument):
		fmt.Fprintln(stderr, "cairn-activation:", strings.TrimPrefix(err.Error(), "usage: "))
		return exitUsage
	}
	fmt.Fprintln(stderr, "cairn-activation:", err)
	return exitFailure
}

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageErr("no command")
	}
	cmd, rest := args[0], args[1:]
	if (cmd == "key" || cmd == "activation") && len(rest) > 0 {
		cmd, rest = cmd+" "+rest[0], rest[1:]
	}
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest, stderr)
	case "key create":
		return cmdKeyCreate(ctx, rest, stdout, stderr)
	case "key list":
		return cmdKeyList(ctx, rest, stdout, stderr)
	case "key show":
		return cmdKeyShow(ctx, rest, stdout, stderr)
	case "key revoke":
		return cmdKeyRevoke(ctx, rest, stdout, stderr)
	case "activation release":
		return cmdRelease(ctx, rest, stdout, stderr)
	case "public-key":
		return cmdPublicKey(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageErr("unknown command %q", cmd)
}

// newFlags returns a flag set for cmd with the -data flag.
func newFlags(cmd string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("cairn-activation "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", defaultData, "data directory of the activation service")
	return fs, data
}

// parse parses args into fs, with flags before or after the positional
// arguments, and returns exactly npos positional arguments.
func parse(fs *flag.FlagSet, args []string, npos int) ([]string, error) {
	var pos []string
	for range len(args) + 1 {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErr("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if len(pos) != npos {
		return nil, usageErr("%s takes %d argument(s), got %d", fs.Name(), npos, len(pos))
	}
	return pos, nil
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs, data := newFlags("serve", stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address of the activation API")
	ttl := fs.Duration("ttl", server.DefaultActivationTTL, "how long an activation lasts unless renewed")
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *ttl <= 0 {
		return usageErr("-ttl must be positive")
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	svc, err := server.Listen(server.ServiceConfig{Dir: *data, Listen: *listen, Logger: log, ActivationTTL: *ttl})
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}

// openAdmin opens the admin operations on the data directory.
func openAdmin(data string, create bool) (server.Admin, func() error, error) {
	return server.OpenAdmin(data, create)
}

// actor names the admin in the audit log: the user who runs the command.
func actor() string {
	if u := os.Getenv("SUDO_USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

// parseExpiry reads -expires: a date (the key is valid through that day,
// UTC) or an RFC 3339 time.
func parseExpiry(s string) (time.Time, error) {
	if d, err := time.Parse(time.DateOnly, s); err == nil {
		return d.AddDate(0, 0, 1), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, usageErr("-expires %q is not a date (YYYY-MM-DD) or an RFC 3339 time", s)
}

func cmdKeyCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, data := newFlags("key create", stderr)
	edition := fs.String("edition", "", "edition of the key, e.g. std")
	seats := fs.Int("seats", 0, "how many agents the key may activate at a time")
	expires := fs.String("expires", "", "last day of the key's term, YYYY-MM-DD (UTC), or an RFC 3339 time")
	who := fs.String("actor", actor(), "who creates the key, for the audit log")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *edition == "" || *seats == 0 || *expires == "" {
		return usageErr("key create needs -edition, -seats and -expires")
	}
	exp, err := parseExpiry(*expires)
	if err != nil {
		return err
	}
	adm, closeAdm, err := openAdmin(*data, true)
	if err != nil {
		return err
	}
	defer closeAdm()
	key, info, err := adm.CreateKey(ctx, server.CreateKeyRequest{Edition: *edition, Seats: *seats, Expires: exp, Actor: *who})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Product key (shown once, not stored; give it to the customer):\n\n    %s\n\n", key.Reveal())
	printKey(stdout, info)
	return nil
}

func cmdKeyList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, data := newFlags("key list", stderr)
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	adm, closeAdm, err := openAdmin(*data, false)
	if err != nil {
		return err
	}
	defer closeAdm()
	keys, err := adm.ListKeys(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tEDITION\tSTATE\tSEATS\tUSED\tEXPIRES\tCREATED")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", k.ID, k.Edition, k.State, k.Seats, k.Used, date(k.Expires), date(k.Created))
	}
	return tw.Flush()
}

func cmdKeyShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, data := newFlags("key show", stderr)
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	adm, closeAdm, err := openAdmin(*data, false)
	if err != nil {
		return err
	}
	defer closeAdm()
	d, err := adm.ShowKey(ctx, pos[0])
	if err != nil {
		return err
	}
	printKey(stdout, d.Key)
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tAPPLIANCE\tHOSTNAME\tACTIVATED\tEXPIRES\tSTATE")
	for _, a := range d.Activations {
		state := "active"
		if !a.Active() {
			state = "released by " + a.ReleasedBy + " " + date(a.Released)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.AgentFingerprint, a.ApplianceID, a.Hostname, date(a.Activated), date(a.Expires), state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nAudit:")
	for _, r := range d.Audit {
		line := fmt.Sprintf("  %s  %s", r.Time.UTC().Format(time.RFC3339), r.Action)
		for _, f := range []struct{ k, v string }{{"agent", r.AgentFingerprint}, {"appliance", r.ApplianceID}, {"by", r.Actor}, {"reason", r.Reason}} {
			if f.v != "" {
				line += fmt.Sprintf("  %s=%q", f.k, f.v)
			}
		}
		fmt.Fprintln(stdout, line)
	}
	return nil
}

func cmdKeyRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, data := newFlags("key revoke", stderr)
	reason := fs.String("reason", "", "why, for the audit log")
	who := fs.String("actor", actor(), "who revokes the key, for the audit log")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	adm, closeAdm, err := openAdmin(*data, false)
	if err != nil {
		return err
	}
	defer closeAdm()
	info, err := adm.RevokeKey(ctx, pos[0], *who, *reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked key %s; its %d active agent(s) lose their license at their appliance's next renewal\n", info.ID, info.Used)
	return nil
}

func cmdRelease(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, data := newFlags("activation release", stderr)
	keyID := fs.String("key", "", "key ID (not the key)")
	agent := fs.String("agent", "", "the agent's fingerprint")
	reason := fs.String("reason", "", "why, for the audit log (required)")
	who := fs.String("actor", actor(), "who releases it, for the audit log")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *keyID == "" || *agent == "" || *reason == "" {
		return usageErr("activation release needs -key, -agent and -reason")
	}
	adm, closeAdm, err := openAdmin(*data, false)
	if err != nil {
		return err
	}
	defer closeAdm()
	a, err := adm.ForceRelease(ctx, server.ForceReleaseRequest{KeyID: *keyID, AgentFingerprint: *agent, Actor: *who, Reason: *reason})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "released agent %s from appliance %s (key %s); it may now be activated on another appliance\n",
		a.AgentFingerprint, a.ApplianceID, a.KeyID)
	return nil
}

func cmdPublicKey(args []string, stdout, stderr io.Writer) error {
	fs, data := newFlags("public-key", stderr)
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	priv, err := server.LoadSigningKey(filepath.Join(*data, server.SigningKeyFileName))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no signing key in %s: `cairn-activation serve -data %s` makes one on first start", *data, *data)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, licensing.FormatPublicKey(priv.Public().(ed25519.PublicKey)))
	return nil
}

func printKey(w io.Writer, k server.KeyInfo) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "key id\t%s\n", k.ID)
	fmt.Fprintf(tw, "edition\t%s\n", k.Edition)
	fmt.Fprintf(tw, "state\t%s\n", k.State)
	if k.State == licensing.KeyRevoked {
		fmt.Fprintf(tw, "revoked\t%s %s\n", k.Revoked.UTC().Format(time.RFC3339), k.RevokeReason)
	}
	fmt.Fprintf(tw, "seats\t%d used of %d\n", k.Used, k.Seats)
	fmt.Fprintf(tw, "expires\t%s\n", k.Expires.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "created\t%s\n", k.Created.UTC().Format(time.RFC3339))
	_ = tw.Flush()
}

func date(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.DateOnly)
}
