package pairer

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/agent"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/internal/logtest"
	"github.com/cairnbackup/cairn/licensing"
	"github.com/cairnbackup/cairn/pairing"
	"github.com/cairnbackup/cairn/pairing/resolve"
	"github.com/cairnbackup/cairn/zfs"
)

// paired checks everything a done pairing leaves: the steps, the agent's
// record and pin, a verified activation, the dataset, the settings and the
// secrets. It returns the License step's activation.
func paired(t *testing.T, a *testAppliance, ag *testAgent, pr Pairing, key licensing.Key, want pairing.Settings) licensing.Activation {
	t.Helper()
	wantState(t, pr, catalog.PairingDone)
	for _, s := range pr.Steps {
		if !s.Status.Done() || s.Attempts != 1 || s.Started.IsZero() || s.Finished.Before(s.Started) {
			t.Errorf("step %s: %s, %d attempts, %s → %s", s.Step, s.Status, s.Attempts, s.Started, s.Finished)
		}
	}
	fp := ag.Fingerprint().String()

	conn := wantStep(t, pr, pairing.StepConnect, pairing.StatusOK, "", "TLS 1.3", ag.Fingerprint().Short())
	var cd ConnectData
	stepData(t, conn, &cd)
	if cd.Fingerprint != fp || cd.Address != ag.addr || cd.AgentVersion != "test" || cd.RTT <= 0 {
		t.Errorf("connect data %+v; want fingerprint %s at %s, version test, a round trip", cd, fp, ag.addr)
	}
	rec, ok := a.agent(pr.AgentID)
	if !ok {
		t.Fatalf("agent %s not stored", pr.AgentID)
	}
	if rec.Fingerprint != fp || rec.Mode != catalog.ModeDirect || rec.Address != ag.addr {
		t.Errorf("agent record %+v; want direct mode at %s, key %s", rec, ag.addr, fp)
	}
	pin, ok, err := agent.ReadPin(ag.dir)
	if err != nil || !ok || pin.Fingerprint != a.id.Fingerprint() || pin.AgentID != pr.AgentID {
		t.Errorf("agent pin %+v %v %v; want appliance %s, agent ID %s", pin, ok, err, a.id.Fingerprint(), pr.AgentID)
	}

	lic := wantStep(t, pr, pairing.StepLicense, pairing.StatusOK, "", key.ID())
	var act licensing.Activation
	stepData(t, lic, &act)
	if act.KeyID != key.ID() || act.AgentFingerprint != fp || act.ApplianceID != a.applianceID() {
		t.Errorf("license data %+v; want key %s, agent %s, appliance %s", act, key.ID(), fp, a.applianceID())
	}
	stored, ok := a.activation(pr.AgentID)
	if !ok {
		t.Fatalf("no activation stored for %s", pr.AgentID)
	}
	var signed licensing.Signed
	if err := json.Unmarshal(stored.Signed, &signed); err != nil {
		t.Fatalf("stored activation: %v", err)
	}
	got, err := licensing.Verify(a.svc.pub, signed, time.Now())
	if err != nil {
		t.Fatalf("stored activation does not verify with the service's key: %v", err)
	}
	if got.KeyID != key.ID() || got.AgentFingerprint != fp || got.ApplianceID != a.applianceID() ||
		stored.KeyID != key.ID() || !stored.Expires.Equal(got.Expires) || stored.ValidatedAt.IsZero() {
		t.Errorf("stored activation %+v, signed %+v", stored, got)
	}
	if v := a.p.Verdict(stored, fp, time.Now()); !v.Licensed() {
		t.Errorf("offline verdict on the stored activation: %+v", v)
	}

	insp := wantStep(t, pr, pairing.StepInspect, pairing.StatusOK, "", "volumes", "all stable")
	var id pairing.InspectData
	stepData(t, insp, &id)
	if len(id.Volumes) == 0 || id.SnapshotProvider == "" {
		t.Errorf("inspect data %+v", id)
	}

	ds := a.datasetName(pr.AgentID)
	wantStep(t, pr, pairing.StepDataset, pairing.StatusOK, "", ds.String())
	if !a.hasDataset(pr.AgentID) {
		t.Errorf("dataset %s not in the pool", ds)
	}
	if rec.Dataset != ds.String() {
		t.Errorf("agent's dataset %q, want %q", rec.Dataset, ds)
	}

	wantStep(t, pr, pairing.StepSettings, pairing.StatusOK, "", want.BackupSchedule)
	st, ok := a.settings(pr.AgentID)
	if !ok {
		t.Fatalf("no settings stored for %s", pr.AgentID)
	}
	if st.BackupSchedule != want.BackupSchedule || st.Retention != catalog.Retention(want.Retention) ||
		st.OffsiteSchedule != want.OffsiteSchedule || st.OffsiteRetention != catalog.Retention(want.OffsiteRetention) ||
		!slices.Equal(st.Volumes, want.Volumes) {
		t.Errorf("stored settings %+v, want %+v", st, want)
	}

	if _, ok := a.sealed(keySecret(pr.ID)); ok {
		t.Errorf("the pairing's sealed product key is still stored")
	}
	if v, ok := a.sealed(AgentKeySecret(pr.AgentID)); !ok || v != key.Reveal() {
		t.Errorf("the agent's sealed product key: %v (found %v), want the key", v == key.Reveal(), ok)
	}
	if acts := a.auditActions(pr.AgentID); !slices.Contains(acts, "pairing.started") || !slices.Contains(acts, "pairing.done") {
		t.Errorf("audit of %s: %v", pr.AgentID, acts)
	}
	return act
}

// TestPairFull pairs three agents by short name (search domain), by FQDN
// and by IP address with a PTR record, and checks all that each leaves.
func TestPairFull(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	z := newZone()
	z.add("web01."+testDomain, "127.0.0.1")
	z.add("db02."+testDomain, "127.0.0.1")
	dnsAddr := startDNS(t, z)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(dnsAddr))
	key := svc.key(5)

	custom := pairing.Settings{BackupSchedule: "*/15 * * * *", Retention: pairing.Retention{KeepLast: 10, KeepDaily: 3}}
	for i, tc := range []struct {
		target, agentID string
		settings        *pairing.Settings
		resolved        []string // in the Resolve step's detail
	}{
		{"web01", "web01", &custom, []string{"web01 (web01.corp.test.) → 127.0.0.1", dnsAddr, "agree"}},
		{"db02.corp.test", "db02", nil, []string{"db02.corp.test → 127.0.0.1", dnsAddr, "agree"}},
		{"127.0.0.1", "127-0-0-1", nil, []string{"127.0.0.1 is an address", "PTR", "corp.test.", dnsAddr, "agree"}},
	} {
		t.Run(tc.target, func(t *testing.T) {
			ag := startAgent(t, nil)
			pr := a.pair(Request{Target: tc.target, Port: ag.port, ProductKey: key.Reveal(), Settings: tc.settings})
			if pr.AgentID != tc.agentID || pr.Mode != catalog.ModeDirect || pr.Port != ag.port || pr.KeyID != key.ID() {
				t.Errorf("pairing %+v; want agent %s, direct mode, port %d, key %s", pr, tc.agentID, ag.port, key.ID())
			}
			res := wantStep(t, pr, pairing.StepResolve, pairing.StatusOK, "", tc.resolved...)
			var rr resolve.Result
			stepData(t, res, &rr)
			if !rr.ForwardReverseAgree || len(rr.Addrs) != 1 || rr.Addrs[0].String() != "127.0.0.1" || rr.Server != dnsAddr || len(rr.PTR) == 0 {
				t.Errorf("resolve data %+v", rr)
			}
			want := pairing.DefaultSettings()
			if tc.settings != nil {
				want = *tc.settings
			}
			paired(t, a, ag, pr, key, want)
			if got := svc.used(key, a.applianceID()); got != i+1 {
				t.Errorf("service: %d seats used, want %d", got, i+1)
			}
		})
	}
}

