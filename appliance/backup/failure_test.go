package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/appliance/backup/backuptest"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/internal/logtest"
	"github.com/cairnbackup/cairn/zfs"
)

// TestFailedJobsLeaveNoPoint breaks one backup at a time in each way and
// checks that it fails with a clear reason, leaves no recovery point or
// snapshot, the earlier point still restores and verifies, and the next
// backup succeeds.
func TestFailedJobsLeaveNoPoint(t *testing.T) {
	eachPool(t, func(t *testing.T, pool zfs.Pool) {
		f := newFixture(t, pool, nil)
		a := f.agent("db-1", map[string][]byte{"sda": backuptest.SparseImage(2<<20+100, bs, 7)})
		first := f.mustSucceed("db-1")
		good := map[string][]byte{"sda": a.Volume("sda")}
		for i, c := range []struct {
			name  string
			fault *backuptest.Fault
			want  string
		}{
			{"bad hash", &backuptest.Fault{BadHashAt: 3}, "hash mismatch at block 2 of volume sda"},
			{"frame of other data", &backuptest.Fault{BadFrameAt: 3}, "hash mismatch at block 2 of volume sda"},
			{"corrupt frame", &backuptest.Fault{CorruptFrameAt: 3}, "volume sda: block 2 does not decompress"},
			{"wrong manifest", &backuptest.Fault{WrongManifest: true}, "is not the manifest of the blocks the appliance holds"},
			{"out of order", &backuptest.Fault{OutOfOrder: true}, "malformed stream: volume sda: "},
			{"stream error", &backuptest.Fault{CutAfter: 2}, "the agent's snapshot went away"},
			{"stream ends early", &backuptest.Fault{EOFAfter: 2}, "ended before volume sda was complete"},
			{"refused", &backuptest.Fault{Refuse: "VSS writer failed"}, "agent refused the backup: VSS writer failed"},
		} {
			t.Run(c.name, func(t *testing.T) {
				sda := a.Volume("sda")
				backuptest.Change(sda, bs, 2, uint64(10+i))
				a.SetVolume("sda", sda)
				a.ForgetBaseline() // full reads, so that every fault has blocks to act on
				a.SetFault(c.fault)
				f.mustFail("db-1", c.want)
				if n := len(f.points("db-1")); n != 1 {
					t.Errorf("%d recovery points after a failed job, want 1", n)
				}
				if ss := f.snapshots("db-1"); len(ss) != 1 || ss[0] != first.Snapshot {
					t.Errorf("snapshots %v, want only %s", ss, first.Snapshot)
				}
				f.assertPoint("db-1", first.Snapshot, good)
				if c.fault.BadFrameAt != 0 {
					// What the frame decodes to was not written.
					bad := bytes.Clone(sda[2*bs : 3*bs])
					bad[0] ^= 0xff
					if got := f.liveBlock("db-1", "sda", 2); bytes.Equal(got, bad) {
						t.Error("the live image holds the data of a frame that did not match its hash")
					}
				}
			})
		}
		a.SetFault(nil)
		j := f.mustSucceed("db-1")
		f.assertPoint("db-1", j.Snapshot, map[string][]byte{"sda": a.Volume("sda")})
		f.assertPoint("db-1", first.Snapshot, good)
	})
}

