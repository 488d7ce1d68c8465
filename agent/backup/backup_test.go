package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

const bs = agentv1.DefaultBlockSize

// image is a volume image file and its content.
type image struct {
	path string
	data []byte
	rng  *rand.Rand
}

// newImage writes a size-byte image in which each block is random with
// probability half (compressible or not) and zero otherwise.
func newImage(t *testing.T, size int, seed uint64) *image {
	t.Helper()
	im := &image{path: filepath.Join(t.TempDir(), "disk.img"), data: make([]byte, size), rng: rand.New(rand.NewPCG(seed, 1))}
	for i := int64(0); i < agentv1.Blocks(int64(size), bs); i++ {
		if im.rng.IntN(2) == 0 {
			im.fill(i)
		}
	}
	im.write(t)
	return im
}

// fill makes block i random: incompressible or, for every third, text-like.
func (im *image) fill(i int64) {
	b := im.block(i)
	for j := range b {
		b[j] = byte(im.rng.Uint32())
	}
	if i%3 == 0 {
		for j := range b {
			b[j] = 'a' + b[j]%4
		}
	}
}

func (im *image) block(i int64) []byte {
	return im.data[i*bs : min(int64(len(im.data)), (i+1)*bs)]
}

func (im *image) write(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(im.path, im.data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (im *image) hash(i int64) [agentv1.HashSize]byte { return agentv1.HashBlock(im.block(i)) }

func (im *image) manifest() []byte {
	var m agentv1.Manifest
	for i := range agentv1.Blocks(int64(len(im.data)), bs) {
		h := im.hash(i)
		m.Add(h[:])
	}
	return m.Sum()
}

// stream is what the appliance received for one volume.
type stream struct {
	begin  *agentv1.VolumeBegin
	end    *agentv1.VolumeEnd
	blocks []*agentv1.Block
	data   [][]byte // raw bytes per block (nil for zero blocks)
	msgs   int
}

func (s *stream) indices() []uint64 {
	var out []uint64
	for _, b := range s.blocks {
		out = append(out, b.GetIndex())
	}
	return out
}

// receiver checks every message as the appliance would: begin first, blocks
// in ascending order with their data, each hash right, then end.
func receiver(t *testing.T) (func(*agentv1.BackupData) error, *stream) {
	t.Helper()
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	s := &stream{}
	return func(m *agentv1.BackupData) error {
		s.msgs++
		if m.GetBegin() != nil {
			if s.begin != nil {
				t.Error("second VolumeBegin")
			}
			s.begin = m.GetBegin()
		}
		if len(m.GetBlocks()) > 0 && len(m.GetData())+len(m.GetBlocks())*blockOverhead > maxMessage && len(m.GetBlocks()) > 1 {
			t.Errorf("message of %d bytes of data and %d blocks", len(m.GetData()), len(m.GetBlocks()))
		}
		data := m.GetData()
		for _, b := range m.GetBlocks() {
			if s.begin == nil || s.end != nil {
				t.Fatal("block outside begin/end")
			}
			if n := len(s.blocks); n > 0 && b.GetIndex() <= s.blocks[n-1].GetIndex() {
				t.Fatalf("block %d after %d", b.GetIndex(), s.blocks[n-1].GetIndex())
			}
			stored := data[:b.GetStoredLength()]
			data = data[b.GetStoredLength():]
			var raw []byte
			switch b.GetEncoding() {
			case agentv1.Block_ENCODING_RAW:
				raw = bytes.Clone(stored)
			case agentv1.Block_ENCODING_ZSTD:
				if raw, err = dec.DecodeAll(stored, nil); err != nil {
					t.Fatalf("block %d: %v", b.GetIndex(), err)
				}
				if len(raw)*compressedPercent/100 <= len(stored) {
					t.Errorf("block %d sent compressed %d → %d bytes", b.GetIndex(), len(raw), len(stored))
				}
			case agentv1.Block_ENCODING_ZERO:
				if len(stored) != 0 {
					t.Errorf("zero block %d with %d bytes", b.GetIndex(), len(stored))
				}
			default:
				t.Fatalf("block %d: encoding %v", b.GetIndex(), b.GetEncoding())
			}
			n := int(b.GetLength())
			check := raw
			if raw == nil {
				check = make([]byte, n)
			}
			if len(check) != n {
				t.Fatalf("block %d: %d bytes, length %d", b.GetIndex(), len(check), n)
			}
			if h := agentv1.HashBlock(check); !bytes.Equal(h[:], b.GetHash()) {
				t.Fatalf("block %d: hash mismatch", b.GetIndex())
			}
			s.blocks = append(s.blocks, b)
			s.data = append(s.data, raw)
		}
		if len(data) != 0 {
			t.Errorf("%d bytes of data left over in a message", len(data))
		}
		if m.GetEnd() != nil {
			s.end = m.GetEnd()
		}
		return nil
	}, s
}

// apply writes the received blocks into img (the appliance's image).
func (s *stream) apply(img []byte) {
	for i, b := range s.blocks {
		dst := img[b.GetIndex()*bs : b.GetIndex()*bs+uint64(b.GetLength())]
		if s.data[i] == nil {
			clear(dst)
		} else {
			copy(dst, s.data[i])
		}
	}
}

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := NewStore(filepath.Join(t.TempDir(), "backup"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// backup runs a backup of im.
func backup(t *testing.T, s *Store, im *image, job string, v *agentv1.BackupVolume) *stream {
	t.Helper()
	send, st := receiver(t)
	f, err := os.Open(im.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v.VolumeId == "" {
		v.VolumeId = im.path
	}
	end, err := s.Backup(context.Background(), Request{JobID: job, Volume: v, BlockSize: bs, Provider: "image",
		Source: f, Size: int64(len(im.data)), Send: send, Tuning: Tuning{ReadUnit: 256 << 10, Workers: 3}})
	if err != nil {
		t.Fatalf("Backup %s: %v", job, err)
	}
	if st.end != end || st.begin == nil {
		t.Fatal("begin or end not sent")
	}
	if !bytes.Equal(end.GetManifest(), im.manifest()) {
		t.Fatal("VolumeEnd's manifest is not the image's")
	}
	return st
}

func confirm(t *testing.T, s *Store, job, vol string, manifest []byte) bool {
	t.Helper()
	ok, err := s.Confirm(job, vol, manifest)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestFullReadReconstructsImage(t *testing.T) {
	im := newImage(t, 16<<20+5000, 1) // a short last block
	s := newStore(t)
	st := backup(t, s, im, "job-1", &agentv1.BackupVolume{})
	if st.begin.GetIncremental() || st.begin.GetReason() != ReasonNoRecoveryPoint || st.begin.GetProvider() != "image" ||
		st.begin.GetSizeBytes() != uint64(len(im.data)) || st.begin.GetBlockSize() != bs {
		t.Errorf("begin = %v", st.begin)
	}
	n := agentv1.Blocks(int64(len(im.data)), bs)
	if int64(len(st.blocks)) != n {
		t.Fatalf("%d blocks listed, want all %d", len(st.blocks), n)
	}
	got := make([]byte, len(im.data))
	st.apply(got)
	if !bytes.Equal(got, im.data) {
		t.Fatal("reassembled image differs")
	}
	var zero, sent uint64
	var encs [4]int
	for i, b := range st.blocks {
		if agentv1.IsZero(im.block(int64(i))) {
			zero++
			if b.GetEncoding() != agentv1.Block_ENCODING_ZERO {
				t.Errorf("zero block %d sent as %v", i, b.GetEncoding())
			}
		}
		sent += uint64(b.GetStoredLength())
		encs[b.GetEncoding()]++
	}
	if encs[agentv1.Block_ENCODING_RAW] == 0 || encs[agentv1.Block_ENCODING_ZSTD] == 0 || encs[agentv1.Block_ENCODING_ZERO] == 0 {
		t.Errorf("encodings used: %v; want raw, zstd and zero", encs)
	}
	e := st.end
	if e.GetBlocks() != uint64(n) || e.GetBlocksSent() != uint64(n) || e.GetZeroBlocks() != zero ||
		e.GetBytesRead() != uint64(len(im.data)) || e.GetBytesSent() != sent {
		t.Errorf("end = %v; want %d blocks, %d zero, %d bytes sent", e, n, zero, sent)
	}
	if _, ok, _ := s.Baseline(im.path); ok {
		t.Error("a baseline before ConfirmBackup")
	}
}

func TestIncrementalSendsChangedBlocks(t *testing.T) {
	im := newImage(t, 8<<20, 2)
	s := newStore(t)
	appliance := make([]byte, len(im.data))
	st := backup(t, s, im, "job-1", &agentv1.BackupVolume{})
	st.apply(appliance)
	m1 := st.end.GetManifest()
	if !confirm(t, s, "job-1", im.path, m1) {
		t.Fatal("confirm not adopted")
	}

	// Change blocks: random → other random, zero → random, random → zero,
	// and one rewritten with the same bytes (not a change).
	n := agentv1.Blocks(int64(len(im.data)), bs)
	want := map[uint64]agentv1.Block_Encoding{}
	var zeroed int
	for len(want) < 12 {
		i := im.rng.Int64N(n)
		if _, ok := want[uint64(i)]; ok {
			continue
		}
		if !agentv1.IsZero(im.block(i)) && zeroed < 4 {
			clear(im.block(i))
			want[uint64(i)] = agentv1.Block_ENCODING_ZERO
			zeroed++
			continue
		}
		im.fill(i)
		want[uint64(i)] = agentv1.Block_ENCODING_UNSPECIFIED
	}
	im.write(t)
	st = backup(t, s, im, "job-2", &agentv1.BackupVolume{BaseManifest: m1})
	if !st.begin.GetIncremental() || st.begin.GetReason() != "" {
		t.Fatalf("begin = %v, want incremental", st.begin)
	}
	if len(st.blocks) != len(want) {
		t.Errorf("sent blocks %v, want the %d changed", st.indices(), len(want))
	}
	for _, b := range st.blocks {
		enc, ok := want[b.GetIndex()]
		if !ok {
			t.Errorf("block %d sent but not changed", b.GetIndex())
		}
		if (enc == agentv1.Block_ENCODING_ZERO) != (b.GetEncoding() == agentv1.Block_ENCODING_ZERO) {
			t.Errorf("block %d sent as %v", b.GetIndex(), b.GetEncoding())
		}
	}
	st.apply(appliance)
	if !bytes.Equal(appliance, im.data) {
		t.Fatal("image after the incremental differs")
	}
	if st.end.GetBlocksSent() != uint64(len(want)) || st.end.GetBytesRead() != uint64(len(im.data)) {
		t.Errorf("end = %v", st.end)
	}

	// Unchanged: nothing is sent.
	if !confirm(t, s, "job-2", im.path, st.end.GetManifest()) {
		t.Fatal("confirm of job-2 not adopted")
	}
	st = backup(t, s, im, "job-3", &agentv1.BackupVolume{BaseManifest: st.end.GetManifest()})
	if !st.begin.GetIncremental() || len(st.blocks) != 0 {
		t.Errorf("unchanged volume: incremental %v, %d blocks sent", st.begin.GetIncremental(), len(st.blocks))
	}
}

// stateFile is the path of a volume's baseline.
func (s *Store) baselinePath(vol string) string { return filepath.Join(s.volumeDir(vol), baselineName) }

func TestFullReadWhenBaselineUnusable(t *testing.T) {
	cases := []struct {
		name   string
		reason string
		vol    func(m []byte) *agentv1.BackupVolume
		damage func(t *testing.T, s *Store, im *image)
	}{
		{name: "manifest mismatch", reason: ReasonMismatch, vol: func(m []byte) *agentv1.BackupVolume {
			other := sha256.Sum256(m)
			return &agentv1.BackupVolume{BaseManifest: other[:]}
		}},
		{name: "no recovery point", reason: ReasonNoRecoveryPoint, vol: func([]byte) *agentv1.BackupVolume { return &agentv1.BackupVolume{} }},
		{name: "full requested", reason: ReasonFullRequested, vol: func(m []byte) *agentv1.BackupVolume {
			return &agentv1.BackupVolume{BaseManifest: m, Full: true}
		}},
		{name: "state missing", reason: ReasonNoBaseline, damage: func(t *testing.T, s *Store, im *image) {
			if err := os.Remove(s.baselinePath(im.path)); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "hash flipped", reason: ReasonDamaged, damage: func(t *testing.T, s *Store, im *image) {
			flip(t, s.baselinePath(im.path), -40)
		}},
		{name: "header flipped", reason: ReasonDamaged, damage: func(t *testing.T, s *Store, im *image) {
			flip(t, s.baselinePath(im.path), 20)
		}},
		{name: "truncated", reason: ReasonDamaged, damage: func(t *testing.T, s *Store, im *image) {
			st, _ := os.Stat(s.baselinePath(im.path))
			if err := os.Truncate(s.baselinePath(im.path), st.Size()-32); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "empty", reason: ReasonDamaged, damage: func(t *testing.T, s *Store, im *image) {
			if err := os.Truncate(s.baselinePath(im.path), 0); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "size changed", reason: ReasonSizeChanged, damage: func(t *testing.T, _ *Store, im *image) {
			im.data = append(im.data, make([]byte, bs)...)
			im.write(t)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im := newImage(t, 2<<20, 3)
			s := newStore(t)
			st := backup(t, s, im, "job-1", &agentv1.BackupVolume{})
			m := st.end.GetManifest()
			if !confirm(t, s, "job-1", im.path, m) {
				t.Fatal("not adopted")
			}
			im.fill(3)
			im.write(t)
			if c.damage != nil {
				c.damage(t, s, im)
			}
			v := &agentv1.BackupVolume{BaseManifest: m}
			if c.vol != nil {
				v = c.vol(m)
			}
			st = backup(t, s, im, "job-2", v)
			if st.begin.GetIncremental() || !strings.HasPrefix(st.begin.GetReason(), c.reason) {
				t.Errorf("begin = %v, want a full read because %q", st.begin, c.reason)
			}
			if n := agentv1.Blocks(int64(len(im.data)), bs); int64(len(st.blocks)) != n {
				t.Errorf("%d blocks sent, want all %d", len(st.blocks), n)
			}
		})
	}
}

func TestFullReadWhenBlockSizeChanged(t *testing.T) {
	im := newImage(t, 1<<20, 4)
	s := newStore(t)
	st := backup(t, s, im, "job-1", &agentv1.BackupVolume{})
	confirm(t, s, "job-1", im.path, st.end.GetManifest())
	send, got := receiver(t)
	f, _ := os.Open(im.path)
	defer f.Close()
	_, err := s.Backup(context.Background(), Request{JobID: "job-2", BlockSize: 2 * bs, Source: f, Size: int64(len(im.data)), Send: send,
		Volume: &agentv1.BackupVolume{VolumeId: im.path, BaseManifest: st.end.GetManifest()}})
	if err != nil {
		t.Fatal(err)
	}
	if got.begin.GetIncremental() || got.begin.GetReason() != ReasonBlockSize {
		t.Errorf("begin = %v", got.begin)
	}
}

func flip(t *testing.T, path string, at int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if at < 0 {
		at += int64(len(b))
	}
	b[at] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDirtyBlocksOverrideBaseline(t *testing.T) {
	im := newImage(t, 4<<20, 5)
	s := newStore(t)
	st := backup(t, s, im, "job-1", &agentv1.BackupVolume{})
	m1 := st.end.GetManifest()
	confirm(t, s, "job-1", im.path, m1)

	// The volume changes at blocks 2, 5 and 9. A backup that did not finish
	// wrote block 2's and block 9's new data into the appliance's image,
	// and something else at block 20 (unchanged on the volume).
	for _, i := range []int64{2, 5, 9} {
		im.fill(i)
	}
	im.write(t)
	h2, h9 := im.hash(2), im.hash(9)
	junk := sha256.Sum256([]byte("junk"))
	dirty := []*agentv1.BlockHash{{Index: 2, Hash: h2[:]}, {Index: 9, Hash: h9[:]}, {Index: 20, Hash: junk[:]}}
	st = backup(t, s, im, "job-2", &agentv1.BackupVolume{BaseManifest: m1, Dirty: dirty})
	if got := st.indices(); !st.begin.GetIncremental() || len(got) != 2 || got[0] != 5 || got[1] != 20 {
		t.Errorf("sent %v (incremental %v), want [5 20]", got, st.begin.GetIncremental())
	}

	bad := []*agentv1.BlockHash{{Index: 9, Hash: h9[:]}, {Index: 2, Hash: h2[:]}}
	f, _ := os.Open(im.path)
	defer f.Close()
	send, _ := receiver(t)
	_, err := s.Backup(context.Background(), Request{JobID: "job-3", BlockSize: bs, Source: f, Size: int64(len(im.data)), Send: send,
		Volume: &agentv1.BackupVolume{VolumeId: im.path, BaseManifest: m1, Dirty: bad}})
	var re *RequestError
	if !errors.As(err, &re) {
		t.Errorf("unsorted dirty blocks: %v, want a RequestError", err)
	}
}

func TestConfirmAdoptsOnlyMatchingManifest(t *testing.T) {
	im := newImage(t, 1<<20, 6)
	s := newStore(t)
	st := backup(t, s, im, "job-1", &agentv1.BackupVolume{})
	m := st.end.GetManifest()
	other := sha256.Sum256([]byte("other"))
	for _, c := range []struct {
		job, vol string
		m        []byte
	}{
		{"job-1", im.path, other[:]},
		{"job-1", im.path, nil},
		{"job-2", im.path, m},
		{"job-1", "/dev/other", m},
	} {
		if confirm(t, s, c.job, c.vol, c.m) {
			t.Errorf("Confirm(%q, %q, %x) adopted", c.job, c.vol, c.m)
		}
	}
	if _, ok, _ := s.Baseline(im.path); ok {
		t.Fatal("baseline after refused confirmations")
	}
	if !confirm(t, s, "job-1", im.path, m) {
		t.Fatal("matching confirmation not adopted")
	}
	h, ok, err := s.Baseline(im.path)
	if err != nil || !ok || !bytes.Equal(h.Manifest[:], m) || h.JobID != "job-1" {
		t.Fatalf("baseline = %+v, %v, %v", h, ok, err)
	}
	if !confirm(t, s, "job-1", im.path, m) {
		t.Error("second confirmation not reported as adopted")
	}
	if confirm(t, s, "job-1", im.path, other[:]) {
		t.Error("confirmation with another manifest reported as adopted")
	}
}

func TestLostConfirmAdoptedByNextBackup(t *testing.T) {
	im := newImage(t, 2<<20, 7)
	s := newStore(t)
	st := backup(t, s, im, "job-1", &agentv1.BackupVolume{})
	confirm(t, s, "job-1", im.path, st.end.GetManifest())
	im.fill(1)
	im.write(t)
	st = backup(t, s, im, "job-2", &agentv1.BackupVolume{BaseManifest: st.end.GetManifest()})
	m2 := st.end.GetManifest()
	// The appliance made its recovery point of job-2 but its
	// ConfirmBackup was lost; the next job names job-2's manifest.
	im.fill(4)
	im.write(t)
	st = backup(t, s, im, "job-3", &agentv1.BackupVolume{BaseManifest: m2})
	if got := st.indices(); !st.begin.GetIncremental() || len(got) != 1 || got[0] != 4 {
		t.Errorf("sent %v (incremental %v), want [4] incrementally", got, st.begin.GetIncremental())
	}
	if names, _ := s.pendingFiles(im.path); len(names) != 1 {
		t.Errorf("pending files %v, want job-3's only", names)
	}
}

func TestCanceledBackupKeepsBaseline(t *testing.T) {
	im := newImage(t, 8<<20, 8)
	s := newStore(t)
	st := backup(t, s, im, "job-1", &agentv1.BackupVolume{})
	m := st.end.GetManifest()
	confirm(t, s, "job-1", im.path, m)
	before, err := os.ReadFile(s.baselinePath(im.path))
	if err != nil {
		t.Fatal(err)
	}
	for i := range int64(40) {
		im.fill(i)
	}
	im.write(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs := 0
	send := func(m *agentv1.BackupData) error {
		if len(m.GetBlocks()) > 0 {
			msgs++
			cancel() // the appliance went away after the first blocks
		}
		return nil
	}
	f, _ := os.Open(im.path)
	defer f.Close()
	_, err = s.Backup(ctx, Request{JobID: "job-2", BlockSize: bs, Source: f, Size: int64(len(im.data)), Send: send,
		Volume: &agentv1.BackupVolume{VolumeId: im.path, BaseManifest: m}, Tuning: Tuning{ReadUnit: bs, InFlight: 3}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Backup: %v, want context.Canceled", err)
	}
	if msgs > 3 {
		t.Errorf("%d messages with blocks sent after cancellation", msgs)
	}
	after, err := os.ReadFile(s.baselinePath(im.path))
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("baseline changed by a canceled backup (%v)", err)
	}
	if names, _ := s.pendingFiles(im.path); len(names) != 0 {
		t.Errorf("pending files left: %v", names)
	}
	if confirm(t, s, "job-2", im.path, im.manifest()) {
		t.Error("a canceled backup was adopted")
	}
}

func TestReadErrorFailsBackup(t *testing.T) {
	im := newImage(t, 1<<20, 9)
	s := newStore(t)
	f, _ := os.Open(im.path)
	defer f.Close()
	send, _ := receiver(t)
	// The volume claims more bytes than the file has.
	_, err := s.Backup(context.Background(), Request{JobID: "job-1", BlockSize: bs, Source: f, Size: int64(len(im.data)) + bs, Send: send,
		Volume: &agentv1.BackupVolume{VolumeId: im.path}})
	if err == nil || !strings.Contains(err.Error(), "read at offset") {
		t.Errorf("Backup of a short source: %v", err)
	}
	if names, _ := s.pendingFiles(im.path); len(names) != 0 {
		t.Errorf("pending files left: %v", names)
	}
}

// TestReaderMemoryIndependentOfSize: the reader allocates the same whatever
// the volume's size (its buffers are a fixed number of read units; the
// hashes stream through files), here 4 MiB against 64 MiB.
func TestReaderMemoryIndependentOfSize(t *testing.T) {
	alloc := func(size int) uint64 {
		im := newImage(t, size, 10)
		s := newStore(t)
		st := backup(t, s, im, "job-1", &agentv1.BackupVolume{})
		confirm(t, s, "job-1", im.path, st.end.GetManifest())
		f, _ := os.Open(im.path)
		defer f.Close()
		send := func(*agentv1.BackupData) error { return nil }
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := s.Backup(context.Background(), Request{JobID: "job-2", BlockSize: bs, Source: f, Size: int64(size), Send: send,
			Volume: &agentv1.BackupVolume{VolumeId: im.path, BaseManifest: st.end.GetManifest()}})
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := alloc(4<<20), alloc(64<<20)
	t.Logf("allocated %d KiB for 4 MiB, %d KiB for 64 MiB", small>>10, large>>10)
	if large > small+1<<20 || large > 40<<20 {
		t.Errorf("allocated %d KiB for 64 MiB against %d KiB for 4 MiB", large>>10, small>>10)
	}
}

func TestProgressReported(t *testing.T) {
	im := newImage(t, 4<<20, 11)
	s := newStore(t)
	f, _ := os.Open(im.path)
	defer f.Close()
	var got []*agentv1.BackupProgress
	send := func(m *agentv1.BackupData) error {
		if m.GetProgress() != nil {
			got = append(got, m.GetProgress())
		}
		return nil
	}
	total := uint64(3 * len(im.data))       // as if two more volumes followed
	pr := &Progress{Total: total, Every: 1} // due at every read unit
	end, err := s.Backup(context.Background(), Request{JobID: "job-1", BlockSize: bs, Source: f, Size: int64(len(im.data)), Send: send,
		Volume: &agentv1.BackupVolume{VolumeId: im.path}, Progress: pr, Tuning: Tuning{ReadUnit: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 3 {
		t.Fatalf("%d progress reports for 4 read units", len(got))
	}
	for i, p := range got {
		if p.GetBytesTotal() != total || (i > 0 && p.GetBytesRead() < got[i-1].GetBytesRead()) {
			t.Errorf("progress %d: %v after %v", i, p, got[max(0, i-1)])
		}
	}
	last := got[len(got)-1]
	if last.GetBytesRead() != uint64(len(im.data)) || last.GetBytesSent() != end.GetBytesSent() {
		t.Errorf("last progress %v, want %d read, %d sent", last, len(im.data), end.GetBytesSent())
	}
}

func TestEmptyVolume(t *testing.T) {
	im := newImage(t, 0, 12)
	s := newStore(t)
	st := backup(t, s, im, "job-1", &agentv1.BackupVolume{})
	if len(st.blocks) != 0 || st.end.GetBlocks() != 0 {
		t.Errorf("empty volume: %d blocks sent, end %v", len(st.blocks), st.end)
	}
	if !confirm(t, s, "job-1", im.path, st.end.GetManifest()) {
		t.Fatal("not adopted")
	}
	st = backup(t, s, im, "job-2", &agentv1.BackupVolume{BaseManifest: st.end.GetManifest()})
	if !st.begin.GetIncremental() || len(st.blocks) != 0 {
		t.Errorf("second read: %v, %d blocks", st.begin, len(st.blocks))
	}
}