// TestPairAgain pairs an agent a second time: nothing changes, the same
// seat is renewed, the dataset is kept.
func TestPairAgain(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	z := newZone()
	z.add("web01."+testDomain, "127.0.0.1")
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, z)))
	key := svc.key(2)
	ag := startAgent(t, nil)
	req := Request{Target: "web01", Port: ag.port, ProductKey: key.Reveal()}
	first := a.pair(req)
	paired(t, a, ag, first, key, pairing.DefaultSettings())
	if !a.connected("web01") {
		t.Fatalf("web01 not connected after its pairing")
	}

	// Again and again: each time the live session is closed and a new one
	// made at once (the gateway must have let the old one go).
	const again = 6
	for i := range again {
		next := a.pair(req)
		if next.ID != first.ID+uint64(i)+1 {
			t.Fatalf("pairing %d has ID %d, want %d", i+2, next.ID, first.ID+uint64(i)+1)
		}
		paired(t, a, ag, next, key, pairing.DefaultSettings())
		wantStep(t, next, pairing.StepDataset, pairing.StatusOK, "", "exists already: kept")
		if got := svc.used(key, a.applianceID()); got != 1 {
			t.Errorf("service: %d seats used after pairing %d times, want 1", got, i+2)
		}
	}
	ps := a.pairingsOf("web01")
	if len(ps) != again+1 {
		t.Errorf("%d pairings of web01 stored, want %d", len(ps), again+1)
	}
	for _, p := range ps {
		if p.State != catalog.PairingDone {
			t.Errorf("pairing %d: %s", p.ID, p.State)
		}
	}
	if !a.connected("web01") {
		t.Errorf("web01 not connected after its last pairing")
	}
}

// TestStartRefusesBadKey: a product key with a wrong check symbol is
// refused before anything is stored.
func TestStartRefusesBadKey(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	good := svc.key(1).Reveal()
	// Change the check symbol (the last one) to another symbol.
	bad := ""
	for _, c := range "0123456789ABCDEFGHJKMNPQRSTVWXYZ" {
		if candidate := good[:len(good)-1] + string(c); candidate != good {
			bad = candidate
			break
		}
	}
	if _, err := licensing.ParseKey(bad); err == nil {
		t.Fatalf("ParseKey(%q) accepted a changed check symbol", bad)
	}
	for _, k := range []string{bad, "", "not-a-key", good[:len(good)-6]} {
		_, err := a.p.Start(context.Background(), Request{Target: "web01", ProductKey: k})
		var re *RequestError
		if !errors.As(err, &re) || re.Code != "bad_product_key" || !strings.Contains(re.Msg, "product key") {
			t.Errorf("Start with key %q: %v, want a bad_product_key RequestError", k, err)
		}
		if err != nil && k != "" && strings.Contains(err.Error(), k) {
			t.Errorf("the error %q quotes the key", err)
		}
	}
	prs, err := a.p.List(context.Background())
	if err != nil || len(prs) != 0 {
		t.Errorf("pairings stored: %+v, %v", prs, err)
	}
	if _, ok := a.sealed(keySecret(1)); ok {
		t.Errorf("a product key was stored")
	}
	if acts := a.auditActions("web01"); len(acts) != 0 {
		t.Errorf("audit: %v", acts)
	}
}

// TestStartRefusesBadRequests: requests refused before anything is stored.
func TestStartRefusesBadRequests(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	key := svc.key(1).Reveal()
	bad := pairing.DefaultSettings()
	bad.BackupSchedule = "every hour"
	for _, tc := range []struct {
		req  Request
		code string
	}{
		{Request{ProductKey: key}, "bad_target"},
		{Request{Target: "web01", Port: 70000, ProductKey: key}, "bad_port"},
		{Request{Target: "web01", Port: -1, ProductKey: key}, "bad_port"},
		{Request{AgentID: "rev01", Port: 25568, ProductKey: key}, "bad_port"},
		{Request{Target: "web01", ProductKey: key, Settings: &bad}, "bad_settings"},
		{Request{Target: "web01", AgentID: "Not An ID", ProductKey: key}, "bad_request"},
		{Request{Target: "web 01", ProductKey: key}, "bad_request"},
	} {
		_, err := a.p.Start(context.Background(), tc.req)
		var re *RequestError
		if !errors.As(err, &re) || re.Code != tc.code || re.Msg == "" {
			t.Errorf("Start(%+v): %v, want RequestError %s", tc.req, err, tc.code)
		}
	}
	if prs, err := a.p.List(context.Background()); err != nil || len(prs) != 0 {
		t.Errorf("pairings stored: %+v, %v", prs, err)
	}
}

// licenseFailed checks a pairing that failed at License with code, and
// that nothing of the license was stored.
func licenseFailed(t *testing.T, a *testAppliance, pr Pairing, code string, words ...string) {
	t.Helper()
	wantState(t, pr, catalog.PairingFailed)
	if s := pr.step(pairing.StepResolve); !s.Status.Done() {
		t.Errorf("Resolve: %s", s.Status)
	}
	wantStep(t, pr, pairing.StepConnect, pairing.StatusOK, "")
	wantStep(t, pr, pairing.StepLicense, pairing.StatusFailed, code, words...)
	wantPendingAfter(t, pr, pairing.StepLicense)
	if act, ok := a.activation(pr.AgentID); ok {
		t.Errorf("activation stored: %+v", act)
	}
	if _, ok := a.sealed(AgentKeySecret(pr.AgentID)); ok {
		t.Errorf("the agent's product key was stored")
	}
	if _, ok := a.sealed(keySecret(pr.ID)); !ok {
		t.Errorf("the pairing's product key is gone: it cannot be retried")
	}
	if a.hasDataset(pr.AgentID) {
		t.Errorf("dataset created")
	}
	if _, ok := a.settings(pr.AgentID); ok {
		t.Errorf("settings stored")
	}
}