// TestResumeReusesWrittenBlocks cuts a backup mid-volume, then checks that
// the next one sends the agent the blocks the image already holds as
// dirty, so they are not sent again, and that its point is right.
func TestResumeReusesWrittenBlocks(t *testing.T) {
	eachPool(t, func(t *testing.T, pool zfs.Pool) {
		f := newFixture(t, pool, nil)
		a := f.agent("fs-1", map[string][]byte{"sda": backuptest.SparseImage(4<<20, bs, 21)})
		f.mustSucceed("fs-1")
		sda := a.Volume("sda")
		backuptest.Change(sda, bs, 2, 22) // about half the blocks
		a.SetVolume("sda", sda)
		a.SetFault(&backuptest.Fault{CutAfter: 2}) // 16 changed blocks written
		f.mustFail("fs-1", "snapshot went away")
		d := f.dirty("fs-1")
		if len(d) != 1 || d[0].Blocks != 64 || d[0].VolumeID != "sda" {
			t.Fatalf("dirty records %+v, want sda up to block 64", d)
		}

		a.SetFault(nil)
		j := f.mustSucceed("fs-1")
		reqs := a.Requests()
		last := reqs[len(reqs)-1].GetVolumes()[0]
		if len(last.GetDirty()) != 16 || last.GetFull() {
			t.Errorf("resumed request: %d dirty blocks, full %v; want 16 and an incremental", len(last.GetDirty()), last.GetFull())
		}
		if !slices.IsSortedFunc(last.GetDirty(), func(x, y *agentv1BlockHash) int { return int(x.GetIndex()) - int(y.GetIndex()) }) {
			t.Errorf("dirty list not sorted")
		}
		if !strings.Contains(j.Detail, "incremental") {
			t.Errorf("resumed job %q: want incremental", j.Detail)
		}
		f.assertPoint("fs-1", j.Snapshot, map[string][]byte{"sda": sda})
		if d := f.dirty("fs-1"); len(d) != 0 {
			t.Errorf("dirty records after success: %+v", d)
		}
	})
}

// TestRecoverAfterCrash: a job left running and a snapshot the catalog
// does not know (a crash between snapshot and record) are cleaned up by
// Recover, and the next backup succeeds.
func TestRecoverAfterCrash(t *testing.T) {
	eachPool(t, func(t *testing.T, pool zfs.Pool) {
		f := newFixture(t, pool, nil)
		a := f.agent("app-1", map[string][]byte{"sda": backuptest.SparseImage(2<<20, bs, 31)})
		first := f.mustSucceed("app-1")
		// The crash: the snapshot is taken, then the process dies.
		f.r.hookBeforeCommit = func(uint64) error { return errors.New("simulated crash") }
		f.mustFail("app-1", "simulated crash")
		f.r.hookBeforeCommit = nil
		ds, _ := zfs.AgentDataset(f.pool.Root(), "app-1")
		if _, err := f.pool.Snapshot(context.Background(), ds, "rp-20260101T000000Z-99"); err != nil {
			t.Fatal(err)
		}
		var stale catalog.Job
		f.update(func(tx *catalog.Tx) error {
			stale = catalog.Job{AgentID: "app-1", Kind: catalog.JobBackup, State: catalog.JobRunning}
			return tx.PutJob(&stale)
		})
		f.r.Close()
		f.r = f.newRunner(nil)
		if err := f.r.Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
		j, err := f.r.Job(context.Background(), stale.ID)
		if err != nil || j.State != catalog.JobFailed || j.Error != stoppedReason {
			t.Errorf("stale job after Recover: %+v, %v", j, err)
		}
		if ss := f.snapshots("app-1"); len(ss) != 1 || ss[0] != first.Snapshot {
			t.Errorf("snapshots after Recover %v, want only %s", ss, first.Snapshot)
		}
		next := f.mustSucceed("app-1")
		f.assertPoint("app-1", next.Snapshot, map[string][]byte{"sda": a.Volume("sda")})
	})
}

// TestDiskFull puts the embedded pool on a small tmpfs: a backup that does
// not fit fails with the storage-full reason; earlier points verify.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	pool := embeddedPool(t, filepath.Join(dir, "pool"))
	f := newFixture(t, pool, nil)
	a := f.agent("big-1", map[string][]byte{"sda": backuptest.SparseImage(24<<20, bs, 41)})
	first := f.mustSucceed("big-1")
	good := map[string][]byte{"sda": a.Volume("sda")}
	a.SetVolume("sda", backuptest.SparseImage(24<<20, bs, 42)) // new random data that does not fit
	sdb := make([]byte, 48<<20)
	rand.Read(sdb)
	a.SetVolume("sdb", sdb)
	f.mustFail("big-1", "appliance storage is full")
	if n := len(f.points("big-1")); n != 1 {
		t.Errorf("%d recovery points, want 1", n)
	}
	f.assertPoint("big-1", first.Snapshot, good)
}

