package appliance_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance"
	"github.com/cairnbackup/cairn/appliance/appliancetest"
	"github.com/cairnbackup/cairn/appliance/backup/backuptest"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/pairer"
	"github.com/cairnbackup/cairn/internal/logtest"
)

// served is a real appliance serving HTTP and its agent gateway on
// loopback.
type served struct {
	a    *appliance.Appliance
	base string
	gw   string
}

func serve(t *testing.T) *served {
	t.Helper()
	s := appliancetest.Serve(t, appliance.Config{})
	return &served{a: s.Appliance, base: s.URL, gw: s.Gateway}
}

// yearly is the schedule of the agents tests pair: the appliance's
// scheduler runs, and must not start a backup during a test.
const yearly = "0 0 1 1 *"

// pairReverse connects an in-process agent with an agent token and pairs
// it (all six steps, the license from the embedded activation service)
// with the yearly schedule; it returns the agent and the done pairing.
func (s *served) pairReverse(t *testing.T, agentID string) (*backuptest.Agent, pairer.Pairing) {
	t.Helper()
	ag := appliancetest.ConnectAgent(t, s.a, s.gw, agentID, backuptest.SparseImage(2<<20+4096, agentv1.DefaultBlockSize, 7))
	var reply appliance.StartPairingsReply
	call(t, "POST", s.base+"/api/v1/pairings", map[string]any{"agent_id": agentID, "product_key": appliance.DemoProductKey,
		"settings": map[string]any{"backup_schedule": yearly}}, http.StatusCreated, &reply)
	pr := s.waitPairing(t, reply.Pairings[0].ID)
	if pr.State != catalog.PairingDone {
		t.Fatalf("pairing %+v", pr)
	}
	return ag, pr
}

func (s *served) waitPairing(t *testing.T, id uint64) pairer.Pairing {
	t.Helper()
	var pr pairer.Pairing
	logtest.WaitFor(t, "pairing ended", func() bool {
		call(t, "GET", fmt.Sprintf("%s/api/v1/pairings/%d", s.base, id), nil, http.StatusOK, &pr)
		return pr.State != catalog.PairingRunning
	})
	return pr
}

// callAs is call with an X-Cairn-Actor header; it returns the body.
func callAs(t *testing.T, method, url, actor string, body any, want int, out any) []byte {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if actor != "" {
		req.Header.Set(appliance.ActorHeader, actor)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, resp.StatusCode, data, want)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, data)
		}
	}
	return data
}

func agentInfo(t *testing.T, base, path, id string) appliance.AgentInfo {
	t.Helper()
	var all []appliance.AgentInfo
	call(t, "GET", base+path, nil, http.StatusOK, &all)
	for _, a := range all {
		if a.ID == id {
			return a
		}
	}
	t.Fatalf("%s: no agent %s", path, id)
	return appliance.AgentInfo{}
}

