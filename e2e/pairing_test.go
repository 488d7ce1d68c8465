package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	cairnappliance "github.com/cairnbackup/cairn/appliance"
)

// zone is a test DNS zone served on 127.0.0.1: name → IPv4 address, with
// PTR records for the addresses.
type zone struct {
	mu      sync.Mutex
	a       map[string]string // FQDN → address
	queries int               // questions answered
}

func (z *zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	q := req.Question[0]
	z.mu.Lock()
	defer z.mu.Unlock()
	z.queries++
	found := false
	for name, addr := range z.a {
		switch {
		case q.Qtype == dns.TypeA && strings.EqualFold(q.Name, name):
			found = true
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(addr)})
		case q.Qtype == dns.TypeAAAA && strings.EqualFold(q.Name, name):
			found = true
		case q.Qtype == dns.TypePTR:
			if rev, _ := dns.ReverseAddr(addr); strings.EqualFold(rev, q.Name) {
				found = true
				m.Answer = append(m.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 60}, Ptr: name})
			}
		}
	}
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

// startDNS serves z on a UDP port of 127.0.0.1 and returns its address.
func startDNS(t testing.TB, z *zone) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: z, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

type stepView struct {
	Step   string `json:"step"`
	Status string `json:"status"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Remedy string `json:"remedy"`
}

type pairingView struct {
	ID      uint64     `json:"id"`
	AgentID string     `json:"agent_id"`
	State   string     `json:"state"`
	Steps   []stepView `json:"steps"`
}

// pair starts one pairing through the API and waits (polling, bounded)
// until it is no longer running.
func (a *appliance) pair(t testing.TB, body map[string]any) pairingView {
	t.Helper()
	var reply struct {
		Pairings []pairingView `json:"pairings"`
		Errors   []struct{ Code, Message string }
	}
	if code := a.post(t, "/api/v1/pairings", body, &reply); code != 201 || len(reply.Pairings) != 1 {
		t.Fatalf("start pairing: HTTP %d: %+v", code, reply)
	}
	id := reply.Pairings[0].ID
	deadline := time.Now().Add(60 * time.Second)
	for {
		var p pairingView
		if code := a.get(t, "/api/v1/pairings/"+strconv.FormatUint(id, 10), &p); code != 200 {
			t.Fatalf("get pairing: HTTP %d", code)
		}
		if p.State != "running" {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pairing still running: %+v", p)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
}

func (p pairingView) step(name string) stepView {
	for _, s := range p.Steps {
		if s.Step == name {
			return s
		}
	}
	return stepView{}
}

// TestPairingByHostName: the appliance with its embedded activation
// service, a real agent, and a DNS server that knows the agent's short
// name: one API call pairs it, and the six steps are visible.
func TestPairingByHostName(t *testing.T) {
	z := &zone{a: map[string]string{}}
	dnsAddr := startDNS(t, z)
	data := t.TempDir()
	app := launchAppliance(t, data, "-gateway", "", "-dns", dnsAddr, "-dns-search", "test.example")

	fixture, err := filepath.Abs("../agent/vss/testdata/sql_failed_nonretryable.txt")
	if err != nil {
		t.Fatal(err)
	}
	ag := start(t, "cairn-agent", nil, nil, "-state", t.TempDir(), "-listen", "127.0.0.1:0", "-vss-writers-file", fixture)
	addr := ag.waitLog(`listening for the appliance \(direct mode\)"? addr=(\S+)`, 30*time.Second)[1]
	_, port, _ := net.SplitHostPort(addr)
	z.mu.Lock()
	z.a["web01.test.example."] = "127.0.0.1"
	z.mu.Unlock()
	portN, _ := strconv.Atoi(port)

	p := app.pair(t, map[string]any{"target": "web01", "port": portN, "product_key": cairnappliance.DemoProductKey})
	for _, s := range p.Steps {
		t.Logf("%s: %s %s: %s (remedy: %s)", s.Step, s.Status, s.Code, s.Detail, s.Remedy)
	}
	if p.State != "done" || p.AgentID != "web01" {
		t.Fatalf("pairing %+v", p)
	}
	for _, name := range []string{"resolve", "connect", "license", "dataset", "settings"} {
		if s := p.step(name); s.Status != "ok" {
			t.Errorf("step %s: %+v", name, s)
		}
	}
	if s := p.step("resolve"); !strings.Contains(s.Detail, "web01.test.example") || !strings.Contains(s.Detail, dnsAddr) {
		t.Errorf("resolve detail: %q", s.Detail)
	}
	// The fixture has a failed SQL Server writer: a warning that names it
	// and the service to restart.
	if s := p.step("inspect"); s.Status != "warning" || s.Code != "writer_failed" ||
		!strings.Contains(s.Detail, "SqlServerWriter") || !strings.Contains(s.Remedy, "SQLWriter") {
		t.Errorf("inspect: %+v", s)
	}
	var agents []struct {
		ID       string          `json:"id"`
		Dataset  string          `json:"dataset"`
		Settings *map[string]any `json:"settings"`
		License  *struct {
			KeyID string `json:"key_id"`
			State string `json:"state"`
		} `json:"license"`
	}
	app.get(t, "/api/v1/agents", &agents)
	if len(agents) != 1 || agents[0].Dataset != "cairn/agents/web01" || agents[0].Settings == nil ||
		agents[0].License == nil || agents[0].License.State != "valid" {
		t.Fatalf("agents: %+v", agents)
	}
	if _, err := os.Stat(filepath.Join(data, "pool", "datasets", "agents", "web01")); err != nil {
		t.Fatalf("dataset not in the pool: %v", err)
	}

	// Pairing again changes nothing and takes no seat (the demo key has
	// 5; the service counts one).
	if p2 := app.pair(t, map[string]any{"target": "web01", "port": portN, "product_key": cairnappliance.DemoProductKey}); p2.State != "done" {
		t.Fatalf("second pairing: %+v", p2)
	}

	// Refusals: a typo in the key is caught before any step runs; a name
	// that does not exist and an agent that does not listen fail their step.
	var bad struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	typo := []byte(cairnappliance.DemoProductKey)
	typo[3] ^= 1
	if code := app.post(t, "/api/v1/pairings", map[string]any{"target": "web01", "product_key": string(typo)}, &bad); code != 400 ||
		len(bad.Errors) != 1 || bad.Errors[0].Code != "bad_product_key" {
		t.Fatalf("typo: HTTP %d %+v", code, bad)
	}
	if p := app.pair(t, map[string]any{"target": "nosuch", "product_key": cairnappliance.DemoProductKey}); p.State != "failed" ||
		p.step("resolve").Code != "nxdomain" || p.step("connect").Status != "pending" {
		t.Fatalf("nxdomain: %+v", p)
	}
	z.mu.Lock()
	z.a["down.test.example."] = "127.0.0.1"
	z.mu.Unlock()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if p := app.pair(t, map[string]any{"target": "down", "port": closed, "product_key": cairnappliance.DemoProductKey}); p.State != "failed" ||
		p.step("connect").Code != "unreachable" || !strings.Contains(p.step("connect").Remedy, strconv.Itoa(closed)) {
		t.Fatalf("not listening: %+v", p)
	}
}

