// Package backuptest is an in-process agent for tests of the appliance's
// backups: it serves the agent API's Backup, ConfirmBackup, ListVolumes and
// ListWriters (so that a real pairing can pair it) per the protocol over a
// real channel (TLS 1.3, yamux, gRPC on 127.0.0.1) to an appliance's
// gateway, from volumes held in memory, and can break the protocol on
// purpose (Fault) in ways a real agent never would.
package backuptest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/token"
)

// Fault makes the agent break the protocol in one Backup call.
type Fault struct {
	// BadHashAt sends a wrong hash for the block of that index (+1:
	// 0 means none).
	BadHashAt int64
	// BadFrameAt sends the block of that index (+1) zstd-compressed
	// with one byte changed, under the hash of the block as it is.
	BadFrameAt int64
	// CorruptFrameAt sends bytes that are no zstd frame as the block of
	// that index (+1), said to be zstd-compressed.
	CorruptFrameAt int64
	// WrongManifest sends a wrong manifest at each volume's end.
	WrongManifest bool
	// OutOfOrder swaps the first two blocks of a message with several.
	OutOfOrder bool
	// CutAfter ends the stream with an error after that many block
	// messages (0: never); EOFAfter ends it without one, mid-volume.
	CutAfter int
	EOFAfter int
	// Refuse fails the call with this status message at once.
	Refuse string
	// Hold, if set, is waited on (or the call's end) before the first
	// block message.
	Hold chan struct{}
}

type baseline struct {
	bs       int
	hashes   [][agentv1.HashSize]byte
	manifest []byte
}

// Agent is the in-process agent.
type Agent struct {
	agentv1.UnimplementedAgentServiceServer
	ID *identity.Identity

	mu       sync.Mutex
	order    []string
	vols     map[string][]byte
	base     map[string]*baseline
	pending  map[string]map[string]*baseline // job ID → volume → read
	fault    *Fault
	requests []*agentv1.BackupRequest
	running  int
	maxRun   int
	// holdInspect, if set, is waited on (or the call's end) by
	// ListWriters: a pairing stays in its Inspect step until it closes.
	holdInspect chan struct{}
	// Started is sent the job ID of each Backup call as it starts, if
	// not full (capacity 64).
	Started chan string
}

// New makes an agent with no volumes.
func New(t testing.TB) *Agent {
	t.Helper()
	id, err := identity.New("test-agent")
	if err != nil {
		t.Fatal(err)
	}
	return &Agent{ID: id, vols: make(map[string][]byte), base: make(map[string]*baseline),
		pending: make(map[string]map[string]*baseline), Started: make(chan string, 64)}
}

// SetVolume sets (replaces) a volume's content.
func (a *Agent) SetVolume(id string, data []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.vols[id]; !ok {
		a.order = append(a.order, id)
	}
	a.vols[id] = bytes.Clone(data)
}

// Volume returns a copy of a volume's content.
func (a *Agent) Volume(id string) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return bytes.Clone(a.vols[id])
}

// SetFault makes the next Backup calls break as f says (nil: behave).
func (a *Agent) SetFault(f *Fault) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fault = f
}

// Requests returns the Backup requests received so far.
func (a *Agent) Requests() []*agentv1.BackupRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*agentv1.BackupRequest(nil), a.requests...)
}

// MaxRunning is the largest number of Backup calls that ran at once.
func (a *Agent) MaxRunning() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.maxRun
}

// ForgetBaseline drops the agent's baselines (as a reinstalled agent).
func (a *Agent) ForgetBaseline() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.base = make(map[string]*baseline)
}

// Hello answers the gateway.
func (a *Agent) Hello(context.Context, *agentv1.HelloRequest) (*agentv1.HelloResponse, error) {
	return &agentv1.HelloResponse{Fingerprint: a.ID.Fingerprint().String(), Hostname: "test-agent", Os: runtime.GOOS,
		ProtocolVersion: agentv1.ProtocolVersion, AgentVersion: "test", SnapshotProvider: "image"}, nil
}

// Pair accepts the appliance.
func (a *Agent) Pair(context.Context, *agentv1.PairRequest) (*agentv1.PairResponse, error) {
	return &agentv1.PairResponse{}, nil
}

// Ping answers the gateway's pings.
func (a *Agent) Ping(_ context.Context, req *agentv1.PingRequest) (*agentv1.PingResponse, error) {
	return &agentv1.PingResponse{SentUnixNano: req.GetSentUnixNano(), AgentUnixNano: time.Now().UnixNano()}, nil
}

// ListVolumes lists the volumes in the order they were first set.
func (a *Agent) ListVolumes(context.Context, *agentv1.ListVolumesRequest) (*agentv1.ListVolumesResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	resp := &agentv1.ListVolumesResponse{}
	for _, id := range a.order {
		resp.Volumes = append(resp.Volumes, &agentv1.Volume{Id: id, Path: "/dev/" + id, SizeBytes: uint64(len(a.vols[id])), Filesystem: "ext4"})
	}
	return resp, nil
}