// TestAgentsListingBackups: the agents listing shows a paired agent's
// next backup, its running backup with live progress, its last backup
// (succeeded, then failed, with its error), its recovery points and the
// space its dataset takes, on /api/v1/agents and /api/agents alike.
func TestAgentsListingBackups(t *testing.T) {
	s := serve(t)
	ag, _ := s.pairReverse(t, "web-1")

	for _, path := range []string{"/api/v1/agents", "/api/agents"} {
		info := agentInfo(t, s.base, path, "web-1")
		if info.LastBackup != nil || info.RunningBackup != nil || info.RecoveryPoints != 0 || info.FingerprintConfirmedAt != nil {
			t.Errorf("%s before any backup: %+v", path, info)
		}
		if n := info.NextBackup; n == nil || !n.After(time.Now()) || n.After(time.Now().AddDate(1, 0, 0)) ||
			n.Local().Month() != time.January || n.Local().Day() != 1 || n.Local().Hour() != 0 || n.Local().Minute() != 0 {
			t.Errorf("%s: next backup %v, want the next 1 January at 0:00", path, info.NextBackup)
		}
		if info.UsedBytes == nil || info.Fingerprint == "" || info.Dataset == "" || info.Settings == nil || info.License == nil {
			t.Errorf("%s: %+v", path, info)
		}
	}
	// The JSON has the new fields, null when empty.
	var raw []map[string]json.RawMessage
	call(t, "GET", s.base+"/api/v1/agents", nil, http.StatusOK, &raw)
	for _, k := range []string{"last_backup", "running_backup", "fingerprint_confirmed_at"} {
		if string(raw[0][k]) != "null" {
			t.Errorf("%s = %s, want null", k, raw[0][k])
		}
	}

	hold := make(chan struct{})
	ag.SetFault(&backuptest.Fault{Hold: hold})
	var job catalog.Job
	call(t, "POST", s.base+"/api/v1/agents/web-1/backups", nil, http.StatusAccepted, &job)
	logtest.WaitFor(t, "running backup listed", func() bool {
		info := agentInfo(t, s.base, "/api/v1/agents", "web-1")
		r := info.RunningBackup
		return r != nil && r.JobID == job.ID && r.State == catalog.JobRunning && r.BytesTotal > 0 && info.LastBackup == nil
	})
	close(hold)
	waitJob(t, s.base, job.ID)
	info := agentInfo(t, s.base, "/api/v1/agents", "web-1")
	lb := info.LastBackup
	if lb == nil || lb.JobID != job.ID || lb.State != catalog.JobSucceeded || lb.Bytes <= 0 || lb.Started.IsZero() || lb.Finished.IsZero() ||
		lb.Snapshot == "" || lb.Error != "" || info.RunningBackup != nil {
		t.Fatalf("after a backup: last %+v running %+v", lb, info.RunningBackup)
	}
	if info.RecoveryPoints != 1 || info.UsedBytes == nil || *info.UsedBytes <= 0 {
		t.Fatalf("after a backup: %d points, used %v", info.RecoveryPoints, info.UsedBytes)
	}

	ag.SetFault(&backuptest.Fault{Refuse: "disk on fire"})
	var job2 catalog.Job
	call(t, "POST", s.base+"/api/v1/agents/web-1/backups", nil, http.StatusAccepted, &job2)
	waitJob(t, s.base, job2.ID)
	info = agentInfo(t, s.base, "/api/v1/agents", "web-1")
	if lb := info.LastBackup; lb == nil || lb.JobID != job2.ID || lb.State != catalog.JobFailed || !strings.Contains(lb.Error, "disk on fire") {
		t.Fatalf("after a failed backup: %+v", lb)
	}
	if info.RecoveryPoints != 1 {
		t.Errorf("a failed backup made a recovery point: %d", info.RecoveryPoints)
	}
}

func TestStorage(t *testing.T) {
	s := serve(t)
	var st appliance.StorageInfo
	call(t, "GET", s.base+"/api/v1/storage", nil, http.StatusOK, &st)
	if st.Pool != "cairn" || st.Kind != "embedded" || st.AvailableBytes <= 0 || st.UsedBytes <= 0 || st.TotalBytes != st.UsedBytes+st.AvailableBytes {
		t.Fatalf("storage %+v", st)
	}
	call(t, "POST", s.base+"/api/v1/storage", nil, http.StatusMethodNotAllowed, nil)
}

