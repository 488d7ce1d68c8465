package backup

// Test fixtures: only real parts. A bbolt catalog, a pool (embedded in a
// temporary directory always; OpenZFS on a file-backed zpool where
// /dev/zfs exists), a gateway serving reverse-mode agents on 127.0.0.1,
// and an in-process agent (backuptest) that connects to it over the real
// channel. No test sleeps to synchronise: they wait for job states with a
// bounded deadline.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/backup/backuptest"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/gateway"
	"github.com/cairnbackup/cairn/internal/logtest"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/zfs"
	"github.com/cairnbackup/cairn/zfs/embedded"
	"github.com/cairnbackup/cairn/zfs/openzfs"
)

const waitTimeout = 60 * time.Second

// poolKind makes a fresh pool for one test.
type poolKind struct {
	name string
	open func(t *testing.T) zfs.Pool
}

// pools are the pools every backup test runs on: embedded always, OpenZFS
// when /dev/zfs exists (CAIRN_TEST_ZFS=1 makes its absence a failure).
func pools(t *testing.T) []poolKind {
	ks := []poolKind{{"embedded", func(t *testing.T) zfs.Pool { return embeddedPool(t, t.TempDir()) }}}
	if _, err := os.Stat("/dev/zfs"); err == nil {
		ks = append(ks, poolKind{"openzfs", openZFSPool})
	} else if os.Getenv("CAIRN_TEST_ZFS") == "1" {
		t.Fatal("CAIRN_TEST_ZFS=1 but /dev/zfs is missing")
	}
	return ks
}

// eachPool runs fn as a subtest on every pool.
func eachPool(t *testing.T, fn func(t *testing.T, pool zfs.Pool)) {
	for _, k := range pools(t) {
		t.Run(k.name, func(t *testing.T) { fn(t, k.open(t)) })
	}
}