// TestPairingByHostsFile pairs by a name that only the appliance's hosts
// file knows, as an operator would with an /etc/hosts entry: the resolve
// step answers from the file, and DNS is not asked.
func TestPairingByHostsFile(t *testing.T) {
	z := &zone{a: map[string]string{}}
	dnsAddr := startDNS(t, z)
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n127.0.0.1 backup-target.lan backup-target\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	app := launchAppliance(t, t.TempDir(), "-gateway", "", "-dns", dnsAddr, "-hosts", hosts)
	ag := start(t, "cairn-agent", nil, nil, "-state", t.TempDir(), "-listen", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(ag.waitLog(`listening for the appliance \(direct mode\)"? addr=(\S+)`, 30*time.Second)[1])
	portN, _ := strconv.Atoi(port)

	p := app.pair(t, map[string]any{"target": "backup-target", "port": portN, "product_key": cairnappliance.DemoProductKey})
	if p.State != "done" || p.AgentID != "backup-target" {
		t.Fatalf("pairing %+v", p)
	}
	if s := p.step("resolve"); s.Status != "ok" || !strings.Contains(s.Detail, "hosts file "+hosts) {
		t.Errorf("resolve: %+v", s)
	}
	z.mu.Lock()
	asked := z.queries
	z.mu.Unlock()
	if asked != 0 {
		t.Errorf("the DNS server was asked %d times for a name in the hosts file", asked)
	}
}
