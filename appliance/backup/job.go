package backup

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/zfs"
)

const (
	// markStep is how far, in blocks, a dirty record reaches beyond the
	// block being written, so that few catalog transactions are needed.
	markStep = 1024
	// maxDirty bounds the dirty list sent to the agent for one volume
	// (about 40 bytes each in the request); beyond it the job asks for a
	// full read instead, and still skips writing blocks the image holds.
	maxDirty = 64 << 10
	// saveEvery is how often a running job's progress is stored.
	saveEvery = time.Second
	// callTimeout bounds the agent calls other than Backup.
	callTimeout = time.Minute
)

// run is one backup job in progress.
type run struct {
	r        *Runner
	job      *catalog.Job
	log      *slog.Logger
	started  time.Time
	lastSave time.Time

	agent   catalog.Agent
	ds      zfs.DatasetName
	bs      int
	written int64 // bytes of blocks written
	zstd    *zstd.Decoder
}

// volume is one volume of a job: its plan, then its writing.
type volume struct {
	id     string
	image  string
	hashes string
	size   int64
	blocks int64

	prev     *catalog.PointImage // in the newest recovery point that has it
	prevSnap zfs.SnapshotName
	// mark: a dirty record says blocks [0, mark) may differ from prev.
	mark int64
	// unknownBelow: the image's content in [0, unknownBelow) is not known
	// (write every block there); else overrides are the blocks where it
	// differs from prev (or from zeros without prev), with its hashes.
	unknownBelow int64
	overrides    []*agentv1.BlockHash
	full         bool
	fullReason   string
	// hashesAll: write every hash, as the live hashes image may not hold
	// prev's (new, or touched by an unfinished backup); else write only
	// the hashes that differ from prev's.
	hashesAll bool

	img     zfs.Image
	hashImg zfs.Image

	// Writing.
	begun       bool
	incremental bool
	base        *baseline
	man         agentv1.Manifest
	next        int64  // next block index of the manifest
	hashBuf     []byte // hashes not yet written, from hashOff
	hashOff     int64
	sent        int64 // blocks received
	changed     int64 // blocks written
	manifest    []byte
}

// backup runs the job; on success the recovery point and the job's
// success are recorded.
func (b *run) backup(ctx context.Context) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b.bs = b.r.cfg.BlockSize
	var (
		settings catalog.Settings
		points   []catalog.RecoveryPoint
		dirty    []catalog.DirtyImage
	)
	err = b.r.cat.View(ctx, func(tx *catalog.Tx) error {
		var err error
		if b.agent, err = tx.Agent(b.job.AgentID); err != nil {
			return err
		}
		if settings, err = tx.Settings(b.job.AgentID); err != nil && !errors.Is(err, catalog.ErrNotFound) {
			return err
		}
		if points, err = tx.RecoveryPoints(b.job.AgentID); err != nil {
			return err
		}
		dirty, err = tx.DirtyImages(b.job.AgentID)
		return err
	})
	if err != nil {
		return fmt.Errorf("read the catalog: %w", err)
	}
	if b.ds, err = zfs.ParseDatasetName(b.agent.Dataset); err != nil {
		return fmt.Errorf("agent's dataset %q: %w", b.agent.Dataset, err)
	}
	dctx, dcancel := context.WithTimeout(ctx, callTimeout)
	client, err := b.r.cfg.Clients.Dial(dctx, b.job.AgentID)
	dcancel()
	if err != nil {
		return agentErr(ctx, "connect", err)
	}
	lctx, lcancel := context.WithTimeout(ctx, callTimeout)
	lv, err := client.ListVolumes(lctx, &agentv1.ListVolumesRequest{})
	lcancel()
	if err != nil {
		return agentErr(ctx, "listing volumes", err)
	}
	chosen, err := chooseVolumes(lv.GetVolumes(), settings.Volumes)
	if err != nil {
		return err
	}

	images := make(map[string]string)
	for _, av := range chosen {
		im := ImageName(av.GetId())
		if other, dup := images[im]; dup {
			return fmt.Errorf("the agent lists volumes %q and %q, which share image %s", other, av.GetId(), im)
		}
		images[im] = av.GetId()
	}
	vols := make([]*volume, len(chosen))
	defer func() {
		for _, v := range vols {
			if v != nil {
				v.close()
			}
		}
	}()
	for i, av := range chosen {
		v := &volume{id: av.GetId(), image: ImageName(av.GetId()), size: int64(av.GetSizeBytes())}
		vols[i] = v
		if err := b.plan(ctx, v, points, dirty); err != nil {
			return err
		}
	}

	b.zstd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(b.bs)))
	if err != nil {
		return fmt.Errorf("zstd decoder: %w", err)
	}
	defer b.zstd.Close()

	req := &agentv1.BackupRequest{JobId: strconv.FormatUint(b.job.ID, 10), BlockSize: uint32(b.bs)}
	for _, v := range vols {
		bv := &agentv1.BackupVolume{VolumeId: v.id, Full: v.full}
		if !v.full {
			bv.BaseManifest = v.prevManifest()
			bv.Dirty = v.overrides
		}
		req.Volumes = append(req.Volumes, bv)
	}
	if err := b.receive(ctx, client, req, vols); err != nil {
		return err
	}
	return b.commit(ctx, client, vols)
}