// TestConfirmFingerprint: the operator's fingerprint is compared with the
// pinned key in any of the forms cairn-agent prints; a match is recorded
// once, with who confirmed it; a mismatch is a 409 with a remedy; both are
// audited.
func TestConfirmFingerprint(t *testing.T) {
	s := serve(t)
	ag, pr := s.pairReverse(t, "web-1")
	fp := ag.ID.Fingerprint()
	url := fmt.Sprintf("%s/api/v1/pairings/%d/confirm-fingerprint", s.base, pr.ID)

	other := backuptest.New(t).ID.Fingerprint()
	var e appliance.V1Error
	for _, wrong := range []string{other.String(), other.Short(), strings.ToLower(strings.ReplaceAll(other.Short(), "-", ""))} {
		callAs(t, "POST", url, "user:alice", map[string]string{"fingerprint": wrong}, http.StatusConflict, &e)
		if e.Code != "fingerprint_mismatch" || !strings.Contains(e.Remedy, "DELETE /api/v1/agents/web-1") || !strings.Contains(e.Remedy, "unpair") {
			t.Errorf("mismatch %q: %+v", wrong, e)
		}
	}
	for _, bad := range []string{"", "SHA256:nope", "12345", strings.Repeat("z", 64)} {
		callAs(t, "POST", url, "", map[string]string{"fingerprint": bad}, http.StatusBadRequest, &e)
	}
	callAs(t, "POST", url, "", map[string]any{"fingerprint": fp.String(), "extra": 1}, http.StatusBadRequest, &e)
	if info := agentInfo(t, s.base, "/api/v1/agents", "web-1"); info.FingerprintConfirmedAt != nil {
		t.Fatalf("confirmed after mismatches: %v", info.FingerprintConfirmedAt)
	}

	var got appliance.ConfirmFingerprintReply
	callAs(t, "POST", url, "user:alice", map[string]string{"fingerprint": " " + fp.String() + "\n"}, http.StatusOK, &got)
	if got.AgentID != "web-1" || got.Fingerprint != fp.String() || got.Short != fp.Short() || got.FingerprintConfirmedAt.IsZero() {
		t.Fatalf("confirmed: %+v", got)
	}
	// The short form, any case, and hex with colons match too; the first
	// confirmation's time is kept.
	hexColons := func() string {
		var parts []string
		for _, b := range fp {
			parts = append(parts, fmt.Sprintf("%02X", b))
		}
		return strings.Join(parts, ":")
	}()
	for _, same := range []string{strings.ToLower(fp.Short()), hexColons} {
		var again appliance.ConfirmFingerprintReply
		callAs(t, "POST", url, "api-token:ab12", map[string]string{"fingerprint": same}, http.StatusOK, &again)
		if !again.FingerprintConfirmedAt.Equal(got.FingerprintConfirmedAt) {
			t.Errorf("%q: confirmed at %v, first %v", same, again.FingerprintConfirmedAt, got.FingerprintConfirmedAt)
		}
	}
	info := agentInfo(t, s.base, "/api/v1/agents", "web-1")
	if info.FingerprintConfirmedAt == nil || !info.FingerprintConfirmedAt.Equal(got.FingerprintConfirmedAt) {
		t.Errorf("listing: %v", info.FingerprintConfirmedAt)
	}
	var pv pairer.Pairing
	call(t, "GET", fmt.Sprintf("%s/api/v1/pairings/%d", s.base, pr.ID), nil, http.StatusOK, &pv)
	if pv.FingerprintConfirmedAt == nil || !pv.FingerprintConfirmedAt.Equal(got.FingerprintConfirmedAt) {
		t.Errorf("pairing: %v", pv.FingerprintConfirmedAt)
	}

	var events []catalog.AuditEvent
	call(t, "GET", s.base+"/api/audit?agent=web-1&kind=agent", nil, http.StatusOK, &events)
	var mism, conf int
	for _, ev := range events {
		switch ev.Action {
		case "agent.fingerprint_mismatch":
			mism++
			if ev.Actor != "user:alice" {
				t.Errorf("mismatch by %q", ev.Actor)
			}
		case "agent.fingerprint_confirmed":
			conf++
			if ev.Actor != "user:alice" {
				t.Errorf("confirmed by %q", ev.Actor)
			}
		}
	}
	if mism != 3 || conf != 1 {
		t.Errorf("audit: %d mismatches, %d confirmations; want 3 and 1: %+v", mism, conf, events)
	}

	callAs(t, "POST", s.base+"/api/v1/pairings/99/confirm-fingerprint", "", map[string]string{"fingerprint": fp.String()}, http.StatusNotFound, &e)
	callAs(t, "POST", s.base+"/api/v1/pairings/x/confirm-fingerprint", "", map[string]string{"fingerprint": fp.String()}, http.StatusBadRequest, &e)
	callAs(t, "GET", url, "", nil, http.StatusMethodNotAllowed, nil)

	// A pairing that failed before its Connect step has no key to compare.
	var reply appliance.StartPairingsReply
	call(t, "POST", s.base+"/api/v1/pairings", map[string]any{"target": "nowhere.invalid", "product_key": appliance.DemoProductKey}, http.StatusCreated, &reply)
	if p := s.waitPairing(t, reply.Pairings[0].ID); p.State != catalog.PairingFailed {
		t.Fatalf("pairing of nowhere: %+v", p)
	}
	callAs(t, "POST", fmt.Sprintf("%s/api/v1/pairings/%d/confirm-fingerprint", s.base, reply.Pairings[0].ID), "",
		map[string]string{"fingerprint": fp.String()}, http.StatusConflict, &e)
	if e.Code != "no_fingerprint" || e.Remedy == "" {
		t.Errorf("before Connect: %+v", e)
	}
}

