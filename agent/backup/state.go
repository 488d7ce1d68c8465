package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/internal/durable"
)

// A state file holds the block hashes of one read of a volume:
//
//	offset  size  field
//	0       8     magic "CAIRNBH1"
//	8       4     header length H (big endian, like every number here)
//	12      4     block size
//	16      8     volume size in bytes
//	24      8     block count N (agentv1.Blocks of size and block size)
//	32      32    manifest (agentv1.Manifest of the N hashes)
//	64      2+n   volume id (length, bytes)
//	..      2+m   job id (length, bytes)
//	H-4     4     CRC-32C of bytes [0, H-4)
//	H       32·N  the block hashes, in index order
//
// The file is exactly H + 32·N bytes long. The header's CRC guards the
// header; the manifest guards the hashes, and a baseline is checked
// against it before it is used.
const (
	stateMagic     = "CAIRNBH1"
	fixedHeader    = 64
	maxIDLength    = 4096
	maxHeaderBytes = fixedHeader + 2 + maxIDLength + 2 + maxIDLength + 4
)

// File names in a volume's state directory.
const (
	baselineName  = "baseline"
	pendingPrefix = "pending-"
	tmpSuffix     = ".tmp"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the header of a state file.
type Header struct {
	VolumeID  string
	JobID     string
	Size      int64
	BlockSize int
	Blocks    int64
	Manifest  [agentv1.HashSize]byte
}

// Len is the encoded length of the header.
func (h *Header) Len() int { return fixedHeader + 2 + len(h.VolumeID) + 2 + len(h.JobID) + 4 }

// Marshal encodes the header.
func (h *Header) Marshal() []byte {
	b := make([]byte, 0, h.Len())
	b = append(b, stateMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(h.Len()))
	b = binary.BigEndian.AppendUint32(b, uint32(h.BlockSize))
	b = binary.BigEndian.AppendUint64(b, uint64(h.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(h.Blocks))
	b = append(b, h.Manifest[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.VolumeID)))
	b = append(b, h.VolumeID...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.JobID)))
	b = append(b, h.JobID...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// ParseHeader decodes a header from the start of b; b may hold more.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < fixedHeader+2+2+4 {
		return h, errors.New("state file header is short")
	}
	if string(b[:8]) != stateMagic {
		return h, errors.New("not a state file (bad magic)")
	}
	n := int(binary.BigEndian.Uint32(b[8:]))
	if n < fixedHeader+2+2+4 || n > maxHeaderBytes || n > len(b) {
		return h, fmt.Errorf("state file header length %d out of range", n)
	}
	b = b[:n]
	if crc32.Checksum(b[:n-4], castagnoli) != binary.BigEndian.Uint32(b[n-4:]) {
		return h, errors.New("state file header checksum mismatch")
	}
	bs, err := agentv1.BlockSize(binary.BigEndian.Uint32(b[12:]))
	if err != nil || bs != int(binary.BigEndian.Uint32(b[12:])) {
		return h, fmt.Errorf("state file block size %d invalid", binary.BigEndian.Uint32(b[12:]))
	}
	h.BlockSize = bs
	size := binary.BigEndian.Uint64(b[16:])
	if size > 1<<62 {
		return h, fmt.Errorf("state file volume size %d out of range", size)
	}
	h.Size = int64(size)
	h.Blocks = int64(binary.BigEndian.Uint64(b[24:]))
	if h.Blocks != agentv1.Blocks(h.Size, h.BlockSize) {
		return h, fmt.Errorf("state file has %d blocks, want %d for %d bytes", h.Blocks, agentv1.Blocks(h.Size, h.BlockSize), h.Size)
	}
	copy(h.Manifest[:], b[32:64])
	rest := b[fixedHeader : n-4]
	var ok bool
	if h.VolumeID, rest, ok = cutString(rest); !ok {
		return h, errors.New("state file volume id truncated")
	}
	if h.JobID, rest, ok = cutString(rest); !ok {
		return h, errors.New("state file job id truncated")
	}
	if len(rest) != 0 {
		return h, errors.New("state file header has trailing bytes")
	}
	return h, nil
}

func cutString(b []byte) (string, []byte, bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}