// chooseVolumes picks the volumes to back up: those named in the
// settings (by ID or path), or all.
func chooseVolumes(all []*agentv1.Volume, want []string) ([]*agentv1.Volume, error) {
	if len(want) == 0 {
		if len(all) == 0 {
			return nil, errors.New("the agent has no volume to back up")
		}
		return all, nil
	}
	var out []*agentv1.Volume
	seen := make(map[string]bool)
	for _, w := range want {
		i := slices.IndexFunc(all, func(v *agentv1.Volume) bool { return v.GetId() == w || v.GetPath() == w })
		if i < 0 {
			return nil, fmt.Errorf("volume %q of the agent's settings is not on the agent", w)
		}
		if !seen[all[i].GetId()] {
			seen[all[i].GetId()] = true
			out = append(out, all[i])
		}
	}
	return out, nil
}

func (v *volume) prevManifest() []byte {
	if v.prev == nil {
		return nil
	}
	m, _ := hex.DecodeString(v.prev.Manifest)
	return m
}

func (v *volume) close() {
	if v.img != nil {
		v.img.Close()
		v.img = nil
	}
	if v.hashImg != nil {
		v.hashImg.Close()
		v.hashImg = nil
	}
	if v.base != nil {
		v.base.close()
		v.base = nil
	}
}

