package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnbackup/cairn/agent/backup"
	"github.com/cairnbackup/cairn/agent/script"
	"github.com/cairnbackup/cairn/agent/snapshot"
	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// releaseTimeout bounds the release of a snapshot (lvremove, VSS), which
// runs even when the backup was canceled.
const releaseTimeout = 2 * time.Minute

// snapshotProvider is the provider Hello reports: "image" when image
// volumes are configured, else the platform's ("vss", "lvm" or "none").
func (a *Agent) snapshotProvider() string {
	if len(a.cfg.Volumes) > 0 {
		return "image"
	}
	return platformProvider()
}

// volumes lists what the agent can protect: the configured image volumes
// if there are any, else the volumes it discovers.
func (a *Agent) volumes(ctx context.Context) ([]*agentv1.Volume, error) {
	if len(a.cfg.Volumes) == 0 {
		return listVolumes(ctx)
	}
	out := make([]*agentv1.Volume, 0, len(a.cfg.Volumes))
	for _, v := range a.cfg.Volumes {
		size, err := snapshot.Size(v)
		if err != nil {
			return nil, fmt.Errorf("image volume %s: %w", v, err)
		}
		out = append(out, &agentv1.Volume{Id: v, Path: v, SizeBytes: uint64(size), Filesystem: "image"})
	}
	return out, nil
}

// noSnapshotError: no provider can make a consistent snapshot of a volume.
type noSnapshotError struct {
	volume string
	err    error
}

func (e *noSnapshotError) Error() string {
	return fmt.Sprintf("no consistent snapshot available for %s (%v); it is not backed up while mounted: "+
		"put it on LVM, or configure an unmounted device or image file with \"volume = PATH\" in %s", e.volume, e.err, ConfigFile)
}

func (e *noSnapshotError) Unwrap() error { return e.err }

// provider chooses the snapshot provider of a volume.
func (a *Agent) provider(ctx context.Context, volume string) (snapshot.Provider, error) {
	if slices.Contains(a.cfg.Volumes, volume) {
		return snapshot.Image{}, nil
	}
	return a.platformSnapshot(ctx, volume)
}

func (a *Agent) script(path string) script.Script {
	return script.Script{Path: path, Timeout: a.cfg.ScriptTimeout}
}

