package appliance_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance"
	"github.com/cairnbackup/cairn/appliance/appliancetest"
	"github.com/cairnbackup/cairn/appliance/backup/backuptest"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/internal/logtest"
	"github.com/cairnbackup/cairn/zfs"
)

// TestV1BackupRestore drives backups through the REST API against an
// in-process agent on the appliance's gateway: start, conflict, progress,
// recovery points, the raw image with and without Range, verify, errors.
func TestV1BackupRestore(t *testing.T) {
	ctx := context.Background()
	s := appliancetest.Serve(t, appliance.Config{})
	a, base := s.Appliance, s.URL
	vol := backuptest.SparseImage(3<<20+777, agentv1.DefaultBlockSize, 5)
	ag := appliancetest.ConnectAgent(t, a, s.Gateway, "web-1", vol)
	hold := make(chan struct{})
	ag.SetFault(&backuptest.Fault{Hold: hold})
	ds, _ := zfs.AgentDataset(a.Pool().Root(), "web-1")
	if err := a.Pool().CreateDataset(ctx, ds); err != nil {
		t.Fatal(err)
	}
	if err := a.Catalog().Update(ctx, func(tx *catalog.Tx) error {
		ag, err := tx.Agent("web-1")
		if err != nil {
			return err
		}
		ag.Dataset = ds.String()
		return tx.PutAgent(ag)
	}); err != nil {
		t.Fatal(err)
	}

	var job catalog.Job
	call(t, "POST", base+"/api/v1/agents/web-1/backups", nil, http.StatusAccepted, &job)
	var v1e appliance.V1Error
	call(t, "POST", base+"/api/v1/agents/web-1/backups", nil, http.StatusConflict, &v1e)
	if v1e.Code != "backup_running" {
		t.Errorf("second start: code %q", v1e.Code)
	}
	// While the agent holds the blocks back, the job shows as running
	// with the total the agent announced.
	logtest.WaitFor(t, "live progress", func() bool {
		var j catalog.Job
		call(t, "GET", fmt.Sprintf("%s/api/v1/jobs/%d", base, job.ID), nil, http.StatusOK, &j)
		return j.State == catalog.JobRunning && j.Progress.BytesTotal == int64(len(vol)) && !j.Started.IsZero()
	})
	close(hold)
	job = waitJob(t, base, job.ID)
	if job.State != catalog.JobSucceeded || job.Snapshot == "" {
		t.Fatalf("job %+v", job)
	}
	var jobs []catalog.Job
	call(t, "GET", base+"/api/v1/agents/web-1/backups", nil, http.StatusOK, &jobs)
	if len(jobs) != 1 || jobs[0].ID != job.ID || jobs[0].Progress.BytesTotal != int64(len(vol)) {
		t.Errorf("jobs %+v", jobs)
	}
	var points []appliance.PointView
	call(t, "GET", base+"/api/v1/agents/web-1/recovery-points", nil, http.StatusOK, &points)
	if len(points) != 1 || points[0].Snapshot != job.Snapshot || len(points[0].Volumes) != 1 || points[0].VerifiedAt != nil {
		t.Fatalf("points %+v", points)
	}
	img := base + "/api/v1/agents/web-1/recovery-points/" + job.Snapshot + "/volumes/"
	for _, name := range []string{"0", "sda", points[0].Volumes[0].Image} {
		body := get(t, img+name, "", http.StatusOK)
		if !bytes.Equal(body, vol) {
			t.Errorf("image %q: %d bytes, not the volume", name, len(body))
		}
	}
	if got := get(t, img+"0", "bytes=1000000-1065535", http.StatusPartialContent); !bytes.Equal(got, vol[1000000:1065536]) {
		t.Errorf("range: %d bytes, not the volume's", len(got))
	}
	get(t, img+"1", "", http.StatusNotFound)
	get(t, base+"/api/v1/agents/web-1/recovery-points/rp-nope/volumes/0", "", http.StatusNotFound)

	var vj catalog.Job
	call(t, "POST", base+"/api/v1/agents/web-1/recovery-points/"+job.Snapshot+"/verify", nil, http.StatusAccepted, &vj)
	if vj = waitJob(t, base, vj.ID); vj.State != catalog.JobSucceeded || vj.Kind != catalog.JobVerify {
		t.Errorf("verify job %+v", vj)
	}
	call(t, "GET", base+"/api/v1/agents/web-1/recovery-points", nil, http.StatusOK, &points)
	if points[0].VerifiedAt == nil {
		t.Errorf("verified_at not set")
	}

	call(t, "POST", base+"/api/v1/agents/nobody/backups", nil, http.StatusNotFound, &v1e)
	call(t, "GET", base+"/api/v1/agents/nobody/recovery-points", nil, http.StatusNotFound, &v1e)
	call(t, "GET", base+"/api/v1/jobs/x", nil, http.StatusBadRequest, &v1e)
	call(t, "GET", base+"/api/v1/jobs/999", nil, http.StatusNotFound, &v1e)
	call(t, "POST", base+"/api/v1/agents/web-1/recovery-points/rp-nope/verify", nil, http.StatusNotFound, &v1e)

	// Unpairing ends the agent's NBD exports, so that its held recovery
	// points can be destroyed with it.
	var x appliance.NBDExport
	call(t, "POST", img+"0/nbd", nil, http.StatusCreated, &x)
	var exports []appliance.NBDExport
	call(t, "GET", base+"/api/v1/nbd", nil, http.StatusOK, &exports)
	if len(exports) != 1 {
		t.Fatalf("exports %+v", exports)
	}
	call(t, "DELETE", base+"/api/v1/agents/web-1?dataset=destroy&force=1", nil, http.StatusOK, nil)
	call(t, "GET", base+"/api/v1/nbd", nil, http.StatusOK, &exports)
	if len(exports) != 0 {
		t.Errorf("exports after unpairing: %+v", exports)
	}
	if c, err := net.Dial("tcp", x.Address); err == nil {
		c.Close()
		t.Errorf("the export still listens at %s after unpairing", x.Address)
	}
	if _, err := a.Pool().Dataset(ctx, ds); !errors.Is(err, zfs.ErrNotFound) {
		t.Errorf("dataset after unpairing with destroy: %v", err)
	}
}

// call sends body as JSON, wants the status want and decodes the answer
// into out (if not nil).
func call(t *testing.T, method, url string, body any, want int, out any) {
	t.Helper()
	callAs(t, method, url, "", body, want, out)
}

func get(t *testing.T, url, rng string, want int) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d, want %d", url, resp.StatusCode, want)
	}
	if want == http.StatusOK && resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("content type %q", resp.Header.Get("Content-Type"))
	}
	return data
}

// waitJob polls a job until it has finished.
func waitJob(t *testing.T, base string, id uint64) catalog.Job {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var j catalog.Job
		call(t, "GET", fmt.Sprintf("%s/api/v1/jobs/%d", base, id), nil, http.StatusOK, &j)
		if j.State != catalog.JobQueued && j.State != catalog.JobRunning {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d still %s", id, j.State)
		}
		time.Sleep(10 * time.Millisecond) // polling, bounded by the deadline
	}
}
