package agentv1

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash"
	"sync"
)

// Block sizes of a Backup (BackupRequest.block_size).
const (
	DefaultBlockSize = 64 << 10
	MinBlockSize     = 4 << 10
	MaxBlockSize     = 4 << 20
)

// HashSize is the size of a block hash and of a manifest (SHA-256).
const HashSize = sha256.Size

// BlockSize returns the block size a BackupRequest asks for: size, or
// DefaultBlockSize for 0. It fails unless size is a power of two from
// MinBlockSize to MaxBlockSize.
func BlockSize(size uint32) (int, error) {
	if size == 0 {
		return DefaultBlockSize, nil
	}
	if size < MinBlockSize || size > MaxBlockSize || size&(size-1) != 0 {
		return 0, fmt.Errorf("block size %d: want a power of two from %d to %d", size, MinBlockSize, MaxBlockSize)
	}
	return int(size), nil
}

// Blocks is the number of blocks of a volume of size bytes.
func Blocks(size int64, blockSize int) int64 {
	return (size + int64(blockSize) - 1) / int64(blockSize)
}

// BlockLength is the length of block index of a volume of size bytes: the
// block size, or less for the last block.
func BlockLength(size int64, blockSize int, index int64) int {
	return int(min(int64(blockSize), size-index*int64(blockSize)))
}

// HashBlock is the hash of a block's bytes (Block.hash).
func HashBlock(b []byte) [HashSize]byte { return sha256.Sum256(b) }

var zeroHashes sync.Map // length → [HashSize]byte

// ZeroHash is the hash of n zero bytes: the hash of a zero block.
func ZeroHash(n int) [HashSize]byte {
	if h, ok := zeroHashes.Load(n); ok {
		return h.([HashSize]byte)
	}
	h := sha256.Sum256(make([]byte, n))
	zeroHashes.Store(n, h)
	return h
}

// zeros is compared against by IsZero.
var zeros [64 << 10]byte

// IsZero reports whether b is all zeros. It compares with a zero buffer
// (bytes.Equal is vectorised: several times faster than a loop).
func IsZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// Manifest computes a volume's manifest: the SHA-256 of the hashes of all
// of its blocks in index order (VolumeEnd.manifest). Add the hash of every
// block, zero blocks included, then Sum. The zero Manifest is ready to use.
type Manifest struct {
	h      hash.Hash
	blocks int64
}

// Add adds the hash of the next block.
func (m *Manifest) Add(blockHash []byte) {
	if m.h == nil {
		m.h = sha256.New()
	}
	m.h.Write(blockHash)
	m.blocks++
}

// Blocks is the number of hashes added.
func (m *Manifest) Blocks() int64 { return m.blocks }

// Sum is the manifest of the hashes added so far.
func (m *Manifest) Sum() []byte {
	if m.h == nil {
		m.h = sha256.New()
	}
	return m.h.Sum(nil)
}