// TestSetupTokensAPI: the list shows each setup token's state and uses,
// never its secret or hash; revoking is audited once, and refuses a
// malformed ID without echoing it.
func TestSetupTokensAPI(t *testing.T) {
	s := serve(t)
	type created struct {
		ID    string `json:"id"`
		Token string `json:"setup_token"`
	}
	var c1, c2, c3 created
	callAs(t, "POST", s.base+"/api/setup-tokens", "user:alice", map[string]any{"label": "roll-out", "max_uses": 20}, http.StatusCreated, &c1)
	callAs(t, "POST", s.base+"/api/setup-tokens", "user:alice", map[string]any{"label": "lab"}, http.StatusCreated, &c2)
	callAs(t, "POST", s.base+"/api/setup-tokens", "", map[string]any{"label": "short", "ttl_seconds": 1}, http.StatusCreated, &c3)

	var list []appliance.SetupTokenInfo
	body := callAs(t, "GET", s.base+"/api/setup-tokens", "", nil, http.StatusOK, &list)
	for _, secret := range []string{c1.Token, c2.Token, c3.Token, "secret_hash", "setup_token"} {
		if strings.Contains(string(body), secret) {
			t.Errorf("the list shows %q", secret)
		}
	}
	if len(list) != 3 || list[0].ID != c3.ID || list[2].ID != c1.ID || list[2].Label != "roll-out" || list[2].MaxUses != 20 ||
		list[2].Uses != 0 || list[2].State != "active" || list[2].ExpiresAt.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("list %+v", list)
	}
	logtest.WaitFor(t, "short token expired", func() bool {
		callAs(t, "GET", s.base+"/api/setup-tokens", "", nil, http.StatusOK, &list)
		return list[0].State == "expired"
	})

	var rev appliance.SetupTokenInfo
	callAs(t, "POST", s.base+"/api/setup-tokens/"+c1.ID+"/revoke", "user:alice", nil, http.StatusOK, &rev)
	if rev.ID != c1.ID || rev.State != "revoked" || rev.RevokedAt.IsZero() {
		t.Fatalf("revoked %+v", rev)
	}
	first := rev.RevokedAt
	callAs(t, "POST", s.base+"/api/setup-tokens/"+c1.ID+"/revoke", "user:bob", nil, http.StatusOK, &rev)
	if !rev.RevokedAt.Equal(first) {
		t.Errorf("revoked again at %v, first %v", rev.RevokedAt, first)
	}
	callAs(t, "GET", s.base+"/api/setup-tokens", "", nil, http.StatusOK, &list)
	if list[2].State != "revoked" || list[1].State != "active" {
		t.Errorf("after revoking: %+v", list)
	}
	var events []catalog.AuditEvent
	call(t, "GET", s.base+"/api/audit?kind=setup_token.revoked", nil, http.StatusOK, &events)
	if len(events) != 1 || events[0].Actor != "user:alice" || events[0].Target != c1.ID {
		t.Errorf("revocations audited: %+v", events)
	}

	callAs(t, "POST", s.base+"/api/setup-tokens/AAAAAAAAAAAA/revoke", "", nil, http.StatusNotFound, nil)
	// The whole token pasted as the ID: refused, never echoed.
	for _, id := range []string{c2.Token, "short"} {
		body := callAs(t, "POST", s.base+"/api/setup-tokens/"+strings.ReplaceAll(id, "/", "%2F")+"/revoke", "", nil, http.StatusBadRequest, nil)
		if strings.Contains(string(body), c2.Token) {
			t.Errorf("the answer echoes the token: %s", body)
		}
	}
	callAs(t, "GET", s.base+"/api/setup-tokens/"+c2.ID+"/revoke", "", nil, http.StatusMethodNotAllowed, nil)
	callAs(t, "DELETE", s.base+"/api/setup-tokens", "", nil, http.StatusMethodNotAllowed, nil)
}