// plan prepares a volume: its images, its baseline and what to ask of the
// agent.
func (b *run) plan(ctx context.Context, v *volume, points []catalog.RecoveryPoint, dirty []catalog.DirtyImage) error {
	v.blocks = agentv1.Blocks(v.size, b.bs)
	v.hashes = HashesName(v.image, b.bs)
	images, err := b.r.pool.Images(ctx, b.ds)
	if err != nil {
		return storageErr("list the images of "+b.ds.String(), err)
	}
	fresh := true
	for _, im := range images {
		switch im.Name {
		case v.image:
			fresh = false
			if im.Size != v.size {
				return fmt.Errorf("volume %s changed size from %d to %d bytes: the appliance cannot resize its image yet", v.id, im.Size, v.size)
			}
		case v.hashes:
			if im.Size != v.blocks*agentv1.HashSize {
				return fmt.Errorf("hashes image %s has %d bytes, want %d", v.hashes, im.Size, v.blocks*agentv1.HashSize)
			}
			if v.hashImg, err = b.r.pool.OpenImage(ctx, b.ds, v.hashes); err != nil {
				return storageErr("open image "+v.hashes, err)
			}
		}
	}
	if fresh {
		if err := b.r.pool.CreateImage(ctx, b.ds, v.image, v.size); err != nil {
			return storageErr("create image "+v.image, err)
		}
	}
	if v.hashImg == nil {
		v.hashesAll = true
		if err := b.r.pool.CreateImage(ctx, b.ds, v.hashes, v.blocks*agentv1.HashSize); err != nil {
			return storageErr("create image "+v.hashes, err)
		}
		if v.hashImg, err = b.r.pool.OpenImage(ctx, b.ds, v.hashes); err != nil {
			return storageErr("open image "+v.hashes, err)
		}
	}
	if v.img, err = b.r.pool.OpenImage(ctx, b.ds, v.image); err != nil {
		return storageErr("open image "+v.image, err)
	}

	// The newest recovery point that has this image holds what the live
	// image holds, except where a dirty record says otherwise.
	otherBlockSize := false
	for i := len(points) - 1; i >= 0 && v.prev == nil && !fresh; i-- {
		for k := range points[i].Images {
			pi := points[i].Images[k]
			if pi.Image != v.image {
				continue
			}
			if points[i].BlockSize != b.bs || pi.Size != v.size {
				otherBlockSize = true
				break
			}
			snap, err := b.ds.Snapshot(points[i].Snapshot)
			if err != nil {
				return fmt.Errorf("recovery point %s: %w", points[i].Snapshot, err)
			}
			v.prev, v.prevSnap = &pi, snap
			break
		}
		if otherBlockSize {
			break
		}
	}
	for _, d := range dirty {
		if d.Image == v.image {
			bytes := d.Blocks * int64(d.BlockSize)
			v.mark = min(v.blocks, (bytes+int64(b.bs)-1)/int64(b.bs))
		}
	}
	switch {
	case fresh:
		v.full, v.fullReason = true, "new volume"
	case otherBlockSize:
		v.full, v.fullReason, v.unknownBelow = true, "the last recovery point used another block size", v.blocks
	case v.prev == nil && len(points) > 0:
		// The image was written by backups that made no recovery point
		// of it; the dirty record covers those writes.
		v.full, v.fullReason = true, "no recovery point of this volume yet"
	case v.prev == nil:
		v.full, v.fullReason = true, "no recovery point yet"
	}
	if v.prev != nil {
		r, err := b.r.pool.OpenSnapshotImage(ctx, v.prevSnap, v.prev.Hashes)
		if errors.Is(err, zfs.ErrNotFound) {
			b.log.Warn("backup: the recovery point of a volume is gone; reading it in full", "volume", v.id, "snapshot", v.prevSnap.String())
			v.prev = nil
			v.full, v.fullReason, v.unknownBelow = true, "its last recovery point is gone", v.blocks
		} else if err != nil {
			return storageErr("open the hashes of "+v.prevSnap.String(), err)
		} else {
			r.Close()
		}
	}
	if v.prev == nil || v.mark > 0 {
		v.hashesAll = true
	}
	if v.mark > 0 && v.unknownBelow == 0 {
		if err := b.scanDirty(ctx, v); err != nil {
			return err
		}
	}
	base, err := b.openBaseline(ctx, v)
	if err != nil {
		return err
	}
	v.base = base
	return nil
}

// scanDirty hashes the live image's blocks below the volume's mark and
// keeps those that differ from the baseline as overrides.
func (b *run) scanDirty(ctx context.Context, v *volume) error {
	base, err := b.openBaseline(ctx, &volume{size: v.size, blocks: v.blocks, prev: v.prev, prevSnap: v.prevSnap, unknownBelow: 0})
	if err != nil {
		return err
	}
	defer base.close()
	buf := make([]byte, b.bs)
	var diffs []*agentv1.BlockHash
	for i := int64(0); i < v.mark; i++ {
		if i%1024 == 0 && ctx.Err() != nil {
			return fmt.Errorf("canceled: %w", ctx.Err())
		}
		n := agentv1.BlockLength(v.size, b.bs, i)
		if _, err := v.img.ReadAt(buf[:n], i*int64(b.bs)); err != nil && !errors.Is(err, io.EOF) {
			return storageErr(fmt.Sprintf("read block %d of image %s", i, v.image), err)
		}
		live := agentv1.HashBlock(buf[:n])
		want, _, err := base.hash(i)
		if err != nil {
			return err
		}
		if live != want {
			if len(diffs) == maxDirty {
				v.unknownBelow, v.overrides = v.mark, nil
				v.full, v.fullReason = true, "too many blocks written by an unfinished backup"
				return nil
			}
			diffs = append(diffs, &agentv1.BlockHash{Index: uint64(i), Hash: live[:]})
		}
	}
	v.overrides = diffs
	return nil
}

