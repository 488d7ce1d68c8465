package server

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/licensing"
)

func TestActivateSeatsAndIdempotency(t *testing.T) {
	e := newEnv(t)
	k := e.key(2)

	a1, err := e.activate(k, "app-1", "agent-a")
	if err != nil {
		t.Fatal(err)
	}
	want := licensing.Activation{KeyID: k.ID(), AgentFingerprint: "agent-a", ApplianceID: "app-1", Hostname: "host-agent-a",
		Edition: "std", Issued: t0, Expires: t0.Add(DefaultActivationTTL), Serial: a1.Serial}
	if a1 != want || len(a1.Serial) != serialSymbols {
		t.Fatalf("activation %+v, want %+v", a1, want)
	}

	// The same agent on the same appliance again: a new signature, no new seat.
	e.clock.Advance(24 * time.Hour)
	a2, err := e.activate(k, "app-1", "agent-a")
	if err != nil {
		t.Fatal(err)
	}
	if a2.Serial == a1.Serial || !a2.Issued.Equal(t0.Add(24*time.Hour)) || !a2.Expires.Equal(a2.Issued.Add(DefaultActivationTTL)) {
		t.Fatalf("renewal %+v after %+v", a2, a1)
	}
	if n := e.used(k); n != 1 {
		t.Fatalf("used seats after a renewal = %d, want 1", n)
	}
	if _, err := e.activate(k, "app-1", "agent-b"); err != nil {
		t.Fatal(err)
	}
	_, err = e.activate(k, "app-1", "agent-c")
	wantCode(t, err, licensing.CodeNoSeats)
	if !licensing.IsRefusal(err) {
		t.Fatalf("no_seats is not a refusal: %v", err)
	}
	// Renewing the held seats still works when the key is full.
	if _, err := e.activate(k, "app-1", "agent-b"); err != nil {
		t.Fatalf("renewal with all seats taken: %v", err)
	}

	// Deactivating releases the seat, once; a second time is not an error.
	if err := e.deactivate(k, "app-1", "agent-a"); err != nil {
		t.Fatal(err)
	}
	if err := e.deactivate(k, "app-1", "agent-a"); err != nil {
		t.Fatalf("second deactivate: %v", err)
	}
	if err := e.deactivate(k, "app-1", "never-activated"); err != nil {
		t.Fatalf("deactivate of an unknown agent: %v", err)
	}
	if _, err := e.activate(k, "app-1", "agent-c"); err != nil {
		t.Fatalf("activate after a seat was released: %v", err)
	}
	if n := e.used(k); n != 2 {
		t.Fatalf("used = %d, want 2", n)
	}

	st, err := e.client.Status(context.Background(), licensing.StatusRequest{Key: k, ApplianceID: "app-1"})
	if err != nil {
		t.Fatal(err)
	}
	if st.KeyID != k.ID() || st.Seats != 2 || st.Used != 2 || st.State != licensing.KeyActive || len(st.Activations) != 2 {
		t.Fatalf("status %+v", st)
	}
	st, err = e.client.Status(context.Background(), licensing.StatusRequest{Key: k, ApplianceID: "app-2"})
	if err != nil || st.Used != 2 || len(st.Activations) != 0 {
		t.Fatalf("status for another appliance %+v, %v: it must not list app-1's agents", st, err)
	}
}

