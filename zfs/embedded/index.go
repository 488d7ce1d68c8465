package embedded

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// A fixed index lists the chunks of one image, in order. On disk:
//
//	magic     8 bytes  "CAIRNFX1"
//	chunkSize uint32   bytes per chunk (the last chunk may be shorter)
//	reserved  uint32   zero
//	size      uint64   image size in bytes
//	count     uint64   entries, ceil(size/chunkSize)
//	entries   count × (digest [32]byte, stored uint32)
//	trailer   [32]byte SHA-256 of everything above
//
// All integers are big-endian. An all-zero digest is a hole: the chunk reads
// as zeros and has no stored data. stored is the size of the chunk's file.
const (
	indexMagic      = "CAIRNFX1"
	indexHeaderSize = 8 + 4 + 4 + 8 + 8
	entrySize       = sha256.Size + 4
	maxImageSize    = 1 << 50 // 1 PiB; bounds the index a header can ask for
)

// digest is the SHA-256 of a chunk's uncompressed bytes.
type digest [sha256.Size]byte

func (d digest) isHole() bool { return d == digest{} }

func (d digest) String() string { return fmt.Sprintf("%x", d[:]) }

type entry struct {
	sum    digest
	stored uint32
}

// index is an image's chunk list in memory.
type index struct {
	chunkSize int64
	size      int64
	entries   []entry
}

func newIndex(chunkSize, size int64) *index {
	return &index{chunkSize: chunkSize, size: size, entries: make([]entry, chunkCount(size, chunkSize))}
}

func chunkCount(size, chunkSize int64) int64 { return (size + chunkSize - 1) / chunkSize }

// chunkLen is the length of chunk i (the last one may be short).
func (ix *index) chunkLen(i int64) int64 {
	if rest := ix.size - i*ix.chunkSize; rest < ix.chunkSize {
		return rest
	}
	return ix.chunkSize
}

func (ix *index) clone() *index {
	c := *ix
	c.entries = append([]entry(nil), ix.entries...)
	return &c
}

func (ix *index) marshal() []byte {
	b := make([]byte, indexHeaderSize, indexHeaderSize+len(ix.entries)*entrySize+sha256.Size)
	copy(b, indexMagic)
	binary.BigEndian.PutUint32(b[8:], uint32(ix.chunkSize))
	binary.BigEndian.PutUint64(b[16:], uint64(ix.size))
	binary.BigEndian.PutUint64(b[24:], uint64(len(ix.entries)))
	for _, e := range ix.entries {
		b = append(b, e.sum[:]...)
		b = binary.BigEndian.AppendUint32(b, e.stored)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

var errBadIndex = errors.New("bad index")

// parseIndex decodes and checks an index file.
func parseIndex(b []byte) (*index, error) {
	if len(b) < indexHeaderSize+sha256.Size || !bytes.Equal(b[:8], []byte(indexMagic)) {
		return nil, fmt.Errorf("%w: no index header", errBadIndex)
	}
	body, trailer := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], trailer) {
		return nil, fmt.Errorf("%w: checksum mismatch", errBadIndex)
	}
	chunkSize := int64(binary.BigEndian.Uint32(b[8:]))
	size := binary.BigEndian.Uint64(b[16:])
	count := binary.BigEndian.Uint64(b[24:])
	if chunkSize < minChunkSize || chunkSize > maxChunkSize || size > maxImageSize {
		return nil, fmt.Errorf("%w: chunk size %d, image size %d", errBadIndex, chunkSize, size)
	}
	if reserved := binary.BigEndian.Uint32(b[12:]); reserved != 0 {
		return nil, fmt.Errorf("%w: reserved field %#x", errBadIndex, reserved)
	}
	if count != uint64(chunkCount(int64(size), chunkSize)) || uint64(len(body)-indexHeaderSize) != count*entrySize {
		return nil, fmt.Errorf("%w: %d entries for %d bytes", errBadIndex, count, size)
	}
	ix := &index{chunkSize: chunkSize, size: int64(size), entries: make([]entry, count)}
	p := body[indexHeaderSize:]
	for i := range ix.entries {
		e := &ix.entries[i]
		copy(e.sum[:], p)
		e.stored = binary.BigEndian.Uint32(p[sha256.Size:])
		if e.sum.isHole() != (e.stored == 0) {
			return nil, fmt.Errorf("%w: entry %d: stored size %d", errBadIndex, i, e.stored)
		}
		p = p[entrySize:]
	}
	return ix, nil
}
