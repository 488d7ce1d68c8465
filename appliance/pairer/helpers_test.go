package pairer

// Test fixtures: only real parts. An activation service (licensing/server
// over a real store) behind httptest on 127.0.0.1 with a real
// licensing.Client; a DNS zone served with miekg/dns on 127.0.0.1; an
// appliance made of a bbolt catalog with a secret key, an embedded pool in
// a temporary directory, a gateway and a Pairer; agents (agent.Agent) run
// in-process on 127.0.0.1. No test sleeps to synchronise: they wait with
// Pairer.Wait under a bounded context, or poll a condition with a deadline
// (logtest.WaitFor).

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cairnbackup/cairn/agent"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/gateway"
	"github.com/cairnbackup/cairn/internal/logtest"
	"github.com/cairnbackup/cairn/licensing"
	"github.com/cairnbackup/cairn/licensing/server"
	"github.com/cairnbackup/cairn/pairing"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/resolve"
	"github.com/cairnbackup/cairn/pairing/token"
	"github.com/cairnbackup/cairn/zfs"
	"github.com/cairnbackup/cairn/zfs/embedded"
)

// waitTimeout bounds every wait for something that should happen.
const waitTimeout = logtest.Timeout

// ---- activation service ----

// service is a real activation service on 127.0.0.1.
type service struct {
	t      *testing.T
	store  *server.Store
	hs     *httptest.Server
	pub    ed25519.PublicKey
	client *licensing.Client
}

func newService(t *testing.T) *service {
	t.Helper()
	st, err := server.Open(filepath.Join(t.TempDir(), "activation.db"), server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: st, SigningKey: priv})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	pub := srv.PublicKey()
	return &service{t: t, store: st, hs: hs, pub: pub,
		client: &licensing.Client{BaseURL: hs.URL, PublicKey: pub, HTTP: hs.Client()}}
}

// key creates a product key with seats.
func (s *service) key(seats int) licensing.Key {
	s.t.Helper()
	k, _, err := s.store.CreateKey(context.Background(), server.CreateKeyRequest{Edition: "std", Seats: seats,
		Expires: time.Now().AddDate(1, 0, 0), Actor: "test"})
	if err != nil {
		s.t.Fatal(err)
	}
	return k
}

// revoke revokes a key.
func (s *service) revoke(k licensing.Key) {
	s.t.Helper()
	if _, err := s.store.RevokeKey(context.Background(), k.ID(), "test", "test revocation"); err != nil {
		s.t.Fatal(err)
	}
}

// used returns the key's used seats as the service reports them.
func (s *service) used(k licensing.Key, applianceID string) int {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	st, err := s.client.Status(ctx, licensing.StatusRequest{Key: k, ApplianceID: applianceID})
	if err != nil {
		s.t.Fatal(err)
	}
	return st.Used
}

// ---- DNS ----

// zone is a DNS zone served on 127.0.0.1: FQDN → IPv4 address, with PTR
// records naming every name of an address, and rcodes forced per name.
type zone struct {
	mu    sync.Mutex
	a     map[string]string // FQDN (lower case, trailing dot) → address
	rcode map[string]int    // FQDN → forced rcode
}

func newZone() *zone { return &zone{a: make(map[string]string), rcode: make(map[string]int)} }

func (z *zone) add(name, addr string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.a[dns.Fqdn(strings.ToLower(name))] = addr
}

func (z *zone) fail(name string, rcode int) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.rcode[dns.Fqdn(strings.ToLower(name))] = rcode
}

func (z *zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z.mu.Lock()
	defer z.mu.Unlock()
	if rc, ok := z.rcode[name]; ok {
		m.Rcode = rc
		w.WriteMsg(m)
		return
	}
	found := false
	if addr, ok := z.a[name]; ok {
		found = true // AAAA: NOERROR without an answer
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(addr)})
		}
	}
	for n, addr := range z.a {
		if rev, _ := dns.ReverseAddr(addr); strings.EqualFold(rev, name) {
			found = true
			if q.Qtype == dns.TypePTR {
				m.Answer = append(m.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 60}, Ptr: n})
			}
		}
	}
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

// startDNS serves h on a UDP port of 127.0.0.1 and returns its address.
func startDNS(t *testing.T, h dns.Handler) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	select {
	case <-started:
	case <-time.After(waitTimeout):
		t.Fatal("DNS server did not start")
	}
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// silentDNS is a UDP socket on 127.0.0.1 that reads queries and never
// answers them.
func silentDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().String()
}