// HoldInspect makes ListWriters wait until hold is closed (nil: answer at
// once), so that a test sees a pairing while it runs.
func (a *Agent) HoldInspect(hold chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.holdInspect = hold
}

// ListWriters reports no VSS writers (the image provider has none), so
// that the agent passes a real pairing's Inspect step.
func (a *Agent) ListWriters(ctx context.Context, _ *agentv1.ListWritersRequest) (*agentv1.ListWritersResponse, error) {
	a.mu.Lock()
	hold := a.holdInspect
	a.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &agentv1.ListWritersResponse{SnapshotProvider: "image"}, nil
}

// Backup streams the requested volumes per the protocol (or as the fault
// says).
func (a *Agent) Backup(req *agentv1.BackupRequest, st grpc.ServerStreamingServer[agentv1.BackupData]) error {
	a.mu.Lock()
	a.requests = append(a.requests, req)
	f := a.fault
	a.running++
	a.maxRun = max(a.maxRun, a.running)
	type src struct {
		data []byte
		base *baseline
	}
	srcs := make([]src, len(req.GetVolumes()))
	for i, v := range req.GetVolumes() {
		data, ok := a.vols[v.GetVolumeId()]
		if !ok {
			a.running--
			a.mu.Unlock()
			return status.Errorf(codes.NotFound, "volume %s not found", v.GetVolumeId())
		}
		srcs[i] = src{bytes.Clone(data), a.base[v.GetVolumeId()]}
	}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.running--
		a.mu.Unlock()
	}()
	select {
	case a.Started <- req.GetJobId():
	default:
	}
	if f == nil {
		f = &Fault{}
	}
	if f.Refuse != "" {
		return status.Error(codes.FailedPrecondition, f.Refuse)
	}
	bs, err := agentv1.BlockSize(req.GetBlockSize())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	defer enc.Close()
	var total, read, sent uint64
	for _, s := range srcs {
		total += uint64(len(s.data))
	}
	msgs := 0
	read1 := make(map[string]*baseline)
	for vi, v := range req.GetVolumes() {
		data, base := srcs[vi].data, srcs[vi].base
		size := int64(len(data))
		n := agentv1.Blocks(size, bs)
		incremental := !v.GetFull() && base != nil && base.bs == bs && len(v.GetBaseManifest()) > 0 &&
			bytes.Equal(base.manifest, v.GetBaseManifest()) && int64(len(base.hashes)) == n
		reason := ""
		var cmp [][agentv1.HashSize]byte
		if incremental {
			cmp = append(cmp, base.hashes...)
			for _, d := range v.GetDirty() {
				if d.GetIndex() < uint64(n) {
					copy(cmp[d.GetIndex()][:], d.GetHash())
				}
			}
		} else if v.GetFull() {
			reason = "full read asked for"
		} else {
			reason = "no baseline"
		}
		prog := func() *agentv1.BackupProgress {
			return &agentv1.BackupProgress{BytesRead: read, BytesTotal: total, BytesSent: sent}
		}
		if err := st.Send(&agentv1.BackupData{Begin: &agentv1.VolumeBegin{VolumeId: v.GetVolumeId(), SizeBytes: uint64(size),
			BlockSize: uint32(bs), Incremental: incremental, Reason: reason, Provider: "image"}, Progress: prog()}); err != nil {
			return err
		}
		var man agentv1.Manifest
		hashes := make([][agentv1.HashSize]byte, n)
		msg := &agentv1.BackupData{}
		flush := func() error {
			if len(msg.Blocks) == 0 {
				return nil
			}
			if f.Hold != nil && msgs == 0 {
				select {
				case <-f.Hold:
				case <-st.Context().Done():
					return st.Context().Err()
				}
			}
			if f.OutOfOrder && len(msg.Blocks) > 1 {
				// Swap the blocks and their data.
				b0, b1 := msg.Blocks[0], msg.Blocks[1]
				d0, d1 := msg.Data[:b0.StoredLength], msg.Data[b0.StoredLength:b0.StoredLength+b1.StoredLength]
				rest := msg.Data[b0.StoredLength+b1.StoredLength:]
				msg.Data = append(append(append([]byte(nil), d1...), d0...), rest...)
				msg.Blocks[0], msg.Blocks[1] = b1, b0
			}
			if f.EOFAfter > 0 && msgs == f.EOFAfter {
				return errEOF
			}
			if f.CutAfter > 0 && msgs == f.CutAfter {
				return status.Error(codes.Internal, "the agent's snapshot went away")
			}
			msg.Progress = prog()
			if err := st.Send(msg); err != nil {
				return err
			}
			msgs++
			msg = &agentv1.BackupData{}
			return nil
		}
		for i := range n {
			off := i * int64(bs)
			blk := data[off : off+int64(agentv1.BlockLength(size, bs, i))]
			h := agentv1.HashBlock(blk)
			hashes[i] = h
			man.Add(h[:])
			read += uint64(len(blk))
			if incremental && cmp[i] == h {
				continue
			}
			b := &agentv1.Block{Index: uint64(i), Hash: bytes.Clone(h[:]), Length: uint32(len(blk))}
			switch {
			case f.BadFrameAt == i+1:
				bad := bytes.Clone(blk)
				bad[0] ^= 0xff
				b.Encoding = agentv1.Block_ENCODING_ZSTD
				c := enc.EncodeAll(bad, nil)
				b.StoredLength = uint32(len(c))
				msg.Data = append(msg.Data, c...)
			case f.CorruptFrameAt == i+1:
				b.Encoding = agentv1.Block_ENCODING_ZSTD
				c := bytes.Repeat([]byte("not zstd"), 100)
				b.StoredLength = uint32(len(c))
				msg.Data = append(msg.Data, c...)
			case agentv1.IsZero(blk):
				b.Encoding = agentv1.Block_ENCODING_ZERO
			case i%2 == 0:
				b.Encoding = agentv1.Block_ENCODING_ZSTD
				c := enc.EncodeAll(blk, nil)
				b.StoredLength = uint32(len(c))
				msg.Data = append(msg.Data, c...)
			default:
				b.Encoding = agentv1.Block_ENCODING_RAW
				b.StoredLength = uint32(len(blk))
				msg.Data = append(msg.Data, blk...)
			}
			if f.BadHashAt == i+1 {
				b.Hash[0] ^= 0xff
			}
			sent += uint64(b.StoredLength)
			msg.Blocks = append(msg.Blocks, b)
			if len(msg.Blocks) == 8 {
				if err := flush(); err == errEOF {
					return nil
				} else if err != nil {
					return err
				}
			}
		}
		if err := flush(); err == errEOF {
			return nil
		} else if err != nil {
			return err
		}
		m := man.Sum()
		read1[v.GetVolumeId()] = &baseline{bs: bs, hashes: hashes, manifest: bytes.Clone(m)}
		if f.WrongManifest {
			m[0] ^= 0xff
		}
		if err := st.Send(&agentv1.BackupData{End: &agentv1.VolumeEnd{VolumeId: v.GetVolumeId(), Manifest: m,
			Blocks: uint64(n)}, Progress: prog()}); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.pending[req.GetJobId()] = read1
	a.mu.Unlock()
	return nil
}