// TestAuditFilters: who acted is recorded from X-Cairn-Actor (a malformed
// one is "api"); the log is filtered by kind and agent, paged both ways,
// and bad queries are refused.
func TestAuditFilters(t *testing.T) {
	s := serve(t)
	for i, actor := range []string{"user:alice", "api-token:ab12cd34", "", "root", "user:", "user:bad name", "user:" + strings.Repeat("x", 200)} {
		callAs(t, "POST", s.base+"/api/tokens", actor, map[string]string{"agent_id": fmt.Sprintf("nat-%d", i)}, http.StatusCreated, nil)
	}
	var events []catalog.AuditEvent
	call(t, "GET", s.base+"/api/audit", nil, http.StatusOK, &events)
	want := []string{"user:alice", "api-token:ab12cd34", "api", "api", "api", "api", "api"}
	if len(events) != len(want) {
		t.Fatalf("%d events: %+v", len(events), events)
	}
	for i, e := range events {
		if e.Actor != want[i] || e.Action != "agent_token.created" || e.Seq != uint64(i+1) {
			t.Errorf("event %d: %+v, want actor %q", i, e, want[i])
		}
	}
	callAs(t, "POST", s.base+"/api/tokens/1/revoke", "user:alice", nil, http.StatusOK, nil)

	for _, tc := range []struct {
		query string
		seqs  []uint64
	}{
		{"", []uint64{1, 2, 3, 4, 5, 6, 7, 8}},
		{"?kind=agent_token.revoked", []uint64{8}},
		{"?kind=agent_token", []uint64{1, 2, 3, 4, 5, 6, 7, 8}},
		{"?kind=agent", nil},
		{"?agent=nat-0", []uint64{1, 8}},
		{"?agent=nat-0&kind=agent_token.created", []uint64{1}},
		{"?after=2&limit=3", []uint64{3, 4, 5}},
		{"?order=newest&limit=3", []uint64{8, 7, 6}},
		{"?order=newest&before=6&limit=2", []uint64{5, 4}},
		{"?after=6&before=8", []uint64{7}},
		{"?after=100", nil},
	} {
		var got []catalog.AuditEvent
		body := call2(t, s.base+"/api/audit"+tc.query, &got)
		var seqs []uint64
		for _, e := range got {
			seqs = append(seqs, e.Seq)
		}
		if fmt.Sprint(seqs) != fmt.Sprint(tc.seqs) {
			t.Errorf("%q: %v, want %v", tc.query, seqs, tc.seqs)
		}
		if tc.seqs == nil && strings.TrimSpace(string(body)) != "[]" {
			t.Errorf("%q: %s, want []", tc.query, body)
		}
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "after=-1", "after=x", "before=0", "kind=Agent", "kind=agent%20x",
		"kind=" + strings.Repeat("a", 65), "kind=.agent", "agent=Bad!", "agent=", "order=up", "color=red", "after=1&after=2"} {
		var e struct {
			Error string `json:"error"`
		}
		call(t, "GET", s.base+"/api/audit?"+q, nil, http.StatusBadRequest, &e)
		if e.Error == "" {
			t.Errorf("%s: no message", q)
		}
	}
}

func call2(t *testing.T, url string, out any) []byte {
	t.Helper()
	return callAs(t, "GET", url, "", nil, http.StatusOK, out)
}