// testDomain is the search domain of the test zones.
const testDomain = "corp.test"

// dnsConfig is a resolver configuration for the servers, with the test
// search domain and short timeouts.
func dnsConfig(servers ...string) resolve.Config {
	return resolve.Config{Servers: servers, Search: []string{testDomain}, Timeout: 2 * time.Second, Attempts: 2}
}

// ---- appliance ----

// testAppliance is an appliance: catalog, pool, gateway and Pairer.
type testAppliance struct {
	t       *testing.T
	name    string
	svc     *service
	dns     resolve.Config
	dir     string
	secret  []byte
	id      *identity.Identity
	cat     *catalog.Catalog
	pool    *embedded.Pool
	gw      *gateway.Gateway
	p       *Pairer
	logs    *logtest.Sink
	gwAddr  string // of its reverse-mode gateway, once serveGateway was called
	stopGW  func()
	closeFn func()
	// tweak may change the Pairer's configuration before New.
	tweak func(*Config)
}

// newAppliance starts an appliance that activates with svc and resolves
// with dnsCfg.
func newAppliance(t *testing.T, name string, svc *service, dnsCfg resolve.Config) *testAppliance {
	t.Helper()
	secret := make([]byte, catalog.SecretKeySize)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	id, err := identity.New(name)
	if err != nil {
		t.Fatal(err)
	}
	a := &testAppliance{t: t, name: name, svc: svc, dns: dnsCfg, dir: t.TempDir(), secret: secret, id: id,
		logs: logtest.NewSink(t, "appliance "+name)}
	a.open()
	t.Cleanup(func() { a.close() })
	return a
}