func TestActivationCappedByKeyExpiry(t *testing.T) {
	e := newEnv(t)
	k, _, err := e.store.CreateKey(context.Background(), CreateKeyRequest{Edition: "pro", Seats: 1, Expires: t0.Add(10 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.activate(k, "app-1", "agent-a")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Expires.Equal(t0.Add(10*24*time.Hour)) || a.Edition != "pro" {
		t.Fatalf("activation %+v: want it to expire with the key", a)
	}
	e.clock.Advance(10 * 24 * time.Hour)
	_, err = e.activate(k, "app-1", "agent-a")
	wantCode(t, err, licensing.CodeKeyExpired)
}

func TestUnknownAndMalformedKeys(t *testing.T) {
	e := newEnv(t)
	e.key(5)
	other, err := licensing.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.activate(other, "app-1", "agent-a")
	wantCode(t, err, licensing.CodeKeyInvalid)
	err = e.deactivate(other, "app-1", "agent-a")
	wantCode(t, err, licensing.CodeKeyInvalid)

	// A key with a bad check symbol never reaches the service through the
	// client; sent raw, the service refuses it without quoting it.
	good := e.key(1).Reveal()
	bad := []byte(good)
	bad[0] = map[bool]byte{true: '1', false: '0'}[bad[0] == '0']
	if _, err := licensing.ParseKey(string(bad)); err == nil {
		t.Fatal("ParseKey accepted a typo")
	}
	status, body := post(t, e.url+"/v1/activate", fmt.Sprintf(`{"key":%q,"appliance_id":"app-1","agent_fingerprint":"a"}`, bad))
	if status != http.StatusForbidden || !strings.Contains(body, `"key_invalid"`) || strings.Contains(body, string(bad)) {
		t.Fatalf("raw bad-checksum key: %d %s", status, body)
	}
}

func TestRevokedKey(t *testing.T) {
	e := newEnv(t)
	k := e.key(2)
	if _, err := e.activate(k, "app-1", "agent-a"); err != nil {
		t.Fatal(err)
	}
	info, err := e.store.RevokeKey(context.Background(), k.ID(), "alice", "chargeback")
	if err != nil || info.State != licensing.KeyRevoked || info.Used != 1 {
		t.Fatalf("RevokeKey = %+v, %v", info, err)
	}
	_, err = e.activate(k, "app-1", "agent-a")
	wantCode(t, err, licensing.CodeKeyRevoked)
	_, err = e.activate(k, "app-1", "agent-b")
	wantCode(t, err, licensing.CodeKeyRevoked)
	st, err := e.client.Status(context.Background(), licensing.StatusRequest{Key: k, ApplianceID: "app-1"})
	if err != nil || st.State != licensing.KeyRevoked {
		t.Fatalf("status of a revoked key %+v, %v", st, err)
	}
	if err := e.deactivate(k, "app-1", "agent-a"); err != nil {
		t.Fatalf("deactivate with a revoked key: %v", err)
	}
	// The agent's seat under the revoked key binds nothing: another key
	// may activate it on another appliance.
	k2 := e.key(1)
	if _, err := e.store.RevokeKey(context.Background(), k.ID(), "", ""); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	if _, err := e.activate(k2, "app-2", "agent-a"); err != nil {
		t.Fatalf("agent of a revoked key on another appliance with a new key: %v", err)
	}
	d, err := e.store.ShowKey(context.Background(), k.ID())
	if err != nil {
		t.Fatal(err)
	}
	var revokes int
	for _, r := range d.Audit {
		if r.Action == AuditKeyRevoke {
			revokes++
			if r.Actor != "alice" || r.Reason != "chargeback" {
				t.Fatalf("revoke audit %+v", r)
			}
		}
	}
	if revokes != 1 {
		t.Fatalf("%d revoke audit records, want 1 (revoking twice changes nothing)", revokes)
	}
}

func TestRevokedKeyReleasedOnActivationWithAnother(t *testing.T) {
	e := newEnv(t)
	k1, k2 := e.key(1), e.key(1)
	if _, err := e.activate(k1, "app-1", "agent-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.RevokeKey(context.Background(), k1.ID(), "alice", "fraud"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.activate(k2, "app-2", "agent-a"); err != nil {
		t.Fatal(err)
	}
	d, err := e.store.ShowKey(context.Background(), k1.ID())
	if err != nil {
		t.Fatal(err)
	}
	if d.Key.Used != 0 || len(d.Activations) != 1 || d.Activations[0].ReleasedBy != ReleasedByKeyEnd {
		t.Fatalf("old key after the agent moved: %+v", d)
	}
}

func TestActiveElsewhere(t *testing.T) {
	e := newEnv(t)
	k := e.key(5)
	if _, err := e.activate(k, "app-1", "agent-a"); err != nil {
		t.Fatal(err)
	}
	_, err := e.activate(k, "app-2", "agent-a")
	wantCode(t, err, licensing.CodeActiveElsewhere)
	if strings.Contains(err.Error(), "app-1") || strings.Contains(err.Error(), "host-agent-a") {
		t.Fatalf("active_elsewhere names the other appliance: %v", err)
	}
	// Another key does not help: one agent, one appliance.
	_, err = e.activate(e.key(5), "app-2", "agent-a")
	wantCode(t, err, licensing.CodeActiveElsewhere)
	// Only the appliance that holds the seat may release it.
	err = e.deactivate(k, "app-2", "agent-a")
	wantCode(t, err, licensing.CodeActiveElsewhere)
	if n := e.used(k); n != 1 {
		t.Fatalf("used = %d", n)
	}
	if err := e.deactivate(k, "app-1", "agent-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.activate(k, "app-2", "agent-a"); err != nil {
		t.Fatalf("activate on app-2 after app-1 released: %v", err)
	}
}

func TestForceRelease(t *testing.T) {
	e := newEnv(t)
	k := e.key(1)
	if _, err := e.activate(k, "app-1", "agent-a"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.store.ForceRelease(ctx, ForceReleaseRequest{KeyID: k.ID(), AgentFingerprint: "agent-a", Actor: "bob"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ForceRelease without a reason: %v", err)
	}
	if _, err := e.store.ForceRelease(ctx, ForceReleaseRequest{KeyID: k.ID(), AgentFingerprint: "agent-x", Reason: "x"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ForceRelease of an agent without activation: %v", err)
	}
	a, err := e.store.ForceRelease(ctx, ForceReleaseRequest{KeyID: k.ID(), AgentFingerprint: "agent-a", Actor: "bob", Reason: "appliance app-1 destroyed, ticket 42"})
	if err != nil || a.ApplianceID != "app-1" || a.Active() || a.ReleasedBy != ReleasedByVendor {
		t.Fatalf("ForceRelease = %+v, %v", a, err)
	}
	if _, err := e.activate(k, "app-2", "agent-a"); err != nil {
		t.Fatalf("activate on app-2 after a forced release: %v", err)
	}
	// app-1, renewing, now finds the agent elsewhere.
	_, err = e.activate(k, "app-1", "agent-a")
	wantCode(t, err, licensing.CodeActiveElsewhere)
	d, err := e.store.ShowKey(ctx, k.ID())
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range d.Audit {
		if r.Action == AuditForceRelease {
			found = r.Actor == "bob" && r.Reason == "appliance app-1 destroyed, ticket 42" && r.ApplianceID == "app-1" && r.AgentFingerprint == "agent-a"
		}
	}
	if !found {
		t.Fatalf("no audit record of the forced release: %+v", d.Audit)
	}
	if _, err := e.store.ForceRelease(ctx, ForceReleaseRequest{KeyID: k.ID(), AgentFingerprint: "agent-a", Reason: "again"}); err != nil {
		t.Fatalf("ForceRelease of the new activation: %v", err)
	}
}

// Activating an agent on its appliance with another key moves its seat; if
// the new key has no seat, nothing changes.
func TestReplaceKeyOnSameAppliance(t *testing.T) {
	e := newEnv(t)
	k1, k2, full := e.key(1), e.key(1), e.key(1)
	if _, err := e.activate(full, "app-9", "agent-z"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.activate(k1, "app-1", "agent-a"); err != nil {
		t.Fatal(err)
	}
	_, err := e.activate(full, "app-1", "agent-a")
	wantCode(t, err, licensing.CodeNoSeats)
	if e.used(k1) != 1 {
		t.Fatal("a refused move released the old seat")
	}
	a, err := e.activate(k2, "app-1", "agent-a")
	if err != nil || a.KeyID != k2.ID() {
		t.Fatalf("move to k2: %+v, %v", a, err)
	}
	if e.used(k1) != 0 || e.used(k2) != 1 {
		t.Fatalf("after the move: k1 used %d, k2 used %d", e.used(k1), e.used(k2))
	}
	if _, err := e.activate(k1, "app-2", "agent-b"); err != nil {
		t.Fatalf("k1's seat was not freed: %v", err)
	}
}

// N different agents race for fewer seats: exactly Seats win, in each of a
// few rounds.
func TestConcurrentActivationsNeverOversell(t *testing.T) {
	e := newEnv(t)
	const seats, n, rounds = 3, 24, 3
	for round := range rounds {
		k := e.key(seats)
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = e.activate(k, fmt.Sprintf("app-%d", i%4), fmt.Sprintf("agent-%d-%d", round, i))
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
				continue
			}
			wantCode(t, err, licensing.CodeNoSeats)
		}
		if won != seats {
			t.Fatalf("round %d: %d activations succeeded, want exactly %d", round, won, seats)
		}
		if u := e.used(k); u != seats {
			t.Fatalf("round %d: store counts %d used seats, want %d", round, u, seats)
		}
	}
}

// One agent raced from several appliances: exactly one appliance wins, and
// the same appliance racing itself takes one seat.
func TestConcurrentSameAgent(t *testing.T) {
	e := newEnv(t)
	k := e.key(10)
	const n = 12
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = e.activate(k, fmt.Sprintf("app-%d", i%3), "agent-a")
		}()
	}
	close(start)
	wg.Wait()
	winners := map[string]int{}
	for i, err := range errs {
		if err == nil {
			winners[fmt.Sprintf("app-%d", i%3)]++
			continue
		}
		wantCode(t, err, licensing.CodeActiveElsewhere)
	}
	if len(winners) != 1 {
		t.Fatalf("appliances that activated the agent: %v, want exactly one", winners)
	}
	for _, c := range winners {
		if c != n/3 {
			t.Fatalf("the winning appliance succeeded %d of %d times", c, n/3)
		}
	}
	if u := e.used(k); u != 1 {
		t.Fatalf("used = %d, want 1", u)
	}
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	key := e.key(1).Reveal()
	for _, tc := range []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"not JSON", "/v1/activate", `key=` + key, 400, licensing.CodeBadRequest},
		{"unknown field", "/v1/activate", fmt.Sprintf(`{"key":%q,"appliance_id":"a","agent_fingerprint":"b","seats":9}`, key), 400, licensing.CodeBadRequest},
		{"wrong type", "/v1/activate", `{"key":42}`, 400, licensing.CodeBadRequest},
		{"two objects", "/v1/activate", fmt.Sprintf(`{"key":%q,"appliance_id":"a","agent_fingerprint":"b"}{}`, key), 400, licensing.CodeBadRequest},
		{"no appliance", "/v1/activate", fmt.Sprintf(`{"key":%q,"agent_fingerprint":"b"}`, key), 400, licensing.CodeBadRequest},
		{"no agent", "/v1/activate", fmt.Sprintf(`{"key":%q,"appliance_id":"a"}`, key), 400, licensing.CodeBadRequest},
		{"agent with space", "/v1/deactivate", fmt.Sprintf(`{"key":%q,"appliance_id":"a","agent_fingerprint":"b c"}`, key), 400, licensing.CodeBadRequest},
		{"hostname with newline", "/v1/activate", fmt.Sprintf(`{"key":%q,"appliance_id":"a","agent_fingerprint":"b","hostname":"x\ny"}`, key), 400, licensing.CodeBadRequest},
		{"no key", "/v1/status", `{"appliance_id":"a"}`, 403, licensing.CodeKeyInvalid},
		{"huge body", "/v1/activate", `{"key":"` + strings.Repeat("A", maxRequestLen) + `"}`, 400, licensing.CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(t, e.url+tc.path, tc.body)
			var reply struct {
				Error licensing.ServiceError `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &reply); err != nil || status != tc.status || reply.Error.Code != tc.code {
				t.Fatalf("%d %s, want %d %s", status, body, tc.status, tc.code)
			}
			if strings.Contains(body, key) || strings.Contains(body, strings.ReplaceAll(key, "-", "")) {
				t.Fatalf("reply %s quotes the key", body)
			}
		})
	}
	resp, err := http.Get(e.url + "/v1/activate?key=" + key)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /v1/activate: %d", resp.StatusCode)
	}
}

func TestPublicKeyEndpoint(t *testing.T) {
	e := newEnv(t)
	resp, err := http.Get(e.url + "/v1/public-key")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reply struct {
		PublicKey string `json:"public_key"`
		SignerID  string `json:"signer_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		t.Fatal(err)
	}
	pub, err := licensing.ParsePublicKey(reply.PublicKey)
	if err != nil || !pub.Equal(e.pub) || reply.SignerID != licensing.SignerID(e.pub) {
		t.Fatalf("public key %+v", reply)
	}
}

// Keys never reach the logs, in success or failure, nor the store file.
func TestKeysNotInLogs(t *testing.T) {
	e := newEnv(t)
	k := e.key(1)
	unknown, err := licensing.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = e.activate(k, "app-1", "agent-a")
	_, _ = e.activate(k, "app-1", "agent-b")
	_, _ = e.activate(k, "app-2", "agent-a")
	_, _ = e.activate(unknown, "app-1", "agent-c")
	_ = e.deactivate(k, "app-1", "agent-a")
	_, _ = e.client.Status(context.Background(), licensing.StatusRequest{Key: k, ApplianceID: "app-1"})
	logs := e.logs.String()
	for _, key := range []licensing.Key{k, unknown} {
		for _, form := range []string{key.Reveal(), strings.ReplaceAll(key.Reveal(), "-", "")} {
			if strings.Contains(logs, form) {
				t.Fatalf("logs contain a key:\n%s", logs)
			}
		}
	}
	for _, want := range []string{"key=" + k.ID(), "key=" + unknown.ID(), "code=" + licensing.CodeNoSeats, "code=" + licensing.CodeActiveElsewhere, "code=" + licensing.CodeKeyInvalid} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs do not say %q:\n%s", want, logs)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	e := newEnv(t)
	_, priv, _ := ed25519.GenerateKey(nil)
	for name, cfg := range map[string]Config{
		"no store":       {SigningKey: priv},
		"no signing key": {Store: e.store},
		"short key":      {Store: e.store, SigningKey: priv[:32]},
		"negative TTL":   {Store: e.store, SigningKey: priv, ActivationTTL: -time.Second},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New with %s succeeded", name)
		}
	}
}
