package appliance

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/cairnbackup/cairn/appliance/backup"
	"github.com/cairnbackup/cairn/appliance/catalog"
)

// routeBackup registers the backup, recovery point, restore and verify
// endpoints of the v1 API (docs/api.md).
func (a *Appliance) routeBackup(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/agents/{id}/backups", a.v1StartBackup)
	mux.HandleFunc("GET /api/v1/agents/{id}/backups", a.v1Backups)
	mux.HandleFunc("GET /api/v1/jobs/{id}", a.v1Job)
	mux.HandleFunc("GET /api/v1/agents/{id}/recovery-points", a.v1Points)
	mux.HandleFunc("GET /api/v1/agents/{id}/recovery-points/{snap}/volumes/{vol}", a.v1VolumeImage)
	mux.HandleFunc("POST /api/v1/agents/{id}/recovery-points/{snap}/verify", a.v1Verify)
	mux.HandleFunc("POST /api/v1/agents/{id}/recovery-points/{snap}/volumes/{vol}/nbd", a.v1StartNBD)
	mux.HandleFunc("DELETE /api/v1/agents/{id}/recovery-points/{snap}/volumes/{vol}/nbd", a.v1StopNBD)
	mux.HandleFunc("GET /api/v1/nbd", a.v1NBDExports)
}

// backupErr answers with the v1 error of a backup call.
func backupErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, backup.ErrRunning):
		writeJSON(w, http.StatusConflict, V1Error{Code: "backup_running", Message: err.Error()})
	case errors.Is(err, backup.ErrClosed):
		writeJSON(w, http.StatusServiceUnavailable, V1Error{Code: "shutting_down", Message: err.Error()})
	default:
		v1Err(w, err)
	}
}

func (a *Appliance) v1StartBackup(w http.ResponseWriter, r *http.Request) {
	job, err := a.backups.Start(r.Context(), r.PathValue("id"))
	if err != nil {
		backupErr(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, job)
}

// v1Backups lists an agent's jobs, newest first, with live progress.
func (a *Appliance) v1Backups(w http.ResponseWriter, r *http.Request) {
	jobs, err := a.backups.Jobs(r.Context(), r.PathValue("id"))
	if err != nil {
		backupErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, jobs)
}

func (a *Appliance) v1Job(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		v1Err(w, fmt.Errorf("%w: job id: not a number", errBadRequest))
		return
	}
	job, err := a.backups.Job(r.Context(), id)
	if err != nil {
		backupErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, job)
}

// PointView is a recovery point as GET /api/v1/agents/{id}/recovery-points
// shows it.
type PointView struct {
	Snapshot   string               `json:"snapshot"`
	CreatedAt  time.Time            `json:"created_at"`
	Bytes      int64                `json:"bytes"`
	Changed    int64                `json:"changed"`
	BlockSize  int                  `json:"block_size"`
	JobID      uint64               `json:"job_id"`
	VerifiedAt *time.Time           `json:"verified_at"`
	Volumes    []catalog.PointImage `json:"volumes"`
}

func (a *Appliance) v1Points(w http.ResponseWriter, r *http.Request) {
	var rps []catalog.RecoveryPoint
	err := a.catalog.View(r.Context(), func(tx *catalog.Tx) (err error) {
		rps, err = tx.RecoveryPoints(r.PathValue("id"))
		return err
	})
	if err != nil {
		v1Err(w, err)
		return
	}
	out := make([]PointView, 0, len(rps))
	for i := len(rps) - 1; i >= 0; i-- {
		rp := rps[i]
		v := PointView{Snapshot: rp.Snapshot, CreatedAt: rp.CreatedAt, Bytes: rp.Bytes, Changed: rp.Changed,
			BlockSize: rp.BlockSize, JobID: rp.JobID, Volumes: rp.Images}
		if !rp.VerifiedAt.IsZero() {
			t := rp.VerifiedAt
			v.VerifiedAt = &t
		}
		if v.Volumes == nil {
			v.Volumes = []catalog.PointImage{}
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

// v1VolumeImage streams a volume of a recovery point as a raw image, with
// Range support. {vol} is the image name, the volume ID (path-escaped) or
// the volume's index in the point (0, 1, ...).
func (a *Appliance) v1VolumeImage(w http.ResponseWriter, r *http.Request) {
	id, snap := r.PathValue("id"), r.PathValue("snap")
	v, err := a.backups.OpenVolume(r.Context(), id, snap, r.PathValue("vol"))
	if err != nil {
		v1Err(w, err)
		return
	}
	defer v.Close()
	name := fmt.Sprintf("%s-%s-%s.img", id, snap, v.Image.Image)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	http.ServeContent(w, r, name, v.Point.CreatedAt, io.NewSectionReader(v, 0, v.Size()))
}

// v1Verify starts a verify job of a recovery point: 202 and the job.
func (a *Appliance) v1Verify(w http.ResponseWriter, r *http.Request) {
	job, err := a.backups.StartVerify(r.Context(), r.PathValue("id"), r.PathValue("snap"))
	if err != nil {
		backupErr(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, job)
}