// open opens the catalog and pool in a.dir and starts the gateway and the
// Pairer (no Resume).
func (a *testAppliance) open() {
	t := a.t
	t.Helper()
	cat, err := catalog.Open(filepath.Join(a.dir, "catalog.db"), catalog.Options{SecretKey: a.secret})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := embedded.Open(embedded.Config{Dir: filepath.Join(a.dir, "pool"), Name: "tank"})
	if err != nil {
		cat.Close()
		t.Fatal(err)
	}
	log := a.logs.Logger()
	gw, err := gateway.New(gateway.Config{Catalog: cat, Identity: a.id, Name: a.name, Logger: log.With("part", "gateway"),
		HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Catalog: cat, Gateway: gw, Pool: pool, Activator: a.svc.client, ApplianceID: a.applianceID(),
		PublicKey: a.svc.pub, DNS: a.dns, Logger: log.With("part", "pairer")}
	if a.tweak != nil {
		a.tweak(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.cat, a.pool, a.gw, a.p = cat, pool, gw, p
	closed := false
	a.closeFn = func() {
		if closed {
			return
		}
		closed = true
		p.Close()
		if a.stopGW != nil {
			a.stopGW()
			a.stopGW = nil
		}
		gw.Close()
		if err := pool.Close(); err != nil {
			t.Errorf("close pool: %v", err)
		}
		if err := cat.Close(); err != nil {
			t.Errorf("close catalog: %v", err)
		}
	}
}

func (a *testAppliance) close() { a.closeFn() }

// restart stops the appliance as a process stop would (the Pairer, the
// sessions, the catalog and the pool), opens everything again from its
// data directory, and resumes the pairings.
func (a *testAppliance) restart() {
	a.t.Helper()
	a.reopen()
	if err := a.p.Resume(context.Background()); err != nil {
		a.t.Fatal(err)
	}
}

// reopen stops the appliance and opens it again, without Resume.
func (a *testAppliance) reopen() {
	a.t.Helper()
	a.close()
	a.open()
}

func (a *testAppliance) applianceID() string { return a.id.Fingerprint().String() }

// serveGateway serves the reverse-mode gateway on 127.0.0.1.
func (a *testAppliance) serveGateway() string {
	t := a.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	gw := a.gw
	go func() { done <- gw.Serve(ctx, ln) }()
	a.stopGW = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway Serve: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("gateway Serve did not return")
		}
	}
	a.gwAddr = ln.Addr().String()
	return a.gwAddr
}

// start starts a pairing and fails the test if it is refused.
func (a *testAppliance) start(req Request) Pairing {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pr, err := a.p.Start(ctx, req)
	if err != nil {
		a.t.Fatalf("Start(%+v): %v", req, err)
	}
	return pr
}

// wait waits (bounded) until a pairing is no longer running.
func (a *testAppliance) wait(id uint64) Pairing {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	pr, err := a.p.Wait(ctx, id)
	if err != nil {
		a.t.Fatalf("Wait(%d): %v; pairing %s", id, err, pr.dump())
	}
	return pr
}

// pair starts a pairing and waits until it is no longer running.
func (a *testAppliance) pair(req Request) Pairing {
	a.t.Helper()
	return a.wait(a.start(req).ID)
}

// view runs fn in a read transaction of the catalog.
func (a *testAppliance) view(fn func(tx *catalog.Tx) error) {
	a.t.Helper()
	if err := a.cat.View(context.Background(), fn); err != nil {
		a.t.Fatal(err)
	}
}

// agent returns an agent's record; ok false if there is none.
func (a *testAppliance) agent(id string) (rec catalog.Agent, ok bool) {
	a.t.Helper()
	err := a.cat.View(context.Background(), func(tx *catalog.Tx) error {
		var err error
		rec, err = tx.Agent(id)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.Agent{}, false
	}
	if err != nil {
		a.t.Fatal(err)
	}
	return rec, true
}

// sealed returns a sealed secret; ok false if there is none.
func (a *testAppliance) sealed(name string) (value string, ok bool) {
	a.t.Helper()
	var b []byte
	err := a.cat.View(context.Background(), func(tx *catalog.Tx) error {
		var err error
		b, err = tx.Secret(name)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) {
		return "", false
	}
	if err != nil {
		a.t.Fatal(err)
	}
	return string(b), true
}

// activation returns an agent's stored activation; ok false if none.
func (a *testAppliance) activation(agentID string) (act catalog.Activation, ok bool) {
	a.t.Helper()
	err := a.cat.View(context.Background(), func(tx *catalog.Tx) error {
		var err error
		act, err = tx.Activation(agentID)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.Activation{}, false
	}
	if err != nil {
		a.t.Fatal(err)
	}
	return act, true
}

// settings returns an agent's stored settings; ok false if none.
func (a *testAppliance) settings(agentID string) (s catalog.Settings, ok bool) {
	a.t.Helper()
	err := a.cat.View(context.Background(), func(tx *catalog.Tx) error {
		var err error
		s, err = tx.Settings(agentID)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.Settings{}, false
	}
	if err != nil {
		a.t.Fatal(err)
	}
	return s, true
}

// pairingsOf returns the stored pairings of an agent.
func (a *testAppliance) pairingsOf(agentID string) []catalog.Pairing {
	a.t.Helper()
	var ps []catalog.Pairing
	a.view(func(tx *catalog.Tx) error {
		var err error
		ps, err = tx.PairingsOf(agentID)
		return err
	})
	return ps
}

// datasetName is the agent's dataset name in the pool.
func (a *testAppliance) datasetName(agentID string) zfs.DatasetName {
	a.t.Helper()
	ds, err := zfs.AgentDataset(a.pool.Root(), agentID)
	if err != nil {
		a.t.Fatal(err)
	}
	return ds
}

// hasDataset reports whether the agent's dataset exists in the pool.
func (a *testAppliance) hasDataset(agentID string) bool {
	a.t.Helper()
	_, err := a.pool.Dataset(context.Background(), a.datasetName(agentID))
	switch {
	case err == nil:
		return true
	case errors.Is(err, zfs.ErrNotFound):
		return false
	}
	a.t.Fatal(err)
	return false
}

// connected reports whether the agent has a live session.
func (a *testAppliance) connected(agentID string) bool {
	for _, s := range a.gw.Connected() {
		if s.AgentID == agentID {
			return true
		}
	}
	return false
}

// auditActions lists the audit log's actions about target.
func (a *testAppliance) auditActions(target string) []string {
	a.t.Helper()
	var out []string
	a.view(func(tx *catalog.Tx) error {
		evs, err := tx.AuditLog(0, 0)
		for _, e := range evs {
			if e.Target == target {
				out = append(out, e.Action)
			}
		}
		return err
	})
	return out
}

// ---- agents ----

// testAgent is a real agent.Agent run in-process on 127.0.0.1.
type testAgent struct {
	*agent.Agent
	dir  string
	addr string // of its direct-mode listener
	port int
	logs *logtest.Sink
	stop func()
}

// startAgent runs a direct-mode agent on a new state directory, listening
// on 127.0.0.1:0; tweak may change its configuration.
func startAgent(t *testing.T, tweak func(*agent.Config)) *testAgent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startAgentOn(t, ln, t.TempDir(), tweak)
}

// startAgentOn runs a direct-mode agent with state in dir on ln.
func startAgentOn(t *testing.T, ln net.Listener, dir string, tweak func(*agent.Config)) *testAgent {
	t.Helper()
	cfg := agent.Config{StateDir: dir, Listen: ln.Addr().String(), HandshakeTimeout: 5 * time.Second, Version: "test"}
	if tweak != nil {
		tweak(&cfg)
	}
	logs := logtest.NewSink(t, "agent "+ln.Addr().String())
	a, err := agent.New(cfg, logs.Logger())
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ServeDirect(ctx, ln) }()
	ta := &testAgent{Agent: a, dir: dir, addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port, logs: logs}
	var once sync.Once
	ta.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("agent: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("agent did not stop within %s", waitTimeout)
			}
		})
	}
	t.Cleanup(ta.stop)
	return ta
}