// TestConcurrencyBound starts backups of three agents with room for two:
// two run, the third waits queued; a second Start of a running agent is
// refused with ErrRunning.
func TestConcurrencyBound(t *testing.T) {
	pool := embeddedPool(t, t.TempDir())
	f := newFixture(t, pool, func(c *Config) { c.MaxConcurrent = 2 })
	hold := make(chan struct{})
	var agents []*backuptest.Agent
	for i, id := range []string{"c-1", "c-2", "c-3"} {
		a := f.agent(id, map[string][]byte{"sda": backuptest.SparseImage(1<<20, bs, uint64(50+i))})
		a.SetFault(&backuptest.Fault{Hold: hold})
		agents = append(agents, a)
	}
	var jobs []catalog.Job
	for _, id := range []string{"c-1", "c-2", "c-3"} {
		j, err := f.r.Start(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	if _, err := f.r.Start(context.Background(), "c-1"); !errors.Is(err, ErrRunning) {
		t.Errorf("second Start of c-1: %v, want ErrRunning", err)
	}
	// Two agents get their Backup call; the third job stays queued.
	started := map[string]bool{}
	for range 2 {
		select {
		case <-agents[0].Started:
			started["c-1"] = true
		case <-agents[1].Started:
			started["c-2"] = true
		case <-agents[2].Started:
			started["c-3"] = true
		case <-timeoutC():
			t.Fatal("two backups did not start")
		}
	}
	queued := 0
	for _, j := range jobs {
		if cur, _ := f.r.Job(context.Background(), j.ID); cur.State == catalog.JobQueued {
			queued++
		}
	}
	if queued != 1 || len(started) != 2 {
		t.Errorf("%d queued, started %v; want 1 queued, 2 started", queued, started)
	}
	close(hold)
	for _, j := range jobs {
		if got := f.wait(j.ID); got.State != catalog.JobSucceeded {
			t.Errorf("job %d: %s %s", j.ID, got.State, got.Error)
		}
	}
}

// TestVolumeSizeChanged: the pool cannot resize an image, so a volume that
// grew fails its backup with a clear reason.
func TestVolumeSizeChanged(t *testing.T) {
	f := newFixture(t, embeddedPool(t, t.TempDir()), nil)
	a := f.agent("g-1", map[string][]byte{"sda": backuptest.SparseImage(1<<20, bs, 60)})
	f.mustSucceed("g-1")
	a.SetVolume("sda", backuptest.SparseImage(2<<20, bs, 61))
	f.mustFail("g-1", "volume sda changed size from 1048576 to 2097152 bytes")
}

// TestNotConnected: an agent without a session fails its job at once.
func TestNotConnected(t *testing.T) {
	f := newFixture(t, embeddedPool(t, t.TempDir()), nil)
	f.update(func(tx *catalog.Tx) error {
		return tx.PutAgent(catalog.Agent{ID: "off-1", Mode: catalog.ModeReverse, Dataset: f.pool.Root().String() + "/agents/off-1"})
	})
	f.mustFail("off-1", "agent not connected")
	if _, err := f.r.Start(context.Background(), "nobody"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Start of an unknown agent: %v, want ErrNotFound", err)
	}
}

// TestVerifyFindsDamage: a hashes image that disagrees with the data (as
// a damaged point would) fails verification and names the block.
func TestVerifyJob(t *testing.T) {
	f := newFixture(t, embeddedPool(t, t.TempDir()), nil)
	f.agent("v-1", map[string][]byte{"sda": backuptest.SparseImage(1<<20, bs, 70)})
	j := f.mustSucceed("v-1")
	vj, err := f.r.StartVerify(context.Background(), "v-1", j.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.wait(vj.ID); got.State != catalog.JobSucceeded {
		t.Fatalf("verify job: %+v", got)
	}
	if rp := f.points("v-1")[0]; rp.VerifiedAt.IsZero() {
		t.Errorf("VerifiedAt not set")
	}
	// Damage: write a snapshot whose hashes do not match its data, and
	// record it as a point.
	rp := f.points("v-1")[0]
	ds, _ := zfs.AgentDataset(f.pool.Root(), "v-1")
	img, err := f.pool.OpenImage(context.Background(), ds, rp.Images[0].Hashes)
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt(make([]byte, 32), 5*32)
	img.Sync()
	img.Close()
	if _, err := f.pool.Snapshot(context.Background(), ds, "rp-damaged"); err != nil {
		t.Fatal(err)
	}
	rp.Snapshot, rp.VerifiedAt = "rp-damaged", rp.VerifiedAt.Add(0)
	rp.CreatedAt = rp.CreatedAt.Add(1)
	rp.VerifiedAt = rp.VerifiedAt.AddDate(-100, 0, 0)
	f.update(func(tx *catalog.Tx) error { return tx.AddRecoveryPoint(rp) })
	vj, err = f.r.StartVerify(context.Background(), "v-1", "rp-damaged")
	if err != nil {
		t.Fatal(err)
	}
	got := f.wait(vj.ID)
	if got.State != catalog.JobFailed || !strings.Contains(got.Error, "sda block 5") || !strings.Contains(got.Error, "manifest") {
		t.Errorf("verify of a damaged point: %s %q", got.State, got.Error)
	}
	if _, err := f.r.StartVerify(context.Background(), "v-1", "rp-nope"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("verify of an unknown point: %v", err)
	}
}

// TestAgentDiesMidJob: the agent's session ends while it streams; the job
// fails saying so, leaves no point, and once the agent is back the next
// job succeeds.
func TestAgentDiesMidJob(t *testing.T) {
	f := newFixture(t, embeddedPool(t, t.TempDir()), nil)
	tok, err := f.gw.CreateAgentToken(context.Background(), "d-1", "test")
	if err != nil {
		t.Fatal(err)
	}
	a := f.agent("d-1", map[string][]byte{"sda": backuptest.SparseImage(2<<20, bs, 90)})
	first := f.mustSucceed("d-1")
	firstData := a.Volume("sda")
	for len(a.Started) > 0 {
		<-a.Started
	}
	// Reconnect with a token we hold, so the agent can come back.
	f.gw.Disconnect("d-1")
	logtest.WaitFor(t, "d-1 disconnected", func() bool { _, err := f.gw.Client("d-1"); return err != nil })
	disconnect := a.Connect(t, f.addr, tok)
	logtest.WaitFor(t, "d-1 connected", func() bool { _, err := f.gw.Client("d-1"); return err == nil })

	sda := a.Volume("sda")
	backuptest.Change(sda, bs, 2, 91)
	a.SetVolume("sda", sda)
	hold := make(chan struct{})
	a.SetFault(&backuptest.Fault{Hold: hold})
	j, err := f.r.Start(context.Background(), "d-1")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Started:
	case <-timeoutC():
		t.Fatal("backup did not reach the agent")
	}
	disconnect()
	close(hold)
	got := f.wait(j.ID)
	if got.State != catalog.JobFailed || !strings.Contains(got.Error, "lost the connection to the agent") {
		t.Errorf("job after the agent died: %s %q", got.State, got.Error)
	}
	if n := len(f.points("d-1")); n != 1 {
		t.Errorf("%d points, want 1", n)
	}
	a.SetFault(nil)
	logtest.WaitFor(t, "d-1 gone", func() bool { _, err := f.gw.Client("d-1"); return err != nil })
	a.Connect(t, f.addr, tok)
	logtest.WaitFor(t, "d-1 back", func() bool { _, err := f.gw.Client("d-1"); return err == nil })
	next := f.mustSucceed("d-1")
	f.assertPoint("d-1", next.Snapshot, map[string][]byte{"sda": sda})
	f.assertPoint("d-1", first.Snapshot, map[string][]byte{"sda": firstData})
}