// TestLicenseRefusals: revoked key, no seats left, key active on another
// appliance, service unreachable.
func TestLicenseRefusals(t *testing.T) {
	t.Parallel()
	z := newZone()
	dnsAddr := startDNS(t, z)

	t.Run("revoked", func(t *testing.T) {
		t.Parallel()
		svc := newService(t)
		a := newAppliance(t, "appliance-a", svc, dnsConfig(dnsAddr))
		key := svc.key(3)
		svc.revoke(key)
		ag := startAgent(t, nil)
		pr := a.pair(Request{Target: "127.0.0.1", Port: ag.port, ProductKey: key.Reveal()})
		licenseFailed(t, a, pr, licensing.CodeKeyRevoked, key.ID(), "remedy:", "revoked", "new one")
	})

	t.Run("no seats", func(t *testing.T) {
		t.Parallel()
		svc := newService(t)
		a := newAppliance(t, "appliance-a", svc, dnsConfig(dnsAddr))
		key := svc.key(1)
		ag1, ag2 := startAgent(t, nil), startAgent(t, nil)
		pr1 := a.pair(Request{Target: "127.0.0.1", AgentID: "one", Port: ag1.port, ProductKey: key.Reveal()})
		wantState(t, pr1, catalog.PairingDone)
		pr2 := a.pair(Request{Target: "127.0.0.1", AgentID: "two", Port: ag2.port, ProductKey: key.Reveal()})
		licenseFailed(t, a, pr2, licensing.CodeNoSeats, key.ID(), "seats", "remedy:", "unpair an agent", "more seats")
		if got := svc.used(key, a.applianceID()); got != 1 {
			t.Errorf("service: %d seats used, want 1", got)
		}
	})

	t.Run("active elsewhere", func(t *testing.T) {
		t.Parallel()
		svc := newService(t)
		a := newAppliance(t, "appliance-a", svc, dnsConfig(dnsAddr))
		b := newAppliance(t, "appliance-b", svc, dnsConfig(dnsAddr))
		key := svc.key(3)
		ag := startAgent(t, nil)
		req := Request{Target: "127.0.0.1", AgentID: "web01", Port: ag.port, ProductKey: key.Reveal()}
		wantState(t, a.pair(req), catalog.PairingDone)
		// "cairn-agent unpair" on the machine, not on appliance A.
		if _, ok, err := agent.Unpair(ag.dir); err != nil || !ok {
			t.Fatalf("agent.Unpair: %v %v", ok, err)
		}
		pr := b.pair(req)
		licenseFailed(t, b, pr, licensing.CodeActiveElsewhere, "another appliance", "remedy:", "unpair it there")
		if got := svc.used(key, b.applianceID()); got != 1 {
			t.Errorf("service: %d seats used, want 1 (A's)", got)
		}
		if _, ok := a.activation("web01"); !ok {
			t.Errorf("appliance A lost its activation")
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		svc := newService(t)
		a := newAppliance(t, "appliance-a", svc, dnsConfig(dnsAddr))
		key := svc.key(3)
		svc.hs.Close()
		ag := startAgent(t, nil)
		pr := a.pair(Request{Target: "127.0.0.1", Port: ag.port, ProductKey: key.Reveal()})
		licenseFailed(t, a, pr, "service_unreachable", key.ID(), "remedy:", "cannot be reached", "retry")
		if strings.Contains(pr.step(pairing.StepLicense).Detail, key.Reveal()) {
			t.Errorf("the License step's detail shows the product key")
		}
	})
}

// TestPairConcurrently pairs 6 agents at once with a key of 3 seats:
// exactly 3 are licensed, never more; a seat freed by unpairing lets a
// failed one be retried.
func TestPairConcurrently(t *testing.T) {
	t.Parallel()
	const agents, seats = 6, 3
	svc := newService(t)
	z := newZone()
	z.add("host."+testDomain, "127.0.0.1")
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, z)))
	key := svc.key(seats)
	ags := make([]*testAgent, agents)
	for i := range ags {
		ags[i] = startAgent(t, nil)
	}
	ids := make([]uint64, agents)
	var wg sync.WaitGroup
	errs := make(chan error, agents)
	for i, ag := range ags {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr, err := a.p.Start(context.Background(), Request{Target: "127.0.0.1", AgentID: "agent-" + string(rune('a'+i)),
				Port: ag.port, ProductKey: key.Reveal()})
			ids[i] = pr.ID
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var done, refused []Pairing
	for _, id := range ids {
		pr := a.wait(id)
		switch {
		case pr.State == catalog.PairingDone:
			done = append(done, pr)
		case pr.step(pairing.StepLicense).Code == licensing.CodeNoSeats:
			licenseFailed(t, a, pr, licensing.CodeNoSeats)
			refused = append(refused, pr)
		default:
			t.Errorf("pairing neither done nor refused for seats: %s", pr.dump())
		}
	}
	if len(done) != seats || len(refused) != agents-seats {
		t.Fatalf("%d licensed, %d refused; want %d and %d", len(done), len(refused), seats, agents-seats)
	}
	if got := svc.used(key, a.applianceID()); got != seats {
		t.Errorf("service: %d seats used, want %d", got, seats)
	}
	var acts []catalog.Activation
	a.view(func(tx *catalog.Tx) error {
		var err error
		acts, err = tx.Activations()
		return err
	})
	if len(acts) != seats {
		t.Errorf("%d activations stored, want %d", len(acts), seats)
	}

	// Free a seat, and the License step of a refused pairing passes on retry.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := a.p.Unpair(ctx, done[0].AgentID, false, false, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.p.Retry(ctx, refused[0].ID); err != nil {
		t.Fatal(err)
	}
	pr := a.wait(refused[0].ID)
	wantState(t, pr, catalog.PairingDone)
	if s := pr.step(pairing.StepLicense); s.Attempts != 2 {
		t.Errorf("License step ran %d times, want 2", s.Attempts)
	}
	if s := pr.step(pairing.StepConnect); s.Attempts != 1 {
		t.Errorf("Connect step ran %d times, want 1 (only the failed step is retried)", s.Attempts)
	}
	if got := svc.used(key, a.applianceID()); got != seats {
		t.Errorf("service: %d seats used after the retry, want %d", got, seats)
	}
}

// resolveFailed checks a pairing that failed at Resolve with code, with
// nothing stored.
func resolveFailed(t *testing.T, a *testAppliance, pr Pairing, code string, words ...string) {
	t.Helper()
	wantState(t, pr, catalog.PairingFailed)
	wantStep(t, pr, pairing.StepResolve, pairing.StatusFailed, code, words...)
	wantPendingAfter(t, pr, pairing.StepResolve)
	if rec, ok := a.agent(pr.AgentID); ok {
		t.Errorf("agent stored: %+v", rec)
	}
}

