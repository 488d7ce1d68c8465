package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	cairnappliance "github.com/cairnbackup/cairn/appliance"
)

// The backup tests run the real cairn-appliance and cairn-agent: the agent
// protects an image file (the image snapshot provider), the appliance
// backs it up over the real channel into its embedded pool, and every
// recovery point is read back over the REST API and compared with the
// image as it was when the point was taken.

// backupEnv is an appliance and an agent paired for backups. The
// appliance can be killed and started again on the same data.
type backupEnv struct {
	t       testing.TB
	data    string // appliance data directory
	dns     string // test DNS server (knows nothing: pairing uses the hosts file)
	hosts   string // hosts file naming the agent
	app     *appliance
	agent   *proc
	agentID string
	image   string // the protected image
	state   string // agent state directory
	port    int    // agent's direct-mode port
	volume  string // the volume ID (the image's absolute path)
}

// job is a backup or verify job as the v1 API shows it.
type job struct {
	ID       uint64 `json:"id"`
	AgentID  string `json:"agent_id"`
	Kind     string `json:"kind"`
	State    string `json:"state"`
	Error    string `json:"error"`
	Snapshot string `json:"snapshot"`
	Detail   string `json:"detail"`
	Progress struct {
		BytesDone    int64 `json:"bytes_done"`
		BytesTotal   int64 `json:"bytes_total"`
		BytesSent    int64 `json:"bytes_sent"`
		BytesWritten int64 `json:"bytes_written"`
	} `json:"progress"`
}

// point is a recovery point as the v1 API lists it.
type point struct {
	Snapshot   string     `json:"snapshot"`
	Bytes      int64      `json:"bytes"`
	Changed    int64      `json:"changed"`
	VerifiedAt *time.Time `json:"verified_at"`
	Volumes    []struct {
		VolumeID    string `json:"volume_id"`
		Image       string `json:"image"`
		Size        int64  `json:"size"`
		Incremental bool   `json:"incremental"`
	} `json:"volumes"`
}

// newBackupEnv makes an image of size bytes (dense: share of random
// blocks), starts the appliance and an agent protecting the image, and
// pairs them.
func newBackupEnv(t testing.TB, size int64, dense float64, seed uint64) *backupEnv {
	t.Helper()
	return newBackupEnvVia(t, size, dense, seed, nil)
}