// startReverseAgent runs a reverse-mode agent with tok against the
// gateway at addr.
func startReverseAgent(t *testing.T, addr string, tok token.AgentToken) *testAgent {
	t.Helper()
	dir := t.TempDir()
	logs := logtest.NewSink(t, "reverse agent")
	a, err := agent.New(agent.Config{StateDir: dir, Appliance: addr, Token: &tok,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Version: "test"}, logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	ta := &testAgent{Agent: a, dir: dir, logs: logs}
	var once sync.Once
	ta.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("agent Run: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("agent did not stop within %s", waitTimeout)
			}
		})
	}
	t.Cleanup(ta.stop)
	return ta
}

// freePort returns a port of 127.0.0.1 that nothing listens on (it was
// free a moment ago).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// ---- pairings ----

// step returns a pairing's step by name.
func (pr Pairing) step(name string) pairing.StepResult {
	for _, s := range pr.Steps {
		if s.Step == name {
			return s
		}
	}
	return pairing.StepResult{}
}

// dump is a pairing's steps, for failure messages.
func (pr Pairing) dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d %s (%s, agent %s):", pr.ID, pr.State, pr.Target, pr.AgentID)
	for _, s := range pr.Steps {
		fmt.Fprintf(&b, "\n  %s: %s %s %q remedy %q (attempts %d)", s.Step, s.Status, s.Code, s.Detail, s.Remedy, s.Attempts)
	}
	return b.String()
}

// stepData decodes a step's Data (a JSON object once stored) into v.
func stepData(t *testing.T, s pairing.StepResult, v any) {
	t.Helper()
	b, err := json.Marshal(s.Data)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("step %s data %s: %v", s.Step, b, err)
	}
}

// wantState fails unless the pairing is in state.
func wantState(t *testing.T, pr Pairing, state string) {
	t.Helper()
	if pr.State != state {
		t.Fatalf("pairing state %q, want %q; %s", pr.State, state, pr.dump())
	}
}

// wantStep checks a step's status and code and that its detail and remedy
// mention each of the words given (detail words, then remedy words after
// a "remedy:" marker).
func wantStep(t *testing.T, pr Pairing, name string, status pairing.Status, code string, words ...string) pairing.StepResult {
	t.Helper()
	s := pr.step(name)
	if s.Status != status || s.Code != code {
		t.Fatalf("step %s: %s %q, want %s %q; %s", name, s.Status, s.Code, status, code, pr.dump())
	}
	if status != pairing.StatusPending && status != pairing.StatusRunning && strings.TrimSpace(s.Detail) == "" {
		t.Errorf("step %s: empty detail", name)
	}
	if (status == pairing.StatusFailed || status == pairing.StatusWarning) && strings.TrimSpace(s.Remedy) == "" {
		t.Errorf("step %s: %s without a remedy", name, status)
	}
	in := s.Detail
	for _, w := range words {
		if w == "remedy:" {
			in = s.Remedy
			continue
		}
		if !strings.Contains(in, w) {
			t.Errorf("step %s: %q does not mention %q", name, in, w)
		}
	}
	return s
}

// wantPendingAfter checks that every step after name is pending.
func wantPendingAfter(t *testing.T, pr Pairing, name string) {
	t.Helper()
	after := false
	for _, s := range pr.Steps {
		if after && (s.Status != pairing.StatusPending || s.Attempts != 0) {
			t.Errorf("step %s: %s after %d attempts, want pending (after %s); %s", s.Step, s.Status, s.Attempts, name, pr.dump())
		}
		if s.Step == name {
			after = true
		}
	}
}

// portString is a port as text.
func portString(p int) string { return strconv.Itoa(p) }