// TestResolveFailures: NXDOMAIN, SERVFAIL and a DNS server that never
// answers fail the Resolve step; the later steps do not run.
func TestResolveFailures(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(3)
	z := newZone()
	z.fail("broken."+testDomain, 2) // SERVFAIL
	dnsAddr := startDNS(t, z)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(dnsAddr))

	pr := a.pair(Request{Target: "nosuch", ProductKey: key.Reveal()})
	resolveFailed(t, a, pr, "nxdomain", "nosuch", "remedy:", "spelling", testDomain, "IP address")
	pr = a.pair(Request{Target: "nosuch.example.test", ProductKey: key.Reveal()})
	resolveFailed(t, a, pr, "nxdomain", "nosuch.example.test")
	pr = a.pair(Request{Target: "broken", ProductKey: key.Reveal()})
	resolveFailed(t, a, pr, "servfail", "broken.corp.test", "SERVFAIL", "remedy:", dnsAddr, "pair by IP address")

	silent := silentDNS(t)
	cfg := dnsConfig(silent)
	cfg.Timeout, cfg.Attempts = 200*time.Millisecond, 1
	b := newAppliance(t, "appliance-b", svc, cfg)
	started := time.Now()
	pr = b.pair(Request{Target: "web01", ProductKey: key.Reveal()})
	resolveFailed(t, b, pr, "timeout", "web01.corp.test", "timeout", "remedy:", silent, "pair by IP address")
	if took := time.Since(started); took > 5*time.Second {
		t.Errorf("the timeout took %s with a 200 ms query timeout", took)
	}
	if got := svc.used(key, a.applianceID()); got != 0 {
		t.Errorf("service: %d seats used, want 0", got)
	}
}

// TestConnectRetry: an agent that does not listen fails Connect with a
// remedy naming its port; once it listens, Retry finishes the pairing
// from the Connect step.
func TestConnectRetry(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(1)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	port := freePort(t)
	pr := a.pair(Request{Target: "127.0.0.1", AgentID: "web01", Port: port, ProductKey: key.Reveal()})
	wantState(t, pr, catalog.PairingFailed)
	wantStep(t, pr, pairing.StepResolve, pairing.StatusWarning, "reverse_mismatch", "no PTR", "remedy:", "PTR")
	wantStep(t, pr, pairing.StepConnect, pairing.StatusFailed, "unreachable", "127.0.0.1:"+portString(port),
		"remedy:", "cairn-agent", "port "+portString(port), "TCP "+portString(port))
	wantPendingAfter(t, pr, pairing.StepConnect)
	if _, ok := a.agent("web01"); ok {
		t.Errorf("agent stored after a failed Connect")
	}

	ln, err := net.Listen("tcp", "127.0.0.1:"+portString(port))
	if err != nil {
		t.Skipf("port %d was taken meanwhile: %v", port, err)
	}
	ag := startAgentOn(t, ln, t.TempDir(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := a.p.Retry(ctx, pr.ID); err != nil {
		t.Fatal(err)
	}
	pr = a.wait(pr.ID)
	wantState(t, pr, catalog.PairingDone)
	if s := pr.step(pairing.StepResolve); s.Attempts != 1 {
		t.Errorf("Resolve ran %d times, want 1", s.Attempts)
	}
	if s := pr.step(pairing.StepConnect); s.Attempts != 2 || s.Status != pairing.StatusOK {
		t.Errorf("Connect: %s after %d attempts, want ok after 2", s.Status, s.Attempts)
	}
	if rec, ok := a.agent("web01"); !ok || rec.Fingerprint != ag.Fingerprint().String() {
		t.Errorf("agent record %+v", rec)
	}
	if got := svc.used(key, a.applianceID()); got != 1 {
		t.Errorf("service: %d seats used, want 1", got)
	}
	// A done pairing is not retried.
	var re *RequestError
	if _, err := a.p.Retry(ctx, pr.ID); !errors.As(err, &re) || re.Code != "not_failed" {
		t.Errorf("Retry of a done pairing: %v, want not_failed", err)
	}
}

// TestInspectFailedWriters: failed VSS writers are a warning naming each
// writer, its state, its last error and the service to restart; the
// pairing goes on.
func TestInspectFailedWriters(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(2)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	for _, tc := range []struct {
		file, agentID string
		detail        []string
	}{
		{"sql_failed_nonretryable.txt", "sql01", []string{"SqlServerWriter", "[8] Failed", "Non-retryable error",
			"remedy:", "SQL Server VSS Writer (SQLWriter)", "vssadmin list writers"}},
		{"hyperv_failed_retryable.txt", "hv01", []string{"Microsoft Hyper-V VSS Writer", "[7] Failed", "Retryable error",
			"remedy:", "Hyper-V Virtual Machine Management (vmms)"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			ag := startAgent(t, func(c *agent.Config) { c.WritersFile = "../../agent/vss/testdata/" + tc.file })
			pr := a.pair(Request{Target: "127.0.0.1", AgentID: tc.agentID, Port: ag.port, ProductKey: key.Reveal()})
			wantState(t, pr, catalog.PairingDone)
			s := wantStep(t, pr, pairing.StepInspect, pairing.StatusWarning, "writer_failed", tc.detail...)
			if !strings.Contains(s.Detail, "1 failed") {
				t.Errorf("inspect detail %q does not count one failed writer", s.Detail)
			}
			var id pairing.InspectData
			stepData(t, s, &id)
			if id.SnapshotProvider != "vss-file" || len(id.Writers) < 2 {
				t.Errorf("inspect data: provider %q, %d writers", id.SnapshotProvider, len(id.Writers))
			}
			for _, name := range []string{pairing.StepDataset, pairing.StepSettings} {
				wantStep(t, pr, name, pairing.StatusOK, "")
			}
		})
	}
}

// TestResume: an appliance stopped after Connect, while License runs,
// finishes the pairing when it starts again: the sessions are gone with
// the old process, the steps done are not run again.
func TestResume(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(1)
	z := newZone()
	z.add("web01."+testDomain, "127.0.0.1")
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, z)))
	ag := startAgent(t, nil)

	// The process "dies" as the License step starts: its context ends,
	// and the step is left running in the catalog.
	stopped := make(chan struct{})
	var once sync.Once
	a.p.hookStep = func(_ context.Context, _ uint64, step string) {
		if step == pairing.StepLicense {
			once.Do(func() {
				a.p.cancel()
				close(stopped)
			})
		}
	}
	pr := a.start(Request{Target: "web01", Port: ag.port, ProductKey: key.Reveal()})
	select {
	case <-stopped:
	case <-time.After(2 * waitTimeout):
		t.Fatalf("the License step did not start")
	}
	a.p.Close() // returns once the run has stopped
	left, err := a.p.Get(context.Background(), pr.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, left, catalog.PairingRunning)
	wantStep(t, left, pairing.StepResolve, pairing.StatusOK, "")
	wantStep(t, left, pairing.StepConnect, pairing.StatusOK, "")
	wantStep(t, left, pairing.StepLicense, pairing.StatusRunning, "")
	wantPendingAfter(t, left, pairing.StepLicense)
	if got := svc.used(key, a.applianceID()); got != 0 {
		t.Fatalf("service: %d seats used before the restart, want 0", got)
	}

	a.reopen()
	if a.connected("web01") {
		t.Fatalf("web01 connected right after the restart: the test does not test a restart")
	}
	if err := a.p.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	pr = a.wait(pr.ID)
	paired(t, a, ag, pr, key, pairing.DefaultSettings())
	if got := svc.used(key, a.applianceID()); got != 1 {
		t.Errorf("service: %d seats used, want 1", got)
	}
	if !a.connected("web01") {
		t.Errorf("web01 not connected after the resumed pairing")
	}
}

