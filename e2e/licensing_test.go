package e2e

import (
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// activation is a running cairn-activation service.
type activation struct {
	*proc
	data, url, pubkey string
}

func startActivation(t *testing.T) *activation {
	t.Helper()
	data := t.TempDir()
	p := start(t, "cairn-activation", nil, nil, "serve", "-data", data, "-listen", "127.0.0.1:0")
	m := p.waitLog(`activation service listening"? addr=(\S+)`, 30*time.Second)
	out, err := exec.Command(filepath.Join(bin, "cairn-activation"), "public-key", "-data", data).CombinedOutput()
	if err != nil {
		t.Fatalf("public-key: %v: %s", err, out)
	}
	return &activation{proc: p, data: data, url: "http://" + m[1], pubkey: strings.TrimSpace(string(out))}
}

// createKey runs the admin CLI against the running service and returns the key.
func (s *activation) createKey(t *testing.T, seats int) (key, id string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(bin, "cairn-activation"), "key", "create", "-data", s.data,
		"-edition", "std", "-seats", strconv.Itoa(seats), "-expires", time.Now().AddDate(1, 0, 0).Format("2006-01-02")).CombinedOutput()
	if err != nil {
		t.Fatalf("key create: %v: %s", err, out)
	}
	m := regexp.MustCompile(`([0-9A-Z]{5}(?:-[0-9A-Z]{5}){4})`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no key in:\n%s", out)
	}
	idm := regexp.MustCompile(`(?m)^key id\s+(\S+)$`).FindStringSubmatch(string(out))
	if idm == nil {
		t.Fatalf("no key id in:\n%s", out)
	}
	return m[1], idm[1]
}

// TestPairingWithActivationService runs the activation service, two
// appliances and agents as real processes: a pairing is licensed; a revoked
// key, a key without seats left and an agent active on another appliance
// each fail the License step with their code.
func TestPairingWithActivationService(t *testing.T) {
	svc := startActivation(t)
	z := &zone{a: map[string]string{}}
	dnsAddr := startDNS(t, z)
	newAppliance := func() *appliance {
		return launchAppliance(t, t.TempDir(), "-gateway", "",
			"-dns", dnsAddr, "-dns-search", "test.example", "-activation-url", svc.url, "-activation-pubkey", svc.pubkey)
	}
	newAgent := func(name string) (port int, state string) {
		state = t.TempDir()
		ag := start(t, "cairn-agent", nil, nil, "-state", state, "-listen", "127.0.0.1:0")
		addr := ag.waitLog(`listening for the appliance \(direct mode\)"? addr=(\S+)`, 30*time.Second)[1]
		_, ps, _ := net.SplitHostPort(addr)
		port, _ = strconv.Atoi(ps)
		z.mu.Lock()
		z.a[name+".test.example."] = "127.0.0.1"
		z.mu.Unlock()
		return port, state
	}
	a := newAppliance()
	key, keyID := svc.createKey(t, 1)
	port1, state1 := newAgent("pc1")
	p := a.pair(t, map[string]any{"target": "pc1", "port": port1, "product_key": key})
	if p.State != "done" || p.step("license").Status != "ok" || !strings.Contains(p.step("license").Detail, keyID) {
		t.Fatalf("first pairing: %+v", p)
	}

	// The key's only seat is taken.
	port2, _ := newAgent("pc2")
	p = a.pair(t, map[string]any{"target": "pc2", "port": port2, "product_key": key})
	if p.State != "failed" || p.step("license").Code != "no_seats" || p.step("inspect").Status != "pending" {
		t.Fatalf("no seats: %+v", p)
	}

	// pc1 unpaired on the machine only, then paired on another appliance
	// with a key of its own: still active on the first one.
	if out, err := exec.Command(filepath.Join(bin, "cairn-agent"), "unpair", "-state", state1).CombinedOutput(); err != nil {
		t.Fatalf("unpair: %v: %s", err, out)
	}
	b := newAppliance()
	key2, _ := svc.createKey(t, 5)
	p = b.pair(t, map[string]any{"target": "pc1", "port": port1, "product_key": key2})
	if p.State != "failed" || p.step("license").Code != "active_elsewhere" || !strings.Contains(p.step("license").Remedy, "unpair it there") {
		t.Fatalf("active elsewhere: %+v", p)
	}

	// A revoked key.
	key3, id3 := svc.createKey(t, 5)
	if out, err := exec.Command(filepath.Join(bin, "cairn-activation"), "key", "revoke", "-data", svc.data, "-reason", "test", id3).CombinedOutput(); err != nil {
		t.Fatalf("revoke: %v: %s", err, out)
	}
	port3, _ := newAgent("pc3")
	p = b.pair(t, map[string]any{"target": "pc3", "port": port3, "product_key": key3})
	if p.State != "failed" || p.step("license").Code != "key_revoked" {
		t.Fatalf("revoked: %+v", p)
	}
}