// Backup snapshots and reads the requested volumes, one after the other.
func (s *service) Backup(req *agentv1.BackupRequest, stream grpc.ServerStreamingServer[agentv1.BackupData]) error {
	ctx := stream.Context()
	a := s.a
	bs, err := agentv1.BlockSize(req.GetBlockSize())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	job := req.GetJobId()
	if job == "" {
		return status.Error(codes.InvalidArgument, "no job id")
	}
	if len(req.GetVolumes()) == 0 {
		return status.Error(codes.InvalidArgument, "no volumes")
	}
	known, err := a.volumes(ctx)
	if err != nil {
		return status.Error(codes.Internal, "list volumes: "+err.Error())
	}
	var total uint64
	seen := make(map[string]bool)
	for _, v := range req.GetVolumes() {
		id := v.GetVolumeId()
		i := slices.IndexFunc(known, func(k *agentv1.Volume) bool { return k.GetId() == id })
		if i < 0 {
			return status.Errorf(codes.InvalidArgument, "unknown volume %q", id)
		}
		if seen[id] {
			return status.Errorf(codes.InvalidArgument, "volume %q requested twice", id)
		}
		seen[id] = true
		total += known[i].GetSizeBytes()
	}
	if !a.backingUp.CompareAndSwap(false, true) {
		return status.Error(codes.FailedPrecondition, "a backup is already running")
	}
	defer a.backingUp.Store(false)

	start := time.Now()
	a.log.Info("backup started", "job", job, "volumes", len(req.GetVolumes()), "block_size", bs)
	progress := &backup.Progress{Total: total}
	for _, v := range req.GetVolumes() {
		if err := a.backupVolume(ctx, job, v, bs, progress, stream.Send); err != nil {
			a.log.Warn("backup failed", "job", job, "volume", v.GetVolumeId(), "err", err)
			return backupStatus(ctx, v.GetVolumeId(), err)
		}
	}
	a.log.Info("backup finished", "job", job, "bytes_read", progress.Read, "bytes_sent", progress.Sent,
		"took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// backupStatus maps a volume's failure to a gRPC status.
func backupStatus(ctx context.Context, volume string, err error) error {
	msg := fmt.Sprintf("volume %s: %v", volume, err)
	var (
		se *script.Error
		ns *noSnapshotError
		re *backup.RequestError
	)
	switch {
	case ctx.Err() != nil:
		return status.Error(codes.Canceled, msg)
	case errors.As(err, &re):
		return status.Error(codes.InvalidArgument, msg)
	case errors.As(err, &se):
		return status.Error(codes.Aborted, msg)
	case errors.As(err, &ns):
		return status.Error(codes.FailedPrecondition, msg)
	}
	return status.Error(codes.Internal, msg)
}

// backupVolume runs the pre script, makes the snapshot, runs the post
// script (at once for a point-in-time snapshot, after the read for an
// image), reads the volume and releases the snapshot. The post script and
// the release happen whatever fails, cancellation included.
func (a *Agent) backupVolume(ctx context.Context, job string, v *agentv1.BackupVolume, bs int,
	progress *backup.Progress, send func(*agentv1.BackupData) error) (err error) {
	id := v.GetVolumeId()
	env := []string{script.EnvVolumeID + "=" + id, script.EnvJobID + "=" + job}
	posted := false
	post := func(result string) {
		if posted {
			return
		}
		posted = true
		// Even when the backup was canceled: the post script may have to
		// resume what the pre script stopped.
		out, err := a.script(a.cfg.PostScript).Run(context.WithoutCancel(ctx), "post", append(env, script.EnvResult+"="+result)...)
		if err != nil {
			a.log.Warn("post script failed", "job", job, "volume", id, "err", err)
		} else if a.cfg.PostScript != "" {
			a.log.Info("post script done", "job", job, "volume", id)
			a.log.Debug("post script output", "job", job, "volume", id, "output", out)
		}
	}
	p, err := a.provider(ctx, id)
	if err != nil {
		return err // before any script: nothing to undo
	}
	defer func() {
		if err != nil {
			post("failed")
		} else {
			post("ok")
		}
	}()
	if out, err := a.script(a.cfg.PreScript).Run(ctx, "pre", env...); err != nil {
		return err
	} else if a.cfg.PreScript != "" {
		a.log.Info("pre script done", "job", job, "volume", id)
		a.log.Debug("pre script output", "job", job, "volume", id, "output", out)
	}
	snap, err := p.Snapshot(ctx, id, job)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	a.log.Info("snapshot made", "job", job, "volume", id, "provider", p.Name(), "device", snap.Device(), "size", snap.Size())
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		if rerr := snap.Release(rctx); rerr != nil {
			a.log.Error("release snapshot", "job", job, "volume", id, "provider", p.Name(), "err", rerr)
		}
		if err != nil {
			post("failed")
		} else {
			post("ok")
		}
	}()
	if snap.PointInTime() {
		post("ok")
	}
	_, err = a.backups.Backup(ctx, backup.Request{JobID: job, Volume: v, BlockSize: bs, Provider: p.Name(),
		Source: snap, Size: snap.Size(), Send: send, Progress: progress, Log: a.log})
	return err
}

// ConfirmBackup adopts the hashes of a backup the appliance made a
// recovery point of, volume by volume, where the manifests match.
func (s *service) ConfirmBackup(_ context.Context, req *agentv1.ConfirmBackupRequest) (*agentv1.ConfirmBackupResponse, error) {
	if req.GetJobId() == "" {
		return nil, status.Error(codes.InvalidArgument, "no job id")
	}
	resp := &agentv1.ConfirmBackupResponse{}
	for _, v := range req.GetVolumes() {
		ok, err := s.a.backups.Confirm(req.GetJobId(), v.GetVolumeId(), v.GetManifest())
		if err != nil {
			return nil, status.Errorf(codes.Internal, "confirm volume %s: %v", v.GetVolumeId(), err)
		}
		if ok {
			resp.Adopted = append(resp.Adopted, v.GetVolumeId())
			s.a.log.Info("backup confirmed: baseline adopted", "job", req.GetJobId(), "volume", v.GetVolumeId())
		} else {
			s.a.log.Warn("backup confirmation does not match this agent's pending state; baseline kept",
				"job", req.GetJobId(), "volume", v.GetVolumeId())
		}
	}
	return resp, nil
}