// newBackupEnvVia is newBackupEnv with the appliance reaching the agent
// through via (given the agent's address, it returns the port to pair).
func newBackupEnvVia(t testing.TB, size int64, dense float64, seed uint64, via func(agentAddr string) int) *backupEnv {
	t.Helper()
	dir := t.TempDir()
	e := &backupEnv{t: t, data: filepath.Join(dir, "appliance"), image: filepath.Join(dir, "disk.img"),
		state: filepath.Join(dir, "agent-state"), agentID: "backup-agent"}
	makeImage(t, e.image, size, dense, seed)
	e.volume = e.image
	e.hosts = filepath.Join(dir, "hosts")
	if err := os.WriteFile(e.hosts, []byte("127.0.0.1 localhost backup-agent\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.dns = startDNS(t, &zone{a: map[string]string{}})
	e.startAgent("127.0.0.1:0")
	e.startAppliance()
	port := e.port
	if via != nil {
		port = via(net.JoinHostPort("127.0.0.1", strconv.Itoa(e.port)))
	}
	p := e.app.pair(t, map[string]any{"target": e.agentID, "port": port, "product_key": cairnappliance.DemoProductKey,
		"settings": map[string]any{"backup_schedule": "0 0 1 1 *", "volumes": []string{e.volume},
			"retention": map[string]any{"keep_last": 100}}})
	if p.State != "done" {
		for _, s := range p.Steps {
			t.Logf("%s: %s %s: %s", s.Step, s.Status, s.Code, s.Detail)
		}
		t.Fatalf("pairing: %s", p.State)
	}
	return e
}

func (e *backupEnv) startAgent(listen string) {
	e.t.Helper()
	e.agent = start(e.t, "cairn-agent", nil, nil, "-state", e.state, "-listen", listen, "-volume", e.image)
	_, port, _ := net.SplitHostPort(e.agent.waitLog(`listening for the appliance \(direct mode\)"? addr=(\S+)`, 30*time.Second)[1])
	e.port, _ = strconv.Atoi(port)
}

func (e *backupEnv) startAppliance() {
	e.t.Helper()
	e.app = launchAppliance(e.t, e.data, "-gateway", "", "-dns", e.dns, "-hosts", e.hosts, "-name", "test-appliance")
}

// startBackup starts a backup now (the appliance connects to the agent if
// it has no session).
func (e *backupEnv) startBackup() job {
	e.t.Helper()
	var j job
	if code := e.app.post(e.t, "/api/v1/agents/"+e.agentID+"/backups", nil, &j); code != http.StatusAccepted {
		e.t.Fatalf("start backup: HTTP %d %+v", code, j)
	}
	return j
}

// wait polls a job (bounded in time) until it has ended.
func (e *backupEnv) wait(id uint64, timeout time.Duration) job {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var j job
		if code := e.app.get(e.t, fmt.Sprintf("/api/v1/jobs/%d", id), &j); code != http.StatusOK {
			e.t.Fatalf("job %d: HTTP %d", id, code)
		}
		switch j.State {
		case "succeeded", "failed", "canceled":
			return j
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %d not done within %s: %+v", id, timeout, j)
		}
		select {
		case <-e.app.done:
			e.t.Fatal("appliance exited")
		case <-time.After(20 * time.Millisecond): // polling interval
		}
	}
}

// backup runs a backup to its end and requires success.
func (e *backupEnv) backup(timeout time.Duration) job {
	e.t.Helper()
	j := e.wait(e.startBackup().ID, timeout)
	if j.State != "succeeded" || j.Snapshot == "" {
		e.t.Fatalf("backup: %+v", j)
	}
	return j
}

func (e *backupEnv) points() []point {
	e.t.Helper()
	var ps []point
	if code := e.app.get(e.t, "/api/v1/agents/"+e.agentID+"/recovery-points", &ps); code != http.StatusOK {
		e.t.Fatalf("recovery points: HTTP %d", code)
	}
	return ps
}

// restoreHash downloads volume 0 of a recovery point and returns its
// SHA-256 and length.
func (e *backupEnv) restoreHash(snap string) (string, int64) {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(e.app.request(e.t, http.MethodGet, "/api/v1/agents/"+e.agentID+"/recovery-points/"+snap+"/volumes/0", nil))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("restore %s: HTTP %d: %s", snap, resp.StatusCode, b)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, 1<<20))
	if err != nil {
		e.t.Fatalf("restore %s: %v", snap, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// verify runs a verify job of a recovery point and requires success.
func (e *backupEnv) verify(snap string) {
	e.t.Helper()
	var j job
	if code := e.app.post(e.t, "/api/v1/agents/"+e.agentID+"/recovery-points/"+snap+"/verify", nil, &j); code != http.StatusAccepted {
		e.t.Fatalf("verify %s: HTTP %d %+v", snap, code, j)
	}
	if j = e.wait(j.ID, 2*time.Minute); j.State != "succeeded" {
		e.t.Fatalf("verify %s: %+v", snap, j)
	}
}

// TestBackupFullAndIncrementals backs up a 2 GiB sparse image, then
// changes it three times and backs it up each time: every recovery point
// restores byte for byte as the image was, incrementals send about the
// changed bytes, and a Range request reads the right bytes.
func TestBackupFullAndIncrementals(t *testing.T) {
	const size = 2 << 30
	e := newBackupEnv(t, size, 0.04, 1)
	want := map[string]string{} // snapshot → image hash when taken

	full := e.backup(5 * time.Minute)
	want[full.Snapshot] = fileHash(t, e.image)
	t.Logf("full: %+v", full.Progress)
	if full.Progress.BytesDone != size {
		t.Errorf("full backup read %d bytes, want %d", full.Progress.BytesDone, size)
	}

	for i := range 3 {
		changed := changeImage(t, e.image, 200, true, uint64(10+i))
		inc := e.backup(5 * time.Minute)
		want[inc.Snapshot] = fileHash(t, e.image)
		t.Logf("incremental %d: changed %d, %+v", i, changed, inc.Progress)
		// Zeroed blocks send no data, random ones do not compress: the
		// bytes sent are at most the changed bytes, and most of them.
		if s := inc.Progress.BytesSent; s > changed || s < changed/2 {
			t.Errorf("incremental %d sent %d bytes for %d changed", i, s, changed)
		}
	}

	ps := e.points()
	if len(ps) != 4 {
		t.Fatalf("%d recovery points, want 4: %+v", len(ps), ps)
	}
	for _, p := range ps {
		got, n := e.restoreHash(p.Snapshot)
		if got != want[p.Snapshot] || n != size {
			t.Errorf("recovery point %s restores to %s (%d bytes), want %s", p.Snapshot, got, n, want[p.Snapshot])
		}
		if len(p.Volumes) != 1 || p.Volumes[0].VolumeID != e.volume || p.Volumes[0].Size != size {
			t.Errorf("recovery point %s volumes %+v", p.Snapshot, p.Volumes)
		}
		e.verify(p.Snapshot)
	}

	// A Range request of the newest point reads those bytes of the image.
	img, err := os.Open(e.image)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	for _, r := range [][2]int64{{0, 99}, {size/2 - 7, size/2 + 70000}, {size - 10, size - 1}} {
		want := make([]byte, r[1]-r[0]+1)
		if _, err := img.ReadAt(want, r[0]); err != nil {
			t.Fatal(err)
		}
		req := e.app.request(t, http.MethodGet, "/api/v1/agents/"+e.agentID+"/recovery-points/"+ps[0].Snapshot+"/volumes/0", nil)
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", r[0], r[1]))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, want) {
			t.Errorf("range %v: HTTP %d, %d bytes, equal %v", r, resp.StatusCode, len(b), bytes.Equal(b, want))
		}
	}
}

// TestBackupSurvivesApplianceKill kills the appliance with SIGKILL at
// random moments of backups, 20 times, and starts it again each time:
// no partial recovery point is ever listed, every listed point restores
// to the image as it was when the point was taken, and a backup after the
// last kill succeeds.
func TestBackupSurvivesApplianceKill(t *testing.T) {
	const size = 256 << 20
	e := newBackupEnv(t, size, 0.5, 2)
	rng := rand.New(rand.NewPCG(3, 4))
	want := map[string]string{}
	hash := fileHash(t, e.image)
	base := e.backup(2 * time.Minute)
	want[base.Snapshot] = hash

	deadline := time.Now().Add(6 * time.Minute)
	midJob := 0
	for run := range 20 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d runs within the time bound", run)
		}
		changeImage(t, e.image, 200+rng.IntN(1000), true, uint64(100+run))
		hash = fileHash(t, e.image)
		j := e.startBackup()
		// Kill when the job has read a random share of the image (or
		// right away, or after it ended).
		frac := rng.Float64() * 1.1
		for {
			var cur job
			e.app.get(t, fmt.Sprintf("/api/v1/jobs/%d", j.ID), &cur)
			if cur.State == "succeeded" || cur.State == "failed" || cur.Progress.BytesTotal > 0 &&
				float64(cur.Progress.BytesDone) >= frac*float64(cur.Progress.BytesTotal) {
				break
			}
			select {
			case <-e.app.done:
				t.Fatal("appliance exited")
			case <-time.After(5 * time.Millisecond): // polling interval
			}
		}
		e.app.kill()
		e.startAppliance()

		// Every listed point is complete; a new one is the image now.
		for _, p := range e.points() {
			if _, ok := want[p.Snapshot]; !ok {
				want[p.Snapshot] = hash
			}
		}
		var after job
		e.app.get(t, fmt.Sprintf("/api/v1/jobs/%d", j.ID), &after)
		if after.State == "running" || after.State == "queued" {
			t.Fatalf("run %d: job %d still %s after the restart", run, j.ID, after.State)
		}
		if after.State == "failed" {
			midJob++
		}
		t.Logf("run %d: killed at %.0f%%, job %s, %d points", run, frac*100, after.State, len(want))
	}

	if midJob < 10 {
		t.Errorf("only %d of 20 kills landed during a backup", midJob)
	}
	last := e.backup(2 * time.Minute)
	want[last.Snapshot] = fileHash(t, e.image)
	ps := e.points()
	if len(ps) != len(want) {
		t.Fatalf("%d points listed, %d known", len(ps), len(want))
	}
	for _, p := range ps {
		if got, _ := e.restoreHash(p.Snapshot); got != want[p.Snapshot] {
			t.Errorf("point %s restores to %s, want %s", p.Snapshot, got, want[p.Snapshot])
		}
	}
	e.verify(ps[0].Snapshot)
	e.verify(ps[len(ps)-1].Snapshot)
}

