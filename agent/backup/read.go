package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// Tuning sets the reader's parallelism and memory. Memory is bounded by
// InFlight read units (each a raw buffer and a compressed one), whatever
// the volume's size: the baseline hashes are streamed from their file and
// the new hashes written to one as the blocks go by.
type Tuning struct {
	// ReadUnit is the bytes read by one ReadAt: a whole number of blocks,
	// at least one. 0 means 1 MiB.
	ReadUnit int
	// InFlight is the number of read units being read, hashed, compressed
	// or waiting to be sent. 0 means 8 MiB worth, at least 3.
	InFlight int
	// Workers read, hash and compress read units. 0 means GOMAXPROCS+2,
	// at most InFlight.
	Workers int
}

const (
	defaultReadUnit = 1 << 20
	inFlightBytes   = 8 << 20
	// maxMessage bounds a BackupData message's data and block list: a
	// message of 1 MiB − 1 KiB fits gRPC's largest pooled buffer (see
	// docs/protocol.md). A block larger than that goes alone.
	maxMessage = 1<<20 - 1<<10
	// blockOverhead is a generous size of one encoded Block in a message.
	blockOverhead = 64
	// compressedPercent: a block is sent compressed only if that saves at
	// least 3%, else raw.
	compressedPercent = 97
)

func (t Tuning) withDefaults(blockSize int) Tuning {
	if t.ReadUnit <= 0 {
		t.ReadUnit = defaultReadUnit
	}
	t.ReadUnit = max(blockSize, t.ReadUnit/blockSize*blockSize)
	if t.InFlight <= 0 {
		t.InFlight = max(3, inFlightBytes/t.ReadUnit)
	}
	if t.Workers <= 0 {
		t.Workers = runtime.GOMAXPROCS(0) + 2
	}
	t.Workers = min(t.Workers, t.InFlight)
	return t
}

// unit is one read unit on its way through the pipeline.
type unit struct {
	seq    int64 // the unit's number: its first block is seq·perUnit
	first  int64
	n      int    // blocks
	raw    []byte // as read
	out    []byte // compressed blocks, back to back
	base   []byte // n baseline hashes (incremental only)
	hashes []byte // n hashes as read
	zero   int    // zero blocks
	sent   []sentBlock
	err    error
}

type sentBlock struct {
	i      int // block in the unit
	enc    agentv1.Block_Encoding
	inOut  bool // data in out rather than raw
	off, n int
}

type pipeline struct {
	r       Request
	t       Tuning
	bs      int
	blocks  int64
	perUnit int
	base    *baseline
	pend    *pending
}

func newPipeline(r Request, base *baseline, pend *pending) *pipeline {
	t := r.Tuning.withDefaults(r.BlockSize)
	return &pipeline{r: r, t: t, bs: r.BlockSize, blocks: agentv1.Blocks(r.Size, r.BlockSize),
		perUnit: t.ReadUnit / r.BlockSize, base: base, pend: pend}
}

var encoderOptions = []zstd.EOption{
	zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
	zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false),
}

// run reads the volume: a dispatcher hands out read units (with their
// baseline hashes, streamed from the baseline file in order), workers read,
// hash and compress them, and run itself takes their results in order,
// stores the hashes and sends the blocks.
func (p *pipeline) run(ctx context.Context) (*agentv1.VolumeEnd, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	units := (p.blocks + int64(p.perUnit) - 1) / int64(p.perUnit)
	free := make(chan *unit, p.t.InFlight)
	encs := make([]*zstd.Encoder, p.t.Workers) // one per worker, reused
	for i := range encs {
		var err error
		if encs[i], err = zstd.NewWriter(nil, encoderOptions...); err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer encs[i].Close()
	}
	maxOut := p.perUnit * encs[0].MaxEncodedSize(p.bs)
	for range p.t.InFlight {
		u := &unit{raw: make([]byte, p.t.ReadUnit), out: make([]byte, 0, maxOut),
			hashes: make([]byte, p.perUnit*agentv1.HashSize)}
		if p.base != nil {
			u.base = make([]byte, p.perUnit*agentv1.HashSize)
		}
		free <- u
	}
	work := make(chan *unit, p.t.InFlight)
	done := make(chan *unit, p.t.InFlight)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(work)
		p.dispatch(ctx, units, free, work, done)
	}()
	var workers sync.WaitGroup
	for _, enc := range encs {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for u := range work {
				if ctx.Err() == nil {
					p.process(u, enc)
				} else {
					u.err = ctx.Err()
				}
				done <- u
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		workers.Wait()
	}()
	end, err := p.collect(ctx, units, free, done)
	cancel()
	wg.Wait()
	return end, err
}

// dispatch hands out the units in order, each with its baseline hashes
// (dirty blocks overridden).
func (p *pipeline) dispatch(ctx context.Context, units int64, free <-chan *unit, work, done chan<- *unit) {
	dirty := p.r.Volume.GetDirty()
	for seq := range units {
		var u *unit
		select {
		case u = <-free:
		case <-ctx.Done():
			return
		}
		u.seq, u.first, u.err = seq, seq*int64(p.perUnit), nil
		u.n = int(min(int64(p.perUnit), p.blocks-u.first))
		if p.base != nil {
			b := u.base[:u.n*agentv1.HashSize]
			if _, err := io.ReadFull(p.base.r, b); err != nil {
				u.err = fmt.Errorf("read baseline hashes: %w", err)
				done <- u // done has room for every unit
				return
			}
			for len(dirty) > 0 && int64(dirty[0].GetIndex()) < u.first+int64(u.n) {
				i := int64(dirty[0].GetIndex()) - u.first
				copy(b[i*agentv1.HashSize:], dirty[0].GetHash())
				dirty = dirty[1:]
			}
		}
		select {
		case work <- u:
		case <-ctx.Done():
			return
		}
	}
}