// readHeader reads and checks the header of the state file f, and that
// the file's length is that of the header and its hashes. f is left at the
// first hash.
func readHeader(f *os.File) (Header, error) {
	buf := make([]byte, 12)
	if _, err := io.ReadFull(f, buf); err != nil {
		return Header{}, fmt.Errorf("read state file header: %w", err)
	}
	n := int(binary.BigEndian.Uint32(buf[8:]))
	if n < len(buf) || n > maxHeaderBytes {
		return Header{}, fmt.Errorf("state file header length %d out of range", n)
	}
	buf = append(buf, make([]byte, n-len(buf))...)
	if _, err := io.ReadFull(f, buf[12:]); err != nil {
		return Header{}, fmt.Errorf("read state file header: %w", err)
	}
	h, err := ParseHeader(buf)
	if err != nil {
		return h, err
	}
	st, err := f.Stat()
	if err != nil {
		return h, err
	}
	if want := int64(n) + h.Blocks*agentv1.HashSize; st.Size() != want {
		return h, fmt.Errorf("state file is %d bytes, want %d", st.Size(), want)
	}
	return h, nil
}

// Store keeps, per volume, the block hashes of the last backup the
// appliance confirmed (the baseline) and of backups awaiting confirmation
// (pending), in a directory of its own:
//
//	<dir>/<first 16 hex digits of SHA-256(volume id)>/baseline
//	<dir>/<...>/pending-<first 16 hex digits of SHA-256(job id)>
//
// Files are written to a temporary name, synced and renamed, so a crash
// leaves a complete file or none.
type Store struct {
	dir string
	mu  sync.Mutex // serializes adoptions and removals
}

// NewStore makes a Store in dir, creating it (0700) if needed.
func NewStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make backup state directory: %w", err)
	}
	return &Store{dir: dir}, nil
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

func (s *Store) volumeDir(volumeID string) string { return filepath.Join(s.dir, shortHash(volumeID)) }

func (s *Store) pendingPath(volumeID, jobID string) string {
	return filepath.Join(s.volumeDir(volumeID), pendingPrefix+shortHash(jobID))
}

// Baseline returns the header of a volume's baseline; ok is false when
// there is none.
func (s *Store) Baseline(volumeID string) (h Header, ok bool, err error) {
	f, err := os.Open(filepath.Join(s.volumeDir(volumeID), baselineName))
	if errors.Is(err, os.ErrNotExist) {
		return h, false, nil
	}
	if err != nil {
		return h, false, err
	}
	defer f.Close()
	h, err = readHeader(f)
	return h, err == nil, err
}

// Confirm adopts the pending state of a job as the volume's baseline if
// its manifest is manifest, and removes the volume's other pending
// states. It reports whether the job's state is the baseline now (true
// again for a confirmation sent twice).
func (s *Store) Confirm(jobID, volumeID string, manifest []byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path := s.pendingPath(volumeID, jobID)
	h, err := pendingHeader(path)
	if errors.Is(err, os.ErrNotExist) {
		// Adopted already (a ConfirmBackup sent again)?
		b, ok, err := s.Baseline(volumeID)
		return err == nil && ok && b.JobID == jobID && bytes.Equal(b.Manifest[:], manifest), nil
	}
	if err != nil {
		return false, fmt.Errorf("read pending state of job %q: %w", jobID, err)
	}
	if h.VolumeID != volumeID || h.JobID != jobID || !bytes.Equal(h.Manifest[:], manifest) {
		return false, nil
	}
	if err := s.adopt(volumeID, path); err != nil {
		return false, err
	}
	return true, nil
}

// adoptMatching adopts a pending state whose manifest is manifest: the
// confirmation of its backup was lost, but the appliance's recovery point
// is that backup. s.mu must be held.
func (s *Store) adoptMatching(volumeID string, manifest []byte) (bool, error) {
	if len(manifest) == 0 {
		return false, nil
	}
	names, err := s.pendingFiles(volumeID)
	if err != nil {
		return false, err
	}
	for _, path := range names {
		h, err := pendingHeader(path)
		if err != nil || h.VolumeID != volumeID || !bytes.Equal(h.Manifest[:], manifest) {
			continue
		}
		return true, s.adopt(volumeID, path)
	}
	return false, nil
}

// adopt renames a pending state to the baseline and removes the other
// pending states. s.mu must be held.
func (s *Store) adopt(volumeID, path string) error {
	if err := durable.Rename(path, filepath.Join(s.volumeDir(volumeID), baselineName)); err != nil {
		return fmt.Errorf("adopt baseline: %w", err)
	}
	return s.removePending(volumeID, "")
}