// TestResumeAgentGone: a pairing resumed after a restart whose agent has
// stopped meanwhile fails Inspect (the first step that needs the agent)
// with a remedy naming its port; once the agent is back, Retry finishes it.
func TestResumeAgentGone(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(1)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	ag := startAgent(t, nil)
	stopped := make(chan struct{})
	var once sync.Once
	a.p.hookStep = func(_ context.Context, _ uint64, step string) {
		if step == pairing.StepLicense {
			once.Do(func() {
				a.p.cancel()
				close(stopped)
			})
		}
	}
	pr := a.start(Request{Target: "127.0.0.1", AgentID: "web01", Port: ag.port, ProductKey: key.Reveal()})
	select {
	case <-stopped:
	case <-time.After(2 * waitTimeout):
		t.Fatalf("the License step did not start")
	}
	ag.stop()
	a.restart()
	pr = a.wait(pr.ID)
	wantState(t, pr, catalog.PairingFailed)
	wantStep(t, pr, pairing.StepLicense, pairing.StatusOK, "")
	wantStep(t, pr, pairing.StepInspect, pairing.StatusFailed, "not_connected", "web01", ag.addr,
		"remedy:", "cairn-agent", "port "+portString(ag.port))
	wantPendingAfter(t, pr, pairing.StepInspect)

	ln, err := net.Listen("tcp", ag.addr)
	if err != nil {
		t.Skipf("port %d was taken meanwhile: %v", ag.port, err)
	}
	back := startAgentOn(t, ln, ag.dir, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := a.p.Retry(ctx, pr.ID); err != nil {
		t.Fatal(err)
	}
	pr = a.wait(pr.ID)
	wantState(t, pr, catalog.PairingDone)
	if s := pr.step(pairing.StepInspect); s.Attempts != 2 {
		t.Errorf("Inspect ran %d times, want 2", s.Attempts)
	}
	if s := pr.step(pairing.StepLicense); s.Attempts != 1 {
		t.Errorf("License ran %d times, want 1", s.Attempts)
	}
	if rec, _ := a.agent("web01"); rec.Fingerprint != back.Fingerprint().String() {
		t.Errorf("agent record %+v, want the same agent key %s", rec, back.Fingerprint())
	}
	if got := svc.used(key, a.applianceID()); got != 1 {
		t.Errorf("service: %d seats used, want 1", got)
	}
}

// TestResumeIgnoresFinished: Resume launches only running pairings.
func TestResumeIgnoresFinished(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(1)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	pr := a.pair(Request{Target: "nosuch", ProductKey: key.Reveal()})
	wantState(t, pr, catalog.PairingFailed)
	a.restart()
	again := a.wait(pr.ID)
	if again.State != catalog.PairingFailed || again.step(pairing.StepResolve).Attempts != 1 {
		t.Errorf("a failed pairing ran again at Resume: %s", again.dump())
	}
}

// TestReverseMode pairs an agent connected through the gateway with its
// token, by agent ID: no Resolve, Connect uses the live session.
func TestReverseMode(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(2)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	addr := a.serveGateway()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tok, err := a.gw.CreateAgentToken(ctx, "rev01", "test")
	if err != nil {
		t.Fatal(err)
	}
	ag := startReverseAgent(t, addr, tok)
	logtest.WaitFor(t, "rev01 to connect", func() bool { return a.connected("rev01") })

	pr := a.pair(Request{AgentID: "rev01", ProductKey: key.Reveal()})
	wantState(t, pr, catalog.PairingDone)
	if pr.Mode != catalog.ModeReverse || pr.Target != "" || pr.Port != 0 {
		t.Errorf("pairing %+v", pr)
	}
	wantStep(t, pr, pairing.StepResolve, pairing.StatusSkipped, "", "reverse-mode")
	conn := wantStep(t, pr, pairing.StepConnect, pairing.StatusOK, "", ag.Fingerprint().Short())
	var cd ConnectData
	stepData(t, conn, &cd)
	if cd.Fingerprint != ag.Fingerprint().String() {
		t.Errorf("connect data %+v, want agent key %s", cd, ag.Fingerprint())
	}
	for _, name := range []string{pairing.StepLicense, pairing.StepInspect, pairing.StepDataset, pairing.StepSettings} {
		wantStep(t, pr, name, pairing.StatusOK, "")
	}
	stored, ok := a.activation("rev01")
	if !ok {
		t.Fatal("no activation stored")
	}
	if v := a.p.Verdict(stored, ag.Fingerprint().String(), time.Now()); !v.Licensed() {
		t.Errorf("verdict %+v", v)
	}
	if rec, _ := a.agent("rev01"); rec.Mode != catalog.ModeReverse || rec.Dataset != a.datasetName("rev01").String() {
		t.Errorf("agent record %+v", rec)
	}
	if got := svc.used(key, a.applianceID()); got != 1 {
		t.Errorf("service: %d seats used, want 1", got)
	}

	// A direct-mode request for a reverse-mode agent is refused.
	var re *RequestError
	if _, err := a.p.Start(ctx, Request{Target: "127.0.0.1", AgentID: "rev01", ProductKey: key.Reveal()}); !errors.As(err, &re) || re.Code != "mode_mismatch" {
		t.Errorf("direct-mode pairing of a reverse-mode agent: %v, want mode_mismatch", err)
	}

	// An agent whose token was created but that never connected.
	if _, err := a.gw.CreateAgentToken(ctx, "rev02", "test"); err != nil {
		t.Fatal(err)
	}
	pr = a.pair(Request{AgentID: "rev02", ProductKey: key.Reveal()})
	wantState(t, pr, catalog.PairingFailed)
	wantStep(t, pr, pairing.StepResolve, pairing.StatusSkipped, "")
	wantStep(t, pr, pairing.StepConnect, pairing.StatusFailed, "not_connected", "rev02", "remedy:", "agent token")
	wantPendingAfter(t, pr, pairing.StepConnect)
}

// TestUnpair releases the seat, keeps or destroys the dataset and forgets
// the agent; a seat that cannot be released stops it unless forced.
func TestUnpair(t *testing.T) {
	t.Parallel()
	forgotten := func(t *testing.T, a *testAppliance, agentID string) {
		t.Helper()
		if _, ok := a.agent(agentID); ok {
			t.Errorf("agent %s still stored", agentID)
		}
		if _, ok := a.activation(agentID); ok {
			t.Errorf("activation of %s still stored", agentID)
		}
		if _, ok := a.settings(agentID); ok {
			t.Errorf("settings of %s still stored", agentID)
		}
		if ps := a.pairingsOf(agentID); len(ps) != 0 {
			t.Errorf("pairings of %s still stored: %d", agentID, len(ps))
			for _, p := range ps {
				if _, ok := a.sealed(keySecret(p.ID)); ok {
					t.Errorf("product key of pairing %d still stored", p.ID)
				}
			}
		}
		if _, ok := a.sealed(AgentKeySecret(agentID)); ok {
			t.Errorf("product key of %s still stored", agentID)
		}
		logtest.WaitFor(t, agentID+" to be disconnected", func() bool { return !a.connected(agentID) })
		if acts := a.auditActions(agentID); !slices.Contains(acts, "agent.unpaired") {
			t.Errorf("audit of %s: %v", agentID, acts)
		}
	}
	dnsAddr := startDNS(t, newZone())

	t.Run("keep and destroy", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
		defer cancel()
		svc := newService(t)
		key := svc.key(2)
		a := newAppliance(t, "appliance-a", svc, dnsConfig(dnsAddr))
		ag1, ag2 := startAgent(t, nil), startAgent(t, nil)
		wantState(t, a.pair(Request{Target: "127.0.0.1", AgentID: "keep", Port: ag1.port, ProductKey: key.Reveal()}), catalog.PairingDone)
		wantState(t, a.pair(Request{Target: "127.0.0.1", AgentID: "gone", Port: ag2.port, ProductKey: key.Reveal()}), catalog.PairingDone)
		if got := svc.used(key, a.applianceID()); got != 2 {
			t.Fatalf("service: %d seats used, want 2", got)
		}

		res, err := a.p.Unpair(ctx, "keep", false, false, "test")
		if err != nil {
			t.Fatal(err)
		}
		if !res.SeatReleased || res.Dataset != a.datasetName("keep").String() || res.DatasetDestroyed {
			t.Errorf("Unpair(keep) = %+v", res)
		}
		if !a.hasDataset("keep") {
			t.Errorf("the kept dataset is gone")
		}
		forgotten(t, a, "keep")
		if got := svc.used(key, a.applianceID()); got != 1 {
			t.Errorf("service: %d seats used after one unpairing, want 1", got)
		}

		res, err = a.p.Unpair(ctx, "gone", true, false, "test")
		if err != nil {
			t.Fatal(err)
		}
		if !res.SeatReleased || res.Dataset != a.datasetName("gone").String() || !res.DatasetDestroyed {
			t.Errorf("Unpair(gone, destroy) = %+v", res)
		}
		if a.hasDataset("gone") {
			t.Errorf("the destroyed dataset is still there")
		}
		forgotten(t, a, "gone")
		if got := svc.used(key, a.applianceID()); got != 0 {
			t.Errorf("service: %d seats used after unpairing both, want 0", got)
		}
		if _, err := a.p.Unpair(ctx, "gone", false, false, "test"); !errors.Is(err, catalog.ErrNotFound) {
			t.Errorf("Unpair of an unknown agent: %v, want ErrNotFound", err)
		}

		// The agent can be paired again (it is still pinned to this
		// appliance) and takes a seat again.
		pr := a.pair(Request{Target: "127.0.0.1", AgentID: "keep", Port: ag1.port, ProductKey: key.Reveal()})
		wantState(t, pr, catalog.PairingDone)
		wantStep(t, pr, pairing.StepDataset, pairing.StatusOK, "", "kept")
		if got := svc.used(key, a.applianceID()); got != 1 {
			t.Errorf("service: %d seats used after pairing again, want 1", got)
		}
	})

	t.Run("failed pairings forgotten", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
		defer cancel()
		svc := newService(t)
		spent, key := svc.key(1), svc.key(1)
		a := newAppliance(t, "appliance-a", svc, dnsConfig(dnsAddr))
		other, ag := startAgent(t, nil), startAgent(t, nil)
		wantState(t, a.pair(Request{Target: "127.0.0.1", AgentID: "other", Port: other.port, ProductKey: spent.Reveal()}), catalog.PairingDone)
		failed := a.pair(Request{Target: "127.0.0.1", AgentID: "web01", Port: ag.port, ProductKey: spent.Reveal()})
		licenseFailed(t, a, failed, licensing.CodeNoSeats)
		wantState(t, a.pair(Request{Target: "127.0.0.1", AgentID: "web01", Port: ag.port, ProductKey: key.Reveal()}), catalog.PairingDone)
		if _, err := a.p.Unpair(ctx, "web01", false, false, "test"); err != nil {
			t.Fatal(err)
		}
		forgotten(t, a, "web01")
		if _, ok := a.sealed(keySecret(failed.ID)); ok {
			t.Errorf("the product key of failed pairing %d outlives its pairing", failed.ID)
		}
	})

	t.Run("service unreachable", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
		defer cancel()
		svc := newService(t)
		key := svc.key(1)
		a := newAppliance(t, "appliance-a", svc, dnsConfig(dnsAddr))
		ag := startAgent(t, nil)
		wantState(t, a.pair(Request{Target: "127.0.0.1", AgentID: "web01", Port: ag.port, ProductKey: key.Reveal()}), catalog.PairingDone)
		svc.hs.Close()
		_, err := a.p.Unpair(ctx, "web01", true, false, "test")
		if !errors.Is(err, licensing.ErrUnreachable) || !strings.Contains(err.Error(), "force") {
			t.Fatalf("Unpair with the service down: %v, want an unreachable error that mentions force", err)
		}
		if strings.Contains(err.Error(), key.Reveal()) {
			t.Errorf("the error shows the product key: %v", err)
		}
		if _, ok := a.agent("web01"); !ok {
			t.Errorf("the agent was deleted by a failed unpairing")
		}
		if _, ok := a.activation("web01"); !ok {
			t.Errorf("the activation was deleted by a failed unpairing")
		}
		if !a.hasDataset("web01") {
			t.Errorf("the dataset was destroyed by a failed unpairing")
		}
		if _, ok := a.sealed(AgentKeySecret("web01")); !ok {
			t.Errorf("the agent's product key was deleted by a failed unpairing")
		}
		res, err := a.p.Unpair(ctx, "web01", true, true, "test")
		if err != nil {
			t.Fatalf("forced Unpair: %v", err)
		}
		if res.SeatReleased || !res.DatasetDestroyed {
			t.Errorf("forced Unpair = %+v, want seat not released, dataset destroyed", res)
		}
		if a.hasDataset("web01") {
			t.Errorf("the dataset is still there")
		}
		forgotten(t, a, "web01")
	})
}