func embeddedPool(t *testing.T, dir string) zfs.Pool {
	t.Helper()
	p, err := embedded.Open(embedded.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

var zpoolSeq atomic.Int64

// openZFSPool makes a zpool on a sparse file in t.TempDir, as
// zfs/openzfs's own tests do, and opens a Pool rooted at <zpool>/cairn.
func openZFSPool(t *testing.T) zfs.Pool {
	t.Helper()
	dir := t.TempDir()
	name := fmt.Sprintf("cairnbk%d_%d", os.Getpid(), zpoolSeq.Add(1))
	vdev := filepath.Join(dir, "vdev")
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
	}
	run("truncate", "-s", "512M", vdev)
	run("zpool", "create", "-m", filepath.Join(dir, "mnt"), name, vdev)
	t.Cleanup(func() {
		if out, err := exec.Command("zpool", "destroy", "-f", name).CombinedOutput(); err != nil {
			t.Errorf("zpool destroy %s: %v: %s", name, err, out)
		}
	})
	p, err := openzfs.Open(context.Background(), openzfs.Config{Root: zfs.MustDatasetName(name + "/cairn")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type fixture struct {
	t    *testing.T
	cat  *catalog.Catalog
	pool zfs.Pool
	gw   *gateway.Gateway
	addr string
	r    *Runner
	logs *logtest.Sink
}

// newFixture starts a gateway and a Runner on pool; tweak may change the
// Runner's configuration.
func newFixture(t *testing.T, pool zfs.Pool, tweak func(*Config)) *fixture {
	t.Helper()
	cat, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.New("appliance")
	if err != nil {
		t.Fatal(err)
	}
	logs := logtest.NewSink(t, "backup")
	gw, err := gateway.New(gateway.Config{Catalog: cat, Identity: id, Name: "test", Logger: logs.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ctx, ln) }()
	f := &fixture{t: t, cat: cat, pool: pool, gw: gw, addr: ln.Addr().String(), logs: logs}
	f.r = f.newRunner(tweak)
	t.Cleanup(func() {
		f.r.Close()
		cancel()
		select {
		case <-served:
		case <-time.After(waitTimeout):
			t.Errorf("gateway did not stop")
		}
		gw.Close()
		cat.Close()
	})
	return f
}

func (f *fixture) newRunner(tweak func(*Config)) *Runner {
	f.t.Helper()
	cfg := Config{Catalog: f.cat, Pool: f.pool, Clients: f.gw, Logger: f.logs.Logger()}
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// agent makes agentID (token, dataset) and connects a backuptest agent
// with the given volumes.
func (f *fixture) agent(agentID string, vols map[string][]byte) *backuptest.Agent {
	f.t.Helper()
	ctx := context.Background()
	tok, err := f.gw.CreateAgentToken(ctx, agentID, "test")
	if err != nil {
		f.t.Fatal(err)
	}
	ds, err := zfs.AgentDataset(f.pool.Root(), agentID)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.pool.CreateDataset(ctx, ds); err != nil {
		f.t.Fatal(err)
	}
	f.update(func(tx *catalog.Tx) error {
		a, err := tx.Agent(agentID)
		if err != nil {
			return err
		}
		a.Dataset = ds.String()
		return tx.PutAgent(a)
	})
	a := backuptest.New(f.t)
	for _, id := range sortedKeys(vols) {
		a.SetVolume(id, vols[id])
	}
	a.Connect(f.t, f.addr, tok)
	logtest.WaitFor(f.t, "agent "+agentID+" connected", func() bool {
		_, err := f.gw.Client(agentID)
		return err == nil
	})
	return a
}

func sortedKeys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

func (f *fixture) update(fn func(*catalog.Tx) error) {
	f.t.Helper()
	if err := f.cat.Update(context.Background(), fn); err != nil {
		f.t.Fatal(err)
	}
}

// wait waits until a job has finished and returns it.
func (f *fixture) wait(id uint64) catalog.Job {
	f.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		j, err := f.r.Job(context.Background(), id)
		if err != nil {
			f.t.Fatal(err)
		}
		if j.State != catalog.JobQueued && j.State != catalog.JobRunning {
			if _, busy := f.r.Running(j.AgentID); !busy || j.Kind != catalog.JobBackup {
				return j
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("job %d still %s after %s", id, j.State, waitTimeout)
		}
		time.Sleep(5 * time.Millisecond) // polling, bounded by the deadline
	}
}

// backup runs one backup of agentID to its end.
func (f *fixture) backup(agentID string) catalog.Job {
	f.t.Helper()
	j, err := f.r.Start(context.Background(), agentID)
	if err != nil {
		f.t.Fatalf("Start(%s): %v", agentID, err)
	}
	return f.wait(j.ID)
}

// mustSucceed runs a backup that must succeed and returns its job.
func (f *fixture) mustSucceed(agentID string) catalog.Job {
	f.t.Helper()
	j := f.backup(agentID)
	if j.State != catalog.JobSucceeded {
		f.t.Fatalf("backup job %d: %s: %s", j.ID, j.State, j.Error)
	}
	return j
}

// mustFail runs a backup that must fail with an error containing want.
func (f *fixture) mustFail(agentID, want string) catalog.Job {
	f.t.Helper()
	j := f.backup(agentID)
	if j.State != catalog.JobFailed || !strings.Contains(j.Error, want) {
		f.t.Fatalf("backup job %d: %s %q; want failed with %q", j.ID, j.State, j.Error, want)
	}
	return j
}

func (f *fixture) points(agentID string) []catalog.RecoveryPoint {
	f.t.Helper()
	var rps []catalog.RecoveryPoint
	if err := f.cat.View(context.Background(), func(tx *catalog.Tx) (err error) {
		rps, err = tx.RecoveryPoints(agentID)
		return err
	}); err != nil {
		f.t.Fatal(err)
	}
	return rps
}

func (f *fixture) dirty(agentID string) []catalog.DirtyImage {
	f.t.Helper()
	var ds []catalog.DirtyImage
	if err := f.cat.View(context.Background(), func(tx *catalog.Tx) (err error) {
		ds, err = tx.DirtyImages(agentID)
		return err
	}); err != nil {
		f.t.Fatal(err)
	}
	return ds
}

// restore reads a volume of a recovery point.
func (f *fixture) restore(agentID, snap, vol string) []byte {
	f.t.Helper()
	v, err := f.r.OpenVolume(context.Background(), agentID, snap, vol)
	if err != nil {
		f.t.Fatal(err)
	}
	defer v.Close()
	data, err := io.ReadAll(io.NewSectionReader(v, 0, v.Size()))
	if err != nil {
		f.t.Fatal(err)
	}
	return data
}

// assertPoint checks that a recovery point restores to want, volume by
// volume (compared by SHA-256, streaming), and verifies clean.
func (f *fixture) assertPoint(agentID, snap string, want map[string][]byte) {
	f.t.Helper()
	sums := make(map[string][32]byte, len(want))
	for id, data := range want {
		sums[id] = sha256.Sum256(data)
	}
	f.assertPointSums(agentID, snap, sums)
}

// assertPointSums is assertPoint with the SHA-256 of each volume.
func (f *fixture) assertPointSums(agentID, snap string, want map[string][32]byte) {
	f.t.Helper()
	for id, sum := range want {
		v, err := f.r.OpenVolume(context.Background(), agentID, snap, id)
		if err != nil {
			f.t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, io.NewSectionReader(v, 0, v.Size()))
		v.Close()
		if err != nil {
			f.t.Fatal(err)
		}
		if got := [32]byte(h.Sum(nil)); got != sum {
			f.t.Errorf("%s@%s volume %s: restored bytes have sha256 %x, want %x", agentID, snap, id, got, sum)
		}
	}
	res, err := f.r.VerifyPoint(context.Background(), agentID, snap)
	if err != nil || !res.OK() {
		f.t.Errorf("verify %s@%s: %v, %v", agentID, snap, res, err)
	}
}

// snapshots lists the snapshots of an agent's dataset.
func (f *fixture) snapshots(agentID string) []string {
	f.t.Helper()
	ds, _ := zfs.AgentDataset(f.pool.Root(), agentID)
	ss, err := f.pool.Snapshots(context.Background(), ds)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, s := range ss {
		out = append(out, s.Name.Snap())
	}
	return out
}

type agentv1BlockHash = agentv1.BlockHash

func timeoutC() <-chan time.Time { return time.After(waitTimeout) }

// liveBlock reads block i of a volume's live image.
func (f *fixture) liveBlock(agentID, vol string, i int64) []byte {
	f.t.Helper()
	ds, err := zfs.AgentDataset(f.pool.Root(), agentID)
	if err != nil {
		f.t.Fatal(err)
	}
	img, err := f.pool.OpenImage(context.Background(), ds, ImageName(vol))
	if err != nil {
		f.t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, bs)
	if _, err := img.ReadAt(b, i*bs); err != nil {
		f.t.Fatal(err)
	}
	return b
}