// removePending removes a volume's pending states (and temporary files)
// except keep.
func (s *Store) removePending(volumeID, keep string) error {
	names, err := s.pendingFiles(volumeID)
	if err != nil {
		return err
	}
	var errs []error
	for _, path := range names {
		if path == keep {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pendingFiles lists a volume's pending states and temporary files.
func (s *Store) pendingFiles(volumeID string) ([]string, error) {
	ents, err := os.ReadDir(s.volumeDir(volumeID))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list backup state: %w", err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), pendingPrefix) || strings.HasSuffix(e.Name(), tmpSuffix) {
			out = append(out, filepath.Join(s.volumeDir(volumeID), e.Name()))
		}
	}
	return out, nil
}

func pendingHeader(path string) (Header, error) {
	if strings.HasSuffix(path, tmpSuffix) {
		return Header{}, errors.New("temporary file")
	}
	f, err := os.Open(path)
	if err != nil {
		return Header{}, err
	}
	defer f.Close()
	return readHeader(f)
}

// baseline is an open baseline state whose hashes are read in order.
type baseline struct {
	f *os.File
	r *bufio.Reader
	h Header
}

// openBaseline opens a volume's baseline and checks its hashes against its
// manifest (reading them once), so that a damaged file is never used.
func (s *Store) openBaseline(volumeID string) (*baseline, error) {
	f, err := os.Open(filepath.Join(s.volumeDir(volumeID), baselineName))
	if err != nil {
		return nil, err
	}
	h, err := readHeader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if h.VolumeID != volumeID {
		f.Close()
		return nil, fmt.Errorf("baseline is of volume %q", h.VolumeID)
	}
	start := int64(h.Len())
	var m agentv1.Manifest
	r := bufio.NewReaderSize(io.NewSectionReader(f, start, h.Blocks*agentv1.HashSize), 64<<10)
	var hb [agentv1.HashSize]byte
	for range h.Blocks {
		if _, err := io.ReadFull(r, hb[:]); err != nil {
			f.Close()
			return nil, fmt.Errorf("read baseline hashes: %w", err)
		}
		m.Add(hb[:])
	}
	if !bytes.Equal(m.Sum(), h.Manifest[:]) {
		f.Close()
		return nil, errors.New("baseline hashes do not match its manifest")
	}
	return &baseline{f: f, h: h, r: bufio.NewReaderSize(io.NewSectionReader(f, start, h.Blocks*agentv1.HashSize), 64<<10)}, nil
}

func (b *baseline) Close() error { return b.f.Close() }

// pending is a state file being written during a backup.
type pending struct {
	f    *os.File
	w    *bufio.Writer
	h    Header
	tmp  string
	path string
}

func (s *Store) createPending(h Header) (*pending, error) {
	dir := s.volumeDir(h.VolumeID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make volume state directory: %w", err)
	}
	if len(h.VolumeID) > maxIDLength || len(h.JobID) > maxIDLength {
		return nil, errors.New("volume or job id too long")
	}
	path := s.pendingPath(h.VolumeID, h.JobID)
	tmp := path + tmpSuffix
	os.Remove(tmp) // left by a crash
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create pending state: %w", err)
	}
	p := &pending{f: f, w: bufio.NewWriterSize(f, 64<<10), h: h, tmp: tmp, path: path}
	if _, err := p.w.Write(h.Marshal()); err != nil { // manifest filled in by commit
		p.abort()
		return nil, fmt.Errorf("write pending state: %w", err)
	}
	return p, nil
}

// commit writes the manifest, syncs the file and gives it its name.
func (p *pending) commit(manifest []byte) error {
	copy(p.h.Manifest[:], manifest)
	err := p.w.Flush()
	if err == nil {
		_, err = p.f.WriteAt(p.h.Marshal(), 0)
	}
	if err == nil {
		err = p.f.Sync()
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = durable.Rename(p.tmp, p.path)
	}
	if err != nil {
		os.Remove(p.tmp)
		return fmt.Errorf("write pending state: %w", err)
	}
	return nil
}

func (p *pending) abort() {
	p.f.Close()
	os.Remove(p.tmp)
}