func TestAgentIDFromHost(t *testing.T) {
	t.Parallel()
	root, err := zfs.ParseDatasetName("tank")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ host, want string }{
		{"web01", "web01"},
		{"web01.corp.example", "web01"},
		{"WEB01.Corp.Example.", "web01"},
		{" web01 ", "web01"},
		{"10.0.0.5", "10-0-0-5"},
		{"192.168.1.200", "192-168-1-200"},
		{"fe80::1", "fe80-1"},
		{"[2001:db8::5]", "2001-db8-5"},
		{"::1", "1"},
		{"sql_server-01.corp", "sql-server-01"},
		{"web--01", "web-01"},
		{"-web-", "web"},
		{"_.example", "agent"},
		{"", "agent"},
		{"...", "agent"},
		{"café", "caf"},
		{strings.Repeat("a", 80) + ".example", strings.Repeat("a", 63)},
		{strings.Repeat("a", 62) + "-b", strings.Repeat("a", 62)},
	} {
		got := AgentIDFromHost(tc.host)
		if got != tc.want {
			t.Errorf("AgentIDFromHost(%q) = %q, want %q", tc.host, got, tc.want)
		}
		// Every ID is one the catalog and the pool accept.
		if len(got) == 0 || len(got) > 63 || strings.HasPrefix(got, "-") || strings.HasSuffix(got, "-") || strings.Trim(got, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			t.Errorf("AgentIDFromHost(%q) = %q is not a valid agent ID", tc.host, got)
		}
		if _, err := zfs.AgentDataset(root, got); err != nil {
			t.Errorf("AgentIDFromHost(%q) = %q: no dataset name: %v", tc.host, got, err)
		}
	}
}