// timeIncremental changes n blocks of the image and times their backup:
// how long a backup that a test interrupts takes.
func (e *backupEnv) timeIncremental(n int, seed uint64) time.Duration {
	e.t.Helper()
	changeImage(e.t, e.image, n, true, seed)
	began := time.Now()
	e.backup(2 * time.Minute)
	return time.Since(began)
}

// waitRandom waits a random moment within 5–65% of took: a moment in the
// middle of a backup that takes that long.
func (e *backupEnv) waitRandom(rng *rand.Rand, took time.Duration) {
	e.t.Helper()
	select {
	case <-e.agent.done:
		e.t.Fatal("agent exited")
	case <-time.After(time.Duration((0.05 + rng.Float64()*0.6) * float64(took))):
	}
}

// TestBackupSurvivesAgentKill kills the agent in the middle of backups:
// the job fails with a reason, no point is made, and once the agent is
// back a backup succeeds and restores right.
func TestBackupSurvivesAgentKill(t *testing.T) {
	const size = 256 << 20
	e := newBackupEnv(t, size, 0.5, 5)
	e.backup(2 * time.Minute)
	const changes = 2000
	took := e.timeIncremental(changes, 199)
	rng := rand.New(rand.NewPCG(5, 6))
	midJob := 0
	for run := range 4 {
		changeImage(t, e.image, changes, true, uint64(200+run))
		j := e.startBackup()
		e.waitRandom(rng, took)
		points := len(e.points())
		e.agent.kill()
		j = e.wait(j.ID, time.Minute)
		if j.State == "succeeded" {
			t.Logf("run %d: the backup ended before the kill", run)
		} else if midJob++; j.Error == "" {
			t.Errorf("run %d: job %s without a reason", run, j.State)
		} else if n := len(e.points()); n != points {
			t.Errorf("run %d: failed job left %d points, had %d", run, n, points)
		}
		t.Logf("run %d: %s: %s", run, j.State, j.Error)
		e.startAgent("127.0.0.1:" + strconv.Itoa(e.port))
		ok := e.backup(2 * time.Minute)
		if got, _ := e.restoreHash(ok.Snapshot); got != fileHash(t, e.image) {
			t.Fatalf("run %d: point %s does not restore to the image", run, ok.Snapshot)
		}
	}
	if midJob == 0 {
		t.Error("no kill landed during a backup")
	}
}