// process reads, hashes and (for blocks to send) compresses one unit.
func (p *pipeline) process(u *unit, enc *zstd.Encoder) {
	off := u.first * int64(p.bs)
	length := int(min(int64(u.n*p.bs), p.r.Size-off))
	raw := u.raw[:length]
	if n, err := p.r.Source.ReadAt(raw, off); n < length {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		u.err = fmt.Errorf("read at offset %d: %w", off, err)
		return
	}
	u.out, u.sent, u.zero = u.out[:0], u.sent[:0], 0
	for i := range u.n {
		b := raw[i*p.bs : min((i+1)*p.bs, length)]
		h := u.hashes[i*agentv1.HashSize : (i+1)*agentv1.HashSize]
		zero := agentv1.IsZero(b)
		if zero {
			u.zero++
			zh := agentv1.ZeroHash(len(b))
			copy(h, zh[:])
		} else {
			sum := sha256.Sum256(b)
			copy(h, sum[:])
		}
		if u.base != nil && bytes.Equal(h, u.base[i*agentv1.HashSize:(i+1)*agentv1.HashSize]) {
			continue
		}
		sb := sentBlock{i: i}
		switch {
		case zero:
			sb.enc = agentv1.Block_ENCODING_ZERO
		default:
			start := len(u.out)
			u.out = enc.EncodeAll(b, u.out)
			if n := len(u.out) - start; n*100 < len(b)*compressedPercent {
				sb.enc, sb.inOut, sb.off, sb.n = agentv1.Block_ENCODING_ZSTD, true, start, n
			} else {
				u.out = u.out[:start]
				sb.enc, sb.off, sb.n = agentv1.Block_ENCODING_RAW, i*p.bs, len(b)
			}
		}
		u.sent = append(u.sent, sb)
	}
}

// collect takes the units in order, writes their hashes to the pending
// state and sends their blocks in messages of at most maxMessage.
func (p *pipeline) collect(ctx context.Context, units int64, free chan<- *unit, done <-chan *unit) (*agentv1.VolumeEnd, error) {
	var (
		man     agentv1.Manifest
		end     = &agentv1.VolumeEnd{VolumeId: p.r.Volume.GetVolumeId(), Blocks: uint64(p.blocks)}
		slots   = make([]*unit, p.t.InFlight)
		msg     = &agentv1.BackupData{}
		data    = make([]byte, 0, maxMessage)
		msgSize int
	)
	flush := func() error {
		msg.Data = data
		if err := p.r.Send(msg); err != nil {
			return fmt.Errorf("send blocks: %w", err)
		}
		msg.Blocks, msg.Progress, data, msgSize = nil, nil, data[:0], 0
		return nil
	}
	for next := int64(0); next < units; {
		var u *unit
		select {
		case u = <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		slots[u.seq%int64(len(slots))] = u
		for next < units {
			u := slots[next%int64(len(slots))]
			if u == nil || u.seq != next {
				break
			}
			slots[next%int64(len(slots))] = nil
			if u.err != nil {
				return nil, u.err
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			hashes := u.hashes[:u.n*agentv1.HashSize]
			if _, err := p.pend.w.Write(hashes); err != nil {
				return nil, fmt.Errorf("write pending state: %w", err)
			}
			for i := range u.n {
				man.Add(hashes[i*agentv1.HashSize : (i+1)*agentv1.HashSize])
			}
			length := min(int64(u.n*p.bs), p.r.Size-u.first*int64(p.bs))
			end.BytesRead += uint64(length)
			end.ZeroBlocks += uint64(u.zero)
			for _, sb := range u.sent {
				if len(msg.Blocks) > 0 && msgSize+sb.n+blockOverhead > maxMessage {
					if err := flush(); err != nil {
						return nil, err
					}
				}
				idx := u.first + int64(sb.i)
				msg.Blocks = append(msg.Blocks, &agentv1.Block{
					Index:        uint64(idx),
					Hash:         bytes.Clone(hashes[sb.i*agentv1.HashSize : (sb.i+1)*agentv1.HashSize]),
					Encoding:     sb.enc,
					StoredLength: uint32(sb.n),
					Length:       uint32(agentv1.BlockLength(p.r.Size, p.bs, idx)),
				})
				if sb.inOut {
					data = append(data, u.out[sb.off:sb.off+sb.n]...)
				} else {
					data = append(data, u.raw[sb.off:sb.off+sb.n]...)
				}
				msgSize += sb.n + blockOverhead
				end.BlocksSent++
				end.BytesSent += uint64(sb.n)
			}
			if pr := p.r.Progress; pr != nil {
				pr.Read += uint64(length)
				pr.Sent += sumStored(u.sent)
			}
			free <- u
			next++
			if pg := p.r.Progress.due(time.Now()); pg != nil {
				msg.Progress = pg
				if err := flush(); err != nil {
					return nil, err
				}
			}
		}
	}
	if len(msg.Blocks) > 0 {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	end.Manifest = man.Sum()
	return end, nil
}

func sumStored(sent []sentBlock) uint64 {
	var n uint64
	for _, sb := range sent {
		n += uint64(sb.n)
	}
	return n
}