// receive calls Backup and writes what the agent streams.
func (b *run) receive(ctx context.Context, client agentv1.AgentServiceClient, req *agentv1.BackupRequest, vols []*volume) error {
	st, err := client.Backup(ctx, req, channel.BulkCall())
	if err != nil {
		return agentErr(ctx, "the backup", err)
	}
	var d channel.BulkData
	defer d.Free()
	vi := 0
	var cur *volume
	raw := make([]byte, b.bs)
	stored := make([]byte, maxStored(b.bs))
	for {
		err := st.RecvMsg(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if cur != nil {
				return agentErr(ctx, fmt.Sprintf("the backup of volume %s", cur.id), err)
			}
			return agentErr(ctx, "the backup", err)
		}
		msg := new(agentv1.BackupData)
		if err := proto.Unmarshal(d.Rest, msg); err != nil {
			return fmt.Errorf("malformed message from the agent: %w", err)
		}
		if p := msg.GetProgress(); p != nil {
			b.job.Progress.BytesDone, b.job.Progress.BytesTotal, b.job.Progress.BytesSent = int64(p.GetBytesRead()), int64(p.GetBytesTotal()), int64(p.GetBytesSent())
		}
		if bg := msg.GetBegin(); bg != nil {
			if cur != nil {
				return fmt.Errorf("malformed stream: volume %s begins before volume %s ended", bg.GetVolumeId(), cur.id)
			}
			if vi >= len(vols) {
				return fmt.Errorf("malformed stream: the agent sent volume %s, which was not asked for", bg.GetVolumeId())
			}
			cur = vols[vi]
			if err := b.begin(cur, bg); err != nil {
				return err
			}
		}
		if len(msg.GetBlocks()) > 0 || d.Len() > 0 {
			if cur == nil {
				return errors.New("malformed stream: blocks outside a volume")
			}
			if err := b.blocks(ctx, cur, msg.GetBlocks(), &d, raw, stored); err != nil {
				return err
			}
		}
		d.Free()
		if e := msg.GetEnd(); e != nil {
			if cur == nil {
				return fmt.Errorf("malformed stream: end of volume %s that did not begin", e.GetVolumeId())
			}
			if err := b.end(cur, e); err != nil {
				return err
			}
			cur, vi = nil, vi+1
		}
		b.progress(ctx)
	}
	if cur != nil {
		return fmt.Errorf("the agent's stream ended before volume %s was complete (block %d of %d)", cur.id, cur.next, cur.blocks)
	}
	if vi < len(vols) {
		return fmt.Errorf("the agent's stream ended before volume %s", vols[vi].id)
	}
	return nil
}

// begin checks a volume's begin message.
func (b *run) begin(v *volume, bg *agentv1.VolumeBegin) error {
	if bg.GetVolumeId() != v.id {
		return fmt.Errorf("malformed stream: volume %s sent where %s was expected", bg.GetVolumeId(), v.id)
	}
	if int64(bg.GetSizeBytes()) != v.size {
		return fmt.Errorf("volume %s changed size from %d to %d bytes during the backup", v.id, v.size, bg.GetSizeBytes())
	}
	if int(bg.GetBlockSize()) != b.bs {
		return fmt.Errorf("malformed stream: volume %s read with blocks of %d bytes, %d asked for", v.id, bg.GetBlockSize(), b.bs)
	}
	if bg.GetIncremental() && (v.full || v.prev == nil) {
		return fmt.Errorf("malformed stream: incremental read of volume %s, but a full read was asked for", v.id)
	}
	v.begun, v.incremental = true, bg.GetIncremental()
	reason := bg.GetReason()
	if reason == "" {
		reason = v.fullReason
	}
	b.log.Info("backup: volume begins", "volume", v.id, "image", v.image, "incremental", v.incremental,
		"reason", reason, "provider", bg.GetProvider(), "dirty", len(v.overrides))
	return nil
}

// bulkReader reads a BulkData's payload in order.
type bulkReader struct {
	d   *channel.BulkData
	i   int // buffer
	off int // in buffer i
}

func (r *bulkReader) read(p []byte) error {
	for len(p) > 0 {
		if r.i >= len(r.d.Data) {
			return io.ErrUnexpectedEOF
		}
		b := r.d.Data[r.i].ReadOnlyData()[r.off:]
		n := copy(p, b)
		p = p[n:]
		r.off += n
		if r.off == len(r.d.Data[r.i].ReadOnlyData()) {
			r.i, r.off = r.i+1, 0
		}
	}
	return nil
}