// cutter is a TCP proxy on 127.0.0.1 whose connections can all be cut at
// once, to cut the channel between appliance and agent.
type cutter struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startCutter(t testing.TB, target string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln}
	t.Cleanup(func() { ln.Close(); c.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return c
}

// cut closes every connection made so far.
func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

func (c *cutter) port() int { return c.ln.Addr().(*net.TCPAddr).Port }

// TestBackupChannelCut cuts the channel in the middle of backups: the job
// fails with a reason and makes no point, earlier points stay intact, and
// the next backup (over a new connection) succeeds and restores right.
func TestBackupChannelCut(t *testing.T) {
	var proxy *cutter
	e := newBackupEnvVia(t, 256<<20, 0.5, 7, func(agent string) int {
		proxy = startCutter(t, agent)
		return proxy.port()
	})
	first := e.backup(2 * time.Minute)
	firstHash := fileHash(t, e.image)
	const changes = 2000
	took := e.timeIncremental(changes, 299)
	rng := rand.New(rand.NewPCG(7, 8))
	cuts := 0
	for run := range 3 {
		changeImage(t, e.image, changes, true, uint64(300+run))
		points := len(e.points())
		j := e.startBackup()
		e.waitRandom(rng, took)
		proxy.cut()
		j = e.wait(j.ID, time.Minute)
		t.Logf("run %d: %s: %s", run, j.State, j.Error)
		if j.State != "succeeded" {
			cuts++
			if j.Error == "" || len(e.points()) != points {
				t.Errorf("run %d: failed job %+v left %d points, had %d", run, j, len(e.points()), points)
			}
		}
		ok := e.backup(2 * time.Minute)
		if got, _ := e.restoreHash(ok.Snapshot); got != fileHash(t, e.image) {
			t.Fatalf("run %d: point %s does not restore to the image", run, ok.Snapshot)
		}
	}
	if cuts == 0 {
		t.Error("no cut landed during a backup")
	}
	if got, _ := e.restoreHash(first.Snapshot); got != firstHash {
		t.Errorf("the first point restores to %s, want %s", got, firstHash)
	}
	e.verify(first.Snapshot)
}

// TestNBDExport exports a recovery point's volume over NBD, copies it with
// nbdcopy (libnbd, a real client) and compares the bytes; stopping the
// export ends it.
func TestNBDExport(t *testing.T) {
	nbdcopy, err := exec.LookPath("nbdcopy")
	if err != nil {
		t.Fatal("nbdcopy is missing: make deps installs libnbd-bin")
	}
	e := newBackupEnv(t, 64<<20, 0.5, 11)
	p := e.backup(2 * time.Minute)
	want := fileHash(t, e.image)
	changeImage(t, e.image, 100, true, 12) // the live image moves on; the point does not

	path := "/api/v1/agents/" + e.agentID + "/recovery-points/" + p.Snapshot + "/volumes/0/nbd"
	var x struct {
		URI  string `json:"uri"`
		Size int64  `json:"size"`
	}
	if code := e.app.post(t, path, nil, &x); code != http.StatusCreated || x.Size != 64<<20 {
		t.Fatalf("start export: HTTP %d %+v", code, x)
	}
	var again struct {
		URI string `json:"uri"`
	}
	if code := e.app.post(t, path, nil, &again); code != http.StatusOK || again.URI != x.URI {
		t.Fatalf("second start: HTTP %d %+v, want the running export %s", code, again, x.URI)
	}
	out := filepath.Join(t.TempDir(), "copy.img")
	if b, err := exec.Command(nbdcopy, x.URI, out).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy %s: %v: %s", x.URI, err, b)
	}
	if got := fileHash(t, out); got != want {
		t.Fatalf("NBD copy hashes %s, the image was %s", got, want)
	}
	var list []struct {
		URI string `json:"uri"`
	}
	if e.app.get(t, "/api/v1/nbd", &list); len(list) != 1 || list[0].URI != x.URI {
		t.Fatalf("exports: %+v", list)
	}
	if code := e.app.do(t, "DELETE", path); code != http.StatusNoContent {
		t.Fatalf("stop export: HTTP %d", code)
	}
	if b, err := exec.Command(nbdcopy, x.URI, out).CombinedOutput(); err == nil {
		t.Fatalf("nbdcopy after the export stopped succeeded: %s", b)
	}
	if code := e.app.do(t, "DELETE", path); code != http.StatusNotFound {
		t.Fatalf("stop again: HTTP %d, want 404", code)
	}
}

