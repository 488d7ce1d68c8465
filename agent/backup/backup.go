// Package backup reads a volume's snapshot in fixed blocks and streams the
// blocks whose hash differs from the baseline (the hashes of the last
// backup the appliance confirmed) as BackupData messages, keeping the
// baseline and the pending hashes of each backup in state files.
package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// Request is one volume of a Backup.
type Request struct {
	JobID  string
	Volume *agentv1.BackupVolume
	// BlockSize is a valid block size (agentv1.BlockSize).
	BlockSize int
	// Provider names the snapshot provider, for VolumeBegin.
	Provider string
	// Source is the frozen volume, Size bytes long.
	Source io.ReaderAt
	Size   int64
	// Send sends one message of the stream. The message and its data are
	// reused once Send returns: Send must not keep them.
	Send func(*agentv1.BackupData) error
	// Progress is shared by the volumes of one Backup; nil for none.
	Progress *Progress
	// Tuning overrides the reader's defaults; the zero value is fine.
	Tuning Tuning
	Log    *slog.Logger
}

// Progress counts the bytes of a whole Backup, for BackupProgress.
type Progress struct {
	Read, Total, Sent uint64
	// Every is how often progress is reported; 0 means a second.
	Every time.Duration
	last  time.Time
}

func (p *Progress) due(now time.Time) *agentv1.BackupProgress {
	if p == nil {
		return nil
	}
	every := p.Every
	if every == 0 {
		every = time.Second
	}
	if p.last.IsZero() {
		p.last = now
		return nil
	}
	if now.Sub(p.last) < every {
		return nil
	}
	p.last = now
	return p.proto()
}

func (p *Progress) proto() *agentv1.BackupProgress {
	return &agentv1.BackupProgress{BytesRead: p.Read, BytesTotal: p.Total, BytesSent: p.Sent}
}

// Reasons for a full read (VolumeBegin.reason).
const (
	ReasonFullRequested   = "full read requested"
	ReasonNoRecoveryPoint = "the appliance has no recovery point of this volume"
	ReasonNoBaseline      = "no baseline"
	ReasonMismatch        = "baseline does not match the appliance's recovery point"
	ReasonSizeChanged     = "volume size changed"
	ReasonBlockSize       = "block size changed"
	// ReasonDamaged is followed by what is wrong with the state file.
	ReasonDamaged = "baseline state unusable: "
)

// Backup reads one volume: it sends VolumeBegin, the blocks, and VolumeEnd
// (after the hashes of this read are stored as the job's pending state,
// which ConfirmBackup turns into the baseline). It reads incrementally
// only when the volume's baseline is intact, has the volume's size and the
// block size, and its manifest is the request's base manifest. On error
// (ctx canceled included) the baseline is left untouched and the pending
// state removed.
func (s *Store) Backup(ctx context.Context, r Request) (*agentv1.VolumeEnd, error) {
	log := r.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	volID := r.Volume.GetVolumeId()
	blocks := agentv1.Blocks(r.Size, r.BlockSize)
	if err := checkDirty(r.Volume.GetDirty(), blocks); err != nil {
		return nil, err
	}
	base, reason, err := s.plan(volID, r, log)
	if err != nil {
		return nil, err
	}
	if base != nil {
		defer base.Close()
	}
	pend, err := s.createPending(Header{VolumeID: volID, JobID: r.JobID, Size: r.Size, BlockSize: r.BlockSize, Blocks: blocks})
	if err != nil {
		return nil, err
	}
	begin := &agentv1.VolumeBegin{VolumeId: volID, SizeBytes: uint64(r.Size), BlockSize: uint32(r.BlockSize),
		Incremental: base != nil, Reason: reason, Provider: r.Provider}
	if base != nil {
		log.Info("incremental read", "volume", volID, "job", r.JobID, "size", r.Size)
	} else {
		log.Info("full read", "volume", volID, "job", r.JobID, "size", r.Size, "reason", reason)
	}
	if err := r.Send(&agentv1.BackupData{Begin: begin}); err != nil {
		pend.abort()
		return nil, fmt.Errorf("send volume begin: %w", err)
	}
	p := newPipeline(r, base, pend)
	end, err := p.run(ctx)
	if err != nil {
		pend.abort()
		return nil, err
	}
	if err := pend.commit(end.Manifest); err != nil {
		return nil, err
	}
	if err := r.Send(&agentv1.BackupData{End: end, Progress: r.Progress.protoOrNil()}); err != nil {
		return nil, fmt.Errorf("send volume end: %w", err)
	}
	log.Info("volume read", "volume", volID, "job", r.JobID, "blocks", end.Blocks, "blocks_sent", end.BlocksSent,
		"zero_blocks", end.ZeroBlocks, "bytes_sent", end.BytesSent)
	return end, nil
}

func (p *Progress) protoOrNil() *agentv1.BackupProgress {
	if p == nil {
		return nil
	}
	return p.proto()
}

// plan adopts a pending state the appliance's recovery point was made
// from (a lost ConfirmBackup), removes stale pending states, and opens the
// baseline if an incremental read may use it; otherwise it says why not.
func (s *Store) plan(volID string, r Request, log *slog.Logger) (*baseline, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := r.Volume.GetBaseManifest()
	adopted, err := s.adoptMatching(volID, want)
	if err != nil {
		return nil, "", err
	}
	if adopted {
		log.Info("adopted the state of a backup whose confirmation was lost", "volume", volID, "job", r.JobID)
	}
	if err := s.removePending(volID, ""); err != nil {
		return nil, "", fmt.Errorf("remove stale backup state: %w", err)
	}
	switch {
	case r.Volume.GetFull():
		return nil, ReasonFullRequested, nil
	case len(want) == 0:
		return nil, ReasonNoRecoveryPoint, nil
	}
	base, err := s.openBaseline(volID)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, ReasonNoBaseline, nil
	case err != nil:
		log.Warn("baseline state unusable; reading the whole volume", "volume", volID, "err", err)
		return nil, ReasonDamaged + err.Error(), nil
	}
	var reason string
	switch {
	case !bytes.Equal(base.h.Manifest[:], want):
		reason = ReasonMismatch
	case base.h.Size != r.Size:
		reason = ReasonSizeChanged
	case base.h.BlockSize != r.BlockSize:
		reason = ReasonBlockSize
	default:
		return base, "", nil
	}
	base.Close()
	return nil, reason, nil
}

// checkDirty checks that dirty blocks are sorted, distinct, within the
// volume and carry a hash.
func checkDirty(dirty []*agentv1.BlockHash, blocks int64) error {
	for i, d := range dirty {
		if d.GetIndex() >= uint64(blocks) {
			return &RequestError{Msg: fmt.Sprintf("dirty block %d is beyond the volume's %d blocks", d.GetIndex(), blocks)}
		}
		if len(d.GetHash()) != agentv1.HashSize {
			return &RequestError{Msg: fmt.Sprintf("dirty block %d: hash of %d bytes, want %d", d.GetIndex(), len(d.GetHash()), agentv1.HashSize)}
		}
		if i > 0 && d.GetIndex() <= dirty[i-1].GetIndex() {
			return &RequestError{Msg: fmt.Sprintf("dirty blocks not in ascending order at block %d", d.GetIndex())}
		}
	}
	return nil
}

// RequestError is a request the agent cannot serve as asked.
type RequestError struct{ Msg string }

func (e *RequestError) Error() string { return e.Msg }