// blocks checks and writes one message's blocks.
func (b *run) blocks(ctx context.Context, v *volume, blocks []*agentv1.Block, d *channel.BulkData, raw, stored []byte) error {
	if !v.begun {
		return fmt.Errorf("malformed stream: blocks of volume %s before its begin", v.id)
	}
	var total int64
	for _, blk := range blocks {
		total += int64(blk.GetStoredLength())
	}
	if total != int64(d.Len()) {
		return fmt.Errorf("malformed stream: volume %s: blocks of %d stored bytes with %d bytes of data", v.id, total, d.Len())
	}
	rd := bulkReader{d: d}
	for _, blk := range blocks {
		i := int64(blk.GetIndex())
		if blk.GetIndex() >= uint64(v.blocks) {
			return fmt.Errorf("malformed stream: volume %s: block %d out of range (%d blocks)", v.id, blk.GetIndex(), v.blocks)
		}
		if i < v.next {
			return fmt.Errorf("malformed stream: volume %s: block %d out of order (after %d)", v.id, i, v.next-1)
		}
		if i > v.next && !v.incremental {
			return fmt.Errorf("malformed stream: volume %s: full read skipped block %d", v.id, v.next)
		}
		if err := b.fill(v, i); err != nil {
			return err
		}
		n := agentv1.BlockLength(v.size, b.bs, i)
		if int(blk.GetLength()) != n {
			return fmt.Errorf("malformed stream: volume %s: block %d of %d bytes, want %d", v.id, i, blk.GetLength(), n)
		}
		sl := int(blk.GetStoredLength())
		if sl > len(stored) {
			return fmt.Errorf("malformed stream: volume %s: block %d stored in %d bytes", v.id, i, sl)
		}
		if err := rd.read(stored[:sl]); err != nil {
			return fmt.Errorf("malformed stream: volume %s: block %d: %w", v.id, i, err)
		}
		data := raw[:n]
		zero := false
		var frame []byte // the block as the agent compressed it
		switch blk.GetEncoding() {
		case agentv1.Block_ENCODING_RAW:
			if sl != n {
				return fmt.Errorf("malformed stream: volume %s: raw block %d stored in %d bytes, want %d", v.id, i, sl, n)
			}
			data = stored[:n]
		case agentv1.Block_ENCODING_ZSTD:
			out, err := b.zstd.DecodeAll(stored[:sl], raw[:0])
			if err != nil || len(out) != n {
				return fmt.Errorf("volume %s: block %d does not decompress to %d bytes: %v", v.id, i, n, err)
			}
			data, frame = out, stored[:sl]
		case agentv1.Block_ENCODING_ZERO:
			if sl != 0 {
				return fmt.Errorf("malformed stream: volume %s: zero block %d with %d bytes of data", v.id, i, sl)
			}
			zero = true
		default:
			return fmt.Errorf("malformed stream: volume %s: block %d: unknown encoding %d", v.id, i, blk.GetEncoding())
		}
		// A zero block's hash is known: hashing zeros would cost as much
		// as hashing data (half the CPU of a sparse volume's full read).
		var h [agentv1.HashSize]byte
		if zero {
			h = agentv1.ZeroHash(n)
		} else {
			h = agentv1.HashBlock(data)
		}
		if !bytes.Equal(h[:], blk.GetHash()) {
			return fmt.Errorf("hash mismatch at block %d of volume %s: the data does not match the hash the agent sent", i, v.id)
		}
		cur, known, err := v.base.hash(i)
		if err != nil {
			return err
		}
		if !known || cur != h {
			if zero {
				clear(data)
			}
			if err := b.write(ctx, v, i, data, h, !zero, frame); err != nil {
				return err
			}
		}
		if err := v.addHash(i, h); err != nil {
			return err
		}
		v.next = i + 1
		v.sent++
	}
	return nil
}

// maxStored is the most bytes a block of bs bytes may take in a message:
// zstd may make incompressible data a little larger (its compress bound).
func maxStored(bs int) int { return bs + bs>>7 + 1024 }

// fill adds the baseline's hashes of the blocks before index that the
// agent did not send: the image holds them already.
func (b *run) fill(v *volume, index int64) error {
	for ; v.next < index; v.next++ {
		h, known, err := v.base.hash(v.next)
		if err != nil {
			return err
		}
		if !known {
			return fmt.Errorf("malformed stream: volume %s: block %d was not sent, and the appliance does not know what its image holds there", v.id, v.next)
		}
		if err := v.addHash(v.next, h); err != nil {
			return err
		}
	}
	return nil
}