// TestAgentSettings reads and changes an agent's settings through the v1
// API: fields left out keep their values, and bad ones (a volume the
// agent does not have, a negative count, an unknown field) are refused.
func TestAgentSettings(t *testing.T) {
	e := newBackupEnv(t, 4<<20, 0.5, 13)
	path := "/api/v1/agents/" + e.agentID + "/settings"
	type settings struct {
		BackupSchedule string         `json:"backup_schedule"`
		Volumes        []string       `json:"volumes"`
		Retention      map[string]int `json:"retention"`
	}
	var s settings
	if code := e.app.get(t, path, &s); code != http.StatusOK || s.BackupSchedule != "0 0 1 1 *" || len(s.Volumes) != 1 || s.Volumes[0] != e.volume {
		t.Fatalf("GET settings: HTTP %d %+v", code, s)
	}
	if code := e.app.put(t, path, map[string]any{"backup_schedule": "@daily"}, &s); code != http.StatusOK ||
		s.BackupSchedule != "@daily" || len(s.Volumes) != 1 || s.Retention["keep_last"] != 100 {
		t.Fatalf("PUT schedule: HTTP %d %+v", code, s)
	}
	for _, bad := range []map[string]any{
		{"volumes": []string{"/no/such/volume"}},
		{"retention": map[string]int{"keep_last": -1}},
		{"backup_schedule": "every tuesday"},
		{"volumez": []string{}},
	} {
		if code := e.app.put(t, path, bad, nil); code != http.StatusBadRequest {
			t.Errorf("PUT %v: HTTP %d, want 400", bad, code)
		}
	}
	var after settings
	if e.app.get(t, path, &after); after.BackupSchedule != "@daily" || len(after.Volumes) != 1 {
		t.Fatalf("settings after the refusals: %+v", after)
	}
	if code := e.app.get(t, "/api/v1/agents/nosuch/settings", nil); code != http.StatusNotFound {
		t.Fatalf("GET settings of an unknown agent: HTTP %d", code)
	}
}
