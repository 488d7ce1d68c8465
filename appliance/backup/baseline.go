package backup

import (
	"bufio"
	"context"
	"fmt"
	"io"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/zfs"
)

// baseline yields, block by block in order, the hash of what a live image
// holds: the previous recovery point's hash (read from its hashes image,
// streaming), or a zero block's without one, except where an override
// says otherwise; unknown below unknownBelow.
type baseline struct {
	bs           int
	size         int64
	prev         zfs.ImageReader // nil: no previous point
	rd           *bufio.Reader
	overrides    []*agentv1.BlockHash
	unknownBelow int64
	next         int64
	// prevHash is the previous point's hash (or a zero block's) of the
	// block of the last call, without overrides.
	prevHash [agentv1.HashSize]byte
}

// openBaseline opens the baseline of a volume as planned.
func (b *run) openBaseline(ctx context.Context, v *volume) (*baseline, error) {
	base := &baseline{bs: b.bs, size: v.size, overrides: v.overrides, unknownBelow: v.unknownBelow}
	if v.prev == nil {
		return base, nil
	}
	r, err := b.r.pool.OpenSnapshotImage(ctx, v.prevSnap, v.prev.Hashes)
	if err != nil {
		return nil, storageErr("open the hashes of "+v.prevSnap.String(), err)
	}
	if r.Size() != v.blocks*agentv1.HashSize {
		r.Close()
		return nil, fmt.Errorf("hashes %s of %s: %d bytes, want %d", v.prev.Hashes, v.prevSnap, r.Size(), v.blocks*agentv1.HashSize)
	}
	base.prev = r
	base.rd = bufio.NewReaderSize(io.NewSectionReader(r, 0, r.Size()), 1<<20)
	return base, nil
}

// hash returns the hash of what the image holds at block i, which must
// follow the block of the previous call; known is false where the image's
// content is unknown.
func (b *baseline) hash(i int64) (h [agentv1.HashSize]byte, known bool, err error) {
	if i != b.next {
		return h, false, fmt.Errorf("baseline: block %d asked after %d", i, b.next-1)
	}
	b.next++
	if b.prev != nil {
		if _, err := io.ReadFull(b.rd, h[:]); err != nil {
			return h, false, storageErr(fmt.Sprintf("read hash %d of the last recovery point", i), err)
		}
	} else {
		h = agentv1.ZeroHash(agentv1.BlockLength(b.size, b.bs, i))
	}
	b.prevHash = h
	for len(b.overrides) > 0 && int64(b.overrides[0].GetIndex()) < i {
		b.overrides = b.overrides[1:]
	}
	if len(b.overrides) > 0 && int64(b.overrides[0].GetIndex()) == i {
		copy(h[:], b.overrides[0].GetHash())
	}
	return h, i >= b.unknownBelow, nil
}

func (b *baseline) close() {
	if b.prev != nil {
		b.prev.Close()
		b.prev = nil
	}
}