// addHash adds the hash of block i to the manifest and to the hashes
// image, where that does not hold it yet.
func (v *volume) addHash(i int64, h [agentv1.HashSize]byte) error {
	v.man.Add(h[:])
	if !v.hashesAll && h == v.base.prevHash {
		return v.flushHashes(true)
	}
	if len(v.hashBuf) == 0 {
		v.hashOff = i * agentv1.HashSize
	}
	v.hashBuf = append(v.hashBuf, h[:]...)
	return v.flushHashes(false)
}

// flushHashes writes the buffered hashes (a run from hashOff) when force
// or when enough are buffered.
func (v *volume) flushHashes(force bool) error {
	if len(v.hashBuf) == 0 || !force && len(v.hashBuf) < 1<<16 {
		return nil
	}
	if _, err := v.hashImg.WriteAt(v.hashBuf, v.hashOff); err != nil {
		return storageErr("write image "+v.hashes, err)
	}
	v.hashOff += int64(len(v.hashBuf))
	v.hashBuf = v.hashBuf[:0]
	return nil
}

// write writes one block, first extending the image's dirty record if
// the block is beyond it. sum is data's hash, checked; when encoded, the
// agent sent the block as frame (zstd that decoded to data, checked) or,
// when frame is nil, raw because it did not compress.
func (b *run) write(ctx context.Context, v *volume, i int64, data []byte, sum [agentv1.HashSize]byte, encoded bool, frame []byte) error {
	if i >= v.mark {
		mark := min(v.blocks, (i/markStep+1)*markStep)
		err := b.r.cat.Update(ctx, func(tx *catalog.Tx) error {
			return tx.PutDirtyImage(catalog.DirtyImage{AgentID: b.job.AgentID, Image: v.image, VolumeID: v.id,
				BlockSize: b.bs, Blocks: mark, JobID: b.job.ID})
		})
		if err != nil {
			return fmt.Errorf("record the blocks being written: %w", err)
		}
		v.mark = mark
	}
	// The block's hash was checked against its data, and its frame
	// decoded to that data: the embedded pool need not hash or compress
	// it again.
	var err error
	if ew, ok := v.img.(zfs.EncodedWriter); ok && encoded {
		_, err = ew.WriteAtEncoded(data, i*int64(b.bs), sum, frame)
	} else if hw, ok := v.img.(zfs.HashedWriter); ok {
		_, err = hw.WriteAtHashed(data, i*int64(b.bs), sum)
	} else {
		_, err = v.img.WriteAt(data, i*int64(b.bs))
	}
	if err != nil {
		return storageErr(fmt.Sprintf("write block %d of volume %s", i, v.id), err)
	}
	v.changed++
	b.written += int64(len(data))
	b.job.Progress.BytesWritten = b.written
	return nil
}

// end checks a volume's end: its manifest must be the one the appliance
// computed; then the image and its hashes are made durable.
func (b *run) end(v *volume, e *agentv1.VolumeEnd) error {
	if e.GetVolumeId() != v.id {
		return fmt.Errorf("malformed stream: end of volume %s where %s was expected", e.GetVolumeId(), v.id)
	}
	if !v.incremental && v.next != v.blocks {
		return fmt.Errorf("malformed stream: full read of volume %s ended at block %d of %d", v.id, v.next, v.blocks)
	}
	if err := b.fill(v, v.blocks); err != nil {
		return err
	}
	v.manifest = v.man.Sum()
	if !bytes.Equal(v.manifest, e.GetManifest()) {
		return fmt.Errorf("volume %s: the agent's manifest %x is not the manifest of the blocks the appliance holds (%x)", v.id, e.GetManifest(), v.manifest)
	}
	if err := v.flushHashes(true); err != nil {
		return err
	}
	if err := v.img.Sync(); err != nil {
		return storageErr("sync image "+v.image, err)
	}
	if err := v.hashImg.Sync(); err != nil {
		return storageErr("sync image "+v.hashes, err)
	}
	b.log.Info("backup: volume done", "volume", v.id, "blocks", v.blocks, "sent", v.sent, "written", v.changed)
	return nil
}