var errEOF = fmt.Errorf("end the stream here")

// ConfirmBackup adopts a backup's hashes where the manifest matches.
func (a *Agent) ConfirmBackup(_ context.Context, req *agentv1.ConfirmBackupRequest) (*agentv1.ConfirmBackupResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	read := a.pending[req.GetJobId()]
	resp := &agentv1.ConfirmBackupResponse{}
	for _, v := range req.GetVolumes() {
		if b := read[v.GetVolumeId()]; b != nil && bytes.Equal(b.manifest, v.GetManifest()) {
			a.base[v.GetVolumeId()] = b
			resp.Adopted = append(resp.Adopted, v.GetVolumeId())
		}
	}
	delete(a.pending, req.GetJobId())
	return resp, nil
}

// Connect dials the gateway at addr with an agent token and serves the
// agent API on the session until the test ends or the returned function
// is called.
func (a *Agent) Connect(t testing.TB, addr string, tok token.AgentToken) (disconnect func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hello := &agentv1.GatewayHello{ProtocolVersion: agentv1.ProtocolVersion, Hostname: "test-agent",
		Credential: &agentv1.GatewayHello_AgentToken{AgentToken: tok.Reveal()}}
	s, _, err := channel.DialGateway(ctx, addr, a.ID, identity.AnyPeer(), hello, nil)
	if err != nil {
		t.Fatalf("agent dial %s: %v", addr, err)
	}
	srv := grpc.NewServer(channel.ServerOptions()...)
	agentv1.RegisterAgentServiceServer(srv, a)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(srv)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			s.Close()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("agent session did not end")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// rng is a deterministic random source for a seed.
func rng(seed uint64) *mrand.ChaCha8 {
	var k [32]byte
	binary.LittleEndian.PutUint64(k[:], seed)
	return mrand.NewChaCha8(k)
}

// SparseImage makes a volume of size bytes in which about one block in
// four (of blockSize) holds random bytes, the rest zeros; the same seed
// makes the same volume.
func SparseImage(size int64, blockSize int, seed uint64) []byte {
	data := make([]byte, size)
	r := rng(seed)
	for off := int64(0); off < size; off += int64(blockSize) {
		if r.Uint64()%4 == 0 {
			r.Read(data[off:min(size, off+int64(blockSize))])
		}
	}
	return data
}

// Change rewrites about one block in n of data (random bytes, or zeros
// for a third of them), deterministically for a seed.
func Change(data []byte, blockSize, n int, seed uint64) {
	r := rng(seed)
	for off := 0; off < len(data); off += blockSize {
		if r.Uint64()%uint64(n) != 0 {
			continue
		}
		b := data[off:min(len(data), off+blockSize)]
		if r.Uint64()%3 == 0 {
			clear(b)
		} else {
			r.Read(b)
		}
	}
}

// JobID formats a job ID as the agent sees it.
func JobID(id uint64) string { return strconv.FormatUint(id, 10) }
