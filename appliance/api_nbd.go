package appliance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/appliance/backup"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/nbd"
	"github.com/cairnbackup/cairn/zfs"
)

// nbdHold is the hold tag on a snapshot while one of its volumes is
// exported over NBD: the recovery point cannot be destroyed under a
// mounted volume.
const nbdHold = "cairn-nbd"

// NBDExport is a running NBD export of a recovery point's volume.
type NBDExport struct {
	AgentID  string    `json:"agent_id"`
	Snapshot string    `json:"snapshot"`
	VolumeID string    `json:"volume_id"`
	Image    string    `json:"image"`
	Size     int64     `json:"size"`
	Address  string    `json:"address"` // host:port of the NBD server
	Name     string    `json:"name"`    // the export name clients ask for
	URI      string    `json:"uri"`     // nbd://address/name
	Started  time.Time `json:"started"`
}

type export struct {
	view NBDExport
	run  *nbd.Running
	vol  *backup.Volume
	snap zfs.SnapshotName
}

// exports are the appliance's running NBD exports, one per volume of a
// recovery point at most.
type exports struct {
	ctx    context.Context // the exports' lifetime: until Close
	cancel context.CancelFunc
	host   string // address to listen on, port chosen per export

	mu sync.Mutex
	m  map[string]*export // by agent/snapshot/image
}

func newExports(host string) *exports {
	ctx, cancel := context.WithCancel(context.Background())
	return &exports{ctx: ctx, cancel: cancel, host: host, m: map[string]*export{}}
}

func exportKey(agentID, snap, image string) string { return agentID + "/" + snap + "/" + image }

// close stops every export and releases their holds.
func (e *exports) close(pool zfs.Pool) error {
	err := e.stopWhere(pool, func(*export) bool { return true })
	e.cancel()
	return err
}

// stopAgent stops every export of an agent's recovery points and
// releases their holds: unpairing makes them unreachable, and a dataset
// with held snapshots cannot be destroyed.
func (e *exports) stopAgent(pool zfs.Pool, agentID string) error {
	return e.stopWhere(pool, func(x *export) bool { return x.view.AgentID == agentID })
}

// stopWhere stops the exports that match and releases the holds no
// running export needs any more.
func (e *exports) stopWhere(pool zfs.Pool, match func(*export) bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for key, x := range e.m {
		if match(x) {
			delete(e.m, key)
			errs = append(errs, x.stop(), e.releaseUnexported(pool, x.snap))
		}
	}
	return errors.Join(errs...)
}

// releaseUnexported releases the NBD hold of snap unless another of its
// volumes is exported. The caller holds e.mu.
func (e *exports) releaseUnexported(pool zfs.Pool, snap zfs.SnapshotName) error {
	for _, x := range e.m {
		if x.snap == snap {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pool.Release(ctx, snap, nbdHold); err != nil && !errors.Is(err, zfs.ErrNotFound) {
		return fmt.Errorf("release the hold on %s: %w", snap, err)
	}
	return nil
}

// stop ends the export and closes its volume; the caller releases the
// snapshot's hold once no export of it is left (releaseUnexported).
func (x *export) stop() error {
	err := x.run.Stop()
	x.vol.Close()
	return err
}

// v1StartNBD exports a volume of a recovery point over NBD, read-only:
// 201 and the export (its nbd:// URI), or 200 and the running one.
func (a *Appliance) v1StartNBD(w http.ResponseWriter, r *http.Request) {
	id, snapName := r.PathValue("id"), r.PathValue("snap")
	vol, err := a.backups.OpenVolume(r.Context(), id, snapName, r.PathValue("vol"))
	if err != nil {
		v1Err(w, err)
		return
	}
	key := exportKey(id, snapName, vol.Image.Image)
	a.nbd.mu.Lock()
	defer a.nbd.mu.Unlock()
	if x := a.nbd.m[key]; x != nil {
		vol.Close()
		writeJSON(w, http.StatusOK, x.view)
		return
	}
	snap := vol.Snapshot
	if err := a.pool.Hold(r.Context(), snap, nbdHold); err != nil && !errors.Is(err, zfs.ErrExists) {
		vol.Close()
		v1Err(w, fmt.Errorf("hold %s: %w", snap, err))
		return
	}
	name := vol.Image.Image
	run, err := nbd.Start(a.nbd.ctx, net.JoinHostPort(a.nbd.host, "0"), nbd.Config{Logger: a.log.With("component", "nbd")},
		nbd.Export{Name: name, Description: fmt.Sprintf("%s %s %s", id, snapName, vol.Image.VolumeID), Size: vol.Size(), Data: vol})
	if err != nil {
		vol.Close()
		if rerr := a.nbd.releaseUnexported(a.pool, snap); rerr != nil {
			a.log.Warn("release NBD hold", "err", rerr)
		}
		v1Err(w, fmt.Errorf("start the NBD export: %w", err))
		return
	}
	addr := run.Addr().String()
	x := &export{run: run, vol: vol, snap: snap, view: NBDExport{AgentID: id, Snapshot: snapName, VolumeID: vol.Image.VolumeID,
		Image: name, Size: vol.Size(), Address: addr, Name: name, URI: "nbd://" + addr + "/" + name, Started: time.Now().UTC()}}
	a.nbd.m[key] = x
	a.log.Info("NBD export started", "agent", id, "snapshot", snapName, "volume", vol.Image.VolumeID, "uri", x.view.URI)
	writeJSON(w, http.StatusCreated, x.view)
}

// v1StopNBD stops the export of a volume: 204, or 404 if it is not
// exported.
func (a *Appliance) v1StopNBD(w http.ResponseWriter, r *http.Request) {
	id, snapName := r.PathValue("id"), r.PathValue("snap")
	rp, _, err := a.backups.Point(r.Context(), id, snapName)
	if err != nil {
		v1Err(w, err)
		return
	}
	im, err := backup.FindVolume(rp, r.PathValue("vol"))
	if err != nil {
		v1Err(w, err)
		return
	}
	key := exportKey(id, snapName, im.Image)
	a.nbd.mu.Lock()
	defer a.nbd.mu.Unlock()
	x := a.nbd.m[key]
	if x == nil {
		v1Err(w, fmt.Errorf("volume %s of %s is not exported: %w", im.VolumeID, snapName, catalog.ErrNotFound))
		return
	}
	delete(a.nbd.m, key)
	if err := errors.Join(x.stop(), a.nbd.releaseUnexported(a.pool, x.snap)); err != nil {
		a.log.Warn("NBD export ended with an error", "uri", x.view.URI, "err", err)
	}
	a.log.Info("NBD export stopped", "agent", id, "snapshot", snapName, "volume", im.VolumeID)
	w.WriteHeader(http.StatusNoContent)
}

// v1NBDExports lists the running exports.
func (a *Appliance) v1NBDExports(w http.ResponseWriter, _ *http.Request) {
	a.nbd.mu.Lock()
	out := make([]NBDExport, 0, len(a.nbd.m))
	for _, x := range a.nbd.m {
		out = append(out, x.view)
	}
	a.nbd.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].URI < out[j].URI })
	writeJSON(w, http.StatusOK, out)
}