// TestStartWhileRunning: a second Start for an agent whose pairing runs
// returns the running one, and stores nothing.
func TestStartWhileRunning(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(1)
	z := newZone()
	z.add("web01."+testDomain, "127.0.0.1")
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, z)))
	ag := startAgent(t, nil)
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	a.p.hookStep = func(ctx context.Context, _ uint64, step string) {
		if step == pairing.StepResolve {
			select {
			case held <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	}
	req := Request{Target: "web01", Port: ag.port, ProductKey: key.Reveal()}
	first := a.start(req)
	select {
	case <-held:
	case <-time.After(2 * waitTimeout):
		t.Fatal("the Resolve step did not start")
	}
	for _, r := range []Request{req, {Target: "web01.corp.test", Port: ag.port, ProductKey: key.Reveal()}, {Target: "127.0.0.1", AgentID: "web01", ProductKey: key.Reveal()}} {
		again := a.start(r)
		if again.ID != first.ID || again.State != catalog.PairingRunning {
			t.Errorf("second Start(%+v) = pairing %d %s, want the running %d", r, again.ID, again.State, first.ID)
		}
	}
	if ps := a.pairingsOf("web01"); len(ps) != 1 {
		t.Errorf("%d pairings of web01 stored, want 1", len(ps))
	}
	if _, ok := a.sealed(keySecret(first.ID + 1)); ok {
		t.Errorf("a second product key was stored")
	}
	// Unpairing waits for the pairing to end: it could take a seat after
	// the unpairing released it.
	var re *RequestError
	if _, err := a.p.Unpair(context.Background(), "web01", false, true, "test"); !errors.As(err, &re) || re.Code != "pairing_running" {
		t.Errorf("Unpair during a pairing: %v, want pairing_running", err)
	}
	close(release)
	pr := a.wait(first.ID)
	paired(t, a, ag, pr, key, pairing.DefaultSettings())
}

// TestRetryWhileFinishing: a Retry that comes while the run of the failed
// attempt is still winding down (its state stored, its goroutine not yet
// gone) runs the pairing again rather than leave it "running" forever.
func TestRetryWhileFinishing(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(1)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	port := freePort(t)
	var once sync.Once
	retried := make(chan error, 1)
	var id uint64
	var idMu sync.Mutex
	a.p.hookRunDone = func(uint64) {
		once.Do(func() {
			// The first attempt failed (Connect: nothing listens) and is
			// stored so; the operator retries at once, having started
			// the agent.
			ln, err := net.Listen("tcp", "127.0.0.1:"+portString(port))
			if err != nil {
				retried <- err
				return
			}
			startAgentOn(t, ln, t.TempDir(), nil)
			idMu.Lock()
			pid := id
			idMu.Unlock()
			_, err = a.p.Retry(context.Background(), pid)
			retried <- err
		})
	}
	idMu.Lock()
	pr := a.start(Request{Target: "127.0.0.1", AgentID: "web01", Port: port, ProductKey: key.Reveal()})
	id = pr.ID
	idMu.Unlock()
	select {
	case err := <-retried:
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
	case <-time.After(2 * waitTimeout):
		t.Fatal("the first run did not end")
	}
	pr = a.wait(pr.ID)
	wantState(t, pr, catalog.PairingDone)
	if s := pr.step(pairing.StepConnect); s.Attempts != 2 {
		t.Errorf("Connect ran %d times, want 2", s.Attempts)
	}
}

// TestSettingsInvalidVolume: settings naming a volume the agent does not
// have fail the Settings step, naming it; nothing is stored.
func TestSettingsInvalidVolume(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(1)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	ag := startAgent(t, nil)
	s := pairing.DefaultSettings()
	s.Volumes = []string{"/dev/no-such-volume"}
	pr := a.pair(Request{Target: "127.0.0.1", AgentID: "web01", Port: ag.port, ProductKey: key.Reveal(), Settings: &s})
	wantState(t, pr, catalog.PairingFailed)
	wantStep(t, pr, pairing.StepDataset, pairing.StatusOK, "")
	wantStep(t, pr, pairing.StepSettings, pairing.StatusFailed, "invalid_settings", "/dev/no-such-volume", "remedy:", "retry")
	if _, ok := a.settings("web01"); ok {
		t.Errorf("invalid settings stored")
	}
}

// TestCloseStopsPairings: Close ends a running pairing's step promptly;
// Wait then reports the Pairer closed.
func TestCloseStopsPairings(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(1)
	cfg := dnsConfig(silentDNS(t))
	cfg.Timeout, cfg.Attempts = time.Minute, 1
	a := newAppliance(t, "appliance-a", svc, cfg)
	held := make(chan struct{})
	var once sync.Once
	a.p.hookStep = func(_ context.Context, _ uint64, step string) {
		if step == pairing.StepResolve {
			once.Do(func() { close(held) })
		}
	}
	pr := a.start(Request{Target: "web01", ProductKey: key.Reveal()})
	select {
	case <-held:
	case <-time.After(2 * waitTimeout):
		t.Fatal("the Resolve step did not start")
	}
	start := time.Now()
	a.p.Close()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Close took %s", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	got, err := a.p.Wait(ctx, pr.ID)
	if !errors.Is(err, context.Canceled) || got.State != catalog.PairingRunning {
		t.Errorf("Wait after Close: %s, %v; want running, context.Canceled", got.State, err)
	}
	if s := got.step(pairing.StepResolve); s.Status != pairing.StatusRunning {
		t.Errorf("Resolve %s, want left running for the next start", s.Status)
	}
}

// TestRenew: activations are renewed when due; a refusal ends the license
// at once, an unreachable service leaves it licensed until the activation
// expires and then for the grace period.
func TestRenew(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(2)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	ag := startAgent(t, nil)
	pr := a.pair(Request{Target: "127.0.0.1", AgentID: "web01", Port: ag.port, ProductKey: key.Reveal()})
	wantState(t, pr, catalog.PairingDone)
	fp := ag.Fingerprint().String()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	first, _ := a.activation("web01")

	now := time.Now()
	if err := a.p.RenewDue(ctx, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.activation("web01"); !got.ValidatedAt.Equal(first.ValidatedAt) {
		t.Errorf("renewed an hour after the activation: validated %s, was %s", got.ValidatedAt, first.ValidatedAt)
	}
	day := now.Add(licensing.RenewEvery + time.Minute)
	if err := a.p.RenewDue(ctx, day); err != nil {
		t.Fatal(err)
	}
	renewed, _ := a.activation("web01")
	if !renewed.ValidatedAt.Equal(day) || renewed.LastError != "" || string(renewed.Signed) == string(first.Signed) {
		t.Errorf("after a day: %+v; want renewed at %s", renewed, day)
	}
	if v := a.p.Verdict(renewed, fp, now); v.State != licensing.Valid {
		t.Errorf("verdict after renewal: %+v", v)
	}
	if got := svc.used(key, a.applianceID()); got != 1 {
		t.Errorf("service: %d seats used after renewal, want 1", got)
	}

	// The service down: still licensed, then in grace, then not.
	svc.hs.Close()
	down := day.Add(licensing.RenewEvery + time.Minute)
	if err := a.p.RenewDue(ctx, down); err != nil {
		t.Fatal(err)
	}
	act, _ := a.activation("web01")
	if !strings.HasPrefix(act.LastError, unreachablePrefix) || !act.LastErrorAt.Equal(down) {
		t.Errorf("after a failed renewal: last error %q at %s", act.LastError, act.LastErrorAt)
	}
	if v := a.p.Verdict(act, fp, down); v.State != licensing.Valid || !strings.Contains(v.Reason, "unreachable") {
		t.Errorf("verdict with the service down: %+v", v)
	}
	retry := down.Add(licensing.RetryEvery + time.Minute)
	if err := a.p.RenewDue(ctx, retry); err != nil {
		t.Fatal(err)
	}
	if again, _ := a.activation("web01"); !again.LastErrorAt.Equal(down) {
		t.Errorf("the grace count restarted at the retry: %s, want %s", again.LastErrorAt, down)
	}
	exp := act.Expires
	if v := a.p.Verdict(act, fp, exp.Add(time.Hour)); v.State != licensing.InGrace {
		t.Errorf("verdict an hour after expiry, service down: %+v", v)
	}
	if v := a.p.Verdict(act, fp, exp.Add(licensing.GracePeriod+time.Hour)); v.Licensed() {
		t.Errorf("verdict after the grace period: %+v", v)
	}
	if v := a.p.Verdict(act, "SHA256:another", down); v.Licensed() {
		t.Errorf("verdict for another agent key: %+v", v)
	}
}

// TestRenewRefused: a revoked key ends the license at the next renewal.
func TestRenewRefused(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(1)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	ag := startAgent(t, nil)
	wantState(t, a.pair(Request{Target: "127.0.0.1", AgentID: "web01", Port: ag.port, ProductKey: key.Reveal()}), catalog.PairingDone)
	svc.revoke(key)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	day := time.Now().Add(licensing.RenewEvery + time.Minute)
	if err := a.p.RenewDue(ctx, day); err != nil {
		t.Fatal(err)
	}
	act, _ := a.activation("web01")
	if !strings.HasPrefix(act.LastError, refusedPrefix+licensing.CodeKeyRevoked) || !act.LastErrorAt.Equal(day) {
		t.Errorf("after a refused renewal: last error %q at %s", act.LastError, act.LastErrorAt)
	}
	if v := a.p.Verdict(act, ag.Fingerprint().String(), day); v.Licensed() || !strings.Contains(v.Reason, "refused") {
		t.Errorf("verdict after a refusal: %+v", v)
	}
	if acts := a.auditActions("web01"); !slices.Contains(acts, "license.refused") {
		t.Errorf("audit: %v", acts)
	}
}

// TestConnectKeyMismatch: another machine (another agent key) at the
// address of a paired agent fails Connect with key_mismatch; nothing of
// the paired agent changes.
func TestConnectKeyMismatch(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	key := svc.key(2)
	a := newAppliance(t, "appliance-a", svc, dnsConfig(startDNS(t, newZone())))
	ag := startAgent(t, nil)
	req := Request{Target: "127.0.0.1", AgentID: "web01", Port: ag.port, ProductKey: key.Reveal()}
	wantState(t, a.pair(req), catalog.PairingDone)
	ag.stop()
	logtest.WaitFor(t, "web01 to be disconnected", func() bool { return !a.connected("web01") })
	ln, err := net.Listen("tcp", ag.addr)
	if err != nil {
		t.Skipf("port %d was taken meanwhile: %v", ag.port, err)
	}
	impostor := startAgentOn(t, ln, t.TempDir(), nil)
	pr := a.pair(req)
	wantState(t, pr, catalog.PairingFailed)
	wantStep(t, pr, pairing.StepConnect, pairing.StatusFailed, "key_mismatch", "remedy:", "cairn-agent unpair")
	wantPendingAfter(t, pr, pairing.StepConnect)
	if rec, _ := a.agent("web01"); rec.Fingerprint != ag.Fingerprint().String() {
		t.Errorf("agent key %s, want the paired one %s (not %s)", rec.Fingerprint, ag.Fingerprint(), impostor.Fingerprint())
	}
	if _, ok, _ := agent.ReadPin(impostor.dir); ok {
		t.Errorf("the other machine pinned this appliance")
	}
	if got := svc.used(key, a.applianceID()); got != 1 {
		t.Errorf("service: %d seats used, want 1", got)
	}
}