// progress publishes the job's progress, and stores it at most once per
// saveEvery.
func (b *run) progress(ctx context.Context) {
	now := b.r.cfg.Now()
	p := &b.job.Progress
	if el := now.Sub(b.started).Seconds(); el > 0 && p.BytesDone > 0 {
		p.Rate = int64(float64(p.BytesDone) / el)
		if p.Rate > 0 && p.BytesTotal > p.BytesDone {
			p.ETASeconds = (p.BytesTotal - p.BytesDone + p.Rate - 1) / p.Rate
		} else {
			p.ETASeconds = 0
		}
	}
	b.r.setLive(*b.job)
	if now.Sub(b.lastSave) < saveEvery {
		return
	}
	b.lastSave = now
	if err := b.r.cat.Update(ctx, func(tx *catalog.Tx) error { return tx.PutJob(b.job) }); err != nil {
		b.log.Warn("backup: store progress", "err", err)
	}
}

// commit takes the recovery point's snapshot and records it.
func (b *run) commit(ctx context.Context, client agentv1.AgentServiceClient, vols []*volume) error {
	for _, v := range vols {
		v.close()
	}
	now := b.r.cfg.Now().UTC()
	name := snapshotName(now, b.job.ID)
	info, err := b.r.pool.Snapshot(ctx, b.ds, name)
	if err != nil {
		return storageErr("take snapshot "+name, err)
	}
	destroy := func(why error) error {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
		defer cancel()
		if derr := b.r.pool.DestroySnapshot(dctx, info.Name); derr != nil {
			b.log.Error("backup: destroy the snapshot of a failed job (Recover will)", "snapshot", info.Name.String(), "err", derr)
		}
		return why
	}
	if h := b.r.hookBeforeCommit; h != nil {
		if err := h(b.job.ID); err != nil {
			return destroy(err)
		}
	}
	rp := catalog.RecoveryPoint{AgentID: b.job.AgentID, Snapshot: name, CreatedAt: now, JobID: b.job.ID,
		BlockSize: b.bs, Changed: b.written}
	var detail []string
	for _, v := range vols {
		rp.Volumes = append(rp.Volumes, v.id)
		rp.Bytes += v.size
		rp.Images = append(rp.Images, catalog.PointImage{VolumeID: v.id, Image: v.image, Hashes: v.hashes,
			Size: v.size, Blocks: v.blocks, Manifest: hex.EncodeToString(v.manifest), Incremental: v.incremental})
		kind := "full"
		if v.incremental {
			kind = "incremental"
		}
		detail = append(detail, fmt.Sprintf("%s: %s, %d of %d blocks sent, %d written", v.id, kind, v.sent, v.blocks, v.changed))
	}
	job := *b.job
	job.State, job.Finished, job.Snapshot, job.Detail = catalog.JobSucceeded, now, name, strings.Join(detail, "; ")
	job.Progress.Rate, job.Progress.ETASeconds = 0, 0
	if job.Progress.BytesTotal > 0 {
		job.Progress.BytesDone = job.Progress.BytesTotal
	}
	err = b.r.cat.Update(ctx, func(tx *catalog.Tx) error {
		if err := tx.AddRecoveryPoint(rp); err != nil {
			return err
		}
		for _, v := range vols {
			if err := tx.DeleteDirtyImage(b.job.AgentID, v.image); err != nil {
				return err
			}
		}
		return tx.PutJob(&job)
	})
	if err != nil {
		return destroy(fmt.Errorf("record recovery point %s: %w", name, err))
	}
	*b.job = job // published by Runner.done, once the agent has been told

	req := &agentv1.ConfirmBackupRequest{JobId: strconv.FormatUint(b.job.ID, 10)}
	for _, v := range vols {
		req.Volumes = append(req.Volumes, &agentv1.VolumeManifest{VolumeId: v.id, Manifest: v.manifest})
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if resp, err := client.ConfirmBackup(cctx, req); err != nil {
		b.log.Warn("backup: the agent did not confirm the recovery point; it reads in full or adopts it next time",
			"snapshot", name, "err", agentErr(cctx, "confirm", err))
	} else {
		b.log.Info("backup: agent adopted the recovery point", "snapshot", name, "volumes", resp.GetAdopted())
	}
	return nil
}
