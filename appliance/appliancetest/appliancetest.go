// Package appliancetest runs a real appliance for tests, on loopback, and
// connects the in-process agents of backuptest to its gateway.
package appliancetest

import (
	"context"
	"net"
	"testing"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance"
	"github.com/cairnbackup/cairn/appliance/backup/backuptest"
	"github.com/cairnbackup/cairn/internal/logtest"
)

// New opens an appliance on cfg, closed when the test ends. An empty
// DataDir is a temporary directory; no DNSServers is a closed loopback
// port, so that pairing by name fails fast and never asks the machine's
// resolvers.
func New(t testing.TB, cfg appliance.Config) *appliance.Appliance {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.DNSServers == nil {
		cfg.DNSServers = []string{"127.0.0.1:1"}
	}
	a, err := appliance.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// Served is an appliance serving HTTP and its agent gateway on loopback.
type Served struct {
	*appliance.Appliance
	URL     string // http://127.0.0.1:port
	Gateway string // host:port of the agent gateway
}

// Serve opens an appliance (as New) and runs it (Serve: HTTP, gateway,
// scheduler) until the test ends. Its scheduler runs: agents paired for
// a test should have a schedule that does not fire during it.
func Serve(t testing.TB, cfg appliance.Config) *Served {
	t.Helper()
	a := New(t, cfg)
	ln, gln := listen(t), listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln, gln) }()
	t.Cleanup(func() { // before the appliance closes
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &Served{Appliance: a, URL: "http://" + ln.Addr().String(), Gateway: gln.Addr().String()}
}

// ServeGateway serves only a's agent gateway on loopback (no HTTP, no
// scheduler) until the test ends, and returns its address.
func ServeGateway(t testing.TB, a *appliance.Appliance) string {
	t.Helper()
	gln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Gateway().Serve(ctx, gln) }()
	t.Cleanup(func() { // before the appliance closes, after the agents left
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return gln.Addr().String()
}

// ConnectAgent makes an agent token for agentID and connects an
// in-process agent with it to the gateway at gw, with one volume "sda"
// holding vol (nil: a 1 MiB sparse image); it returns once the appliance
// has the agent's session.
func ConnectAgent(t testing.TB, a *appliance.Appliance, gw, agentID string, vol []byte) *backuptest.Agent {
	t.Helper()
	tok, err := a.Gateway().CreateAgentToken(context.Background(), agentID, "test")
	if err != nil {
		t.Fatal(err)
	}
	if vol == nil {
		vol = backuptest.SparseImage(1<<20, agentv1.DefaultBlockSize, 3)
	}
	ag := backuptest.New(t)
	ag.SetVolume("sda", vol)
	ag.Connect(t, gw, tok)
	logtest.WaitFor(t, "the agent's session", func() bool { _, err := a.Gateway().Client(agentID); return err == nil })
	return ag
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
