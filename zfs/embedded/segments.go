package embedded

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"
)

// Packs are written with O_DIRECT where the file system allows it: a
// buffered write costs this machine's kernel several times the CPU of the
// copy it makes into the page cache. Records are copied into segments of
// segSize bytes in memory, at their reserved offsets, and a segment is
// written with one aligned write once every writer in it is done and
// nothing more can be reserved in it: it is full, or its pack is closed (a
// rollover or a barrier), in which case it is written padded to segAlign
// and the pack is truncated to its size before it is sealed. Until a
// segment is written, reads of its records are served from memory.
//
// Memory: at most maxSegWrites segments are being written per store; a
// writer that completes one waits for a slot before it returns. Besides
// those, a pack holds the segment being filled and those that a writer is
// still copying into (one or two per writer), and segments whose write
// failed, which stay until written: while there are any, storing a record
// first writes them again, and fails if that fails.
const (
	segSize      = 4 << 20
	segAlign     = 4096 // O_DIRECT alignment of memory, file offsets and lengths
	maxSegWrites = 4
	maxFreeSegs  = 4 // buffers kept for reuse
)

// segment is one staged segSize piece of a pack, at offset number×segSize.
type segment struct {
	buf     []byte // segSize bytes, aligned to segAlign
	end     int64  // bytes of it reserved
	pending int    // writers copying into it
	writing bool
	err     error // of its last write; it stays staged until one succeeds
}

func alignUp(n int64) int64 { return (n + segAlign - 1) &^ (segAlign - 1) }

func (s *chunkStore) getSeg() []byte {
	s.segMu.Lock()
	if n := len(s.segFree); n > 0 {
		b := s.segFree[n-1]
		s.segFree = s.segFree[:n-1]
		s.segMu.Unlock()
		return b
	}
	s.segMu.Unlock()
	b := make([]byte, segSize+segAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) & (segAlign - 1)); r != 0 {
		skip = segAlign - r
	}
	return b[skip : skip+segSize : skip+segSize]
}

func (s *chunkStore) putSeg(b []byte) {
	s.segMu.Lock()
	if len(s.segFree) < maxFreeSegs {
		s.segFree = append(s.segFree, b)
	}
	s.segMu.Unlock()
}

// stage records that n bytes at off are reserved in pack p, which writes
// through segments. The caller holds s.mu.
func (s *chunkStore) stage(p *pack, off, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for si := off / segSize; si <= (off+n-1)/segSize; si++ {
		seg := p.segs[si]
		if seg == nil {
			seg = &segment{buf: s.getSeg()}
			p.segs[si] = seg
		}
		seg.pending++
		seg.end = max(seg.end, min(segSize, off+n-si*segSize))
	}
}

// writeRecord writes a record, the concatenation of parts, at off in p,
// where the caller reserved it; the caller calls p.writers.Done after.
func (s *chunkStore) writeRecord(p *pack, off int64, parts ...[]byte) error {
	var n int64
	for _, b := range parts {
		n += int64(len(b))
	}
	if p.segs == nil { // buffered
		for _, b := range parts {
			if _, err := p.f.WriteAt(b, off); err != nil {
				return err
			}
			off += int64(len(b))
		}
		return nil
	}
	first, last := off/segSize, (off+n-1)/segSize
	segs := make([]*segment, 0, 2)
	p.mu.Lock()
	for si := first; si <= last; si++ {
		segs = append(segs, p.segs[si])
	}
	p.mu.Unlock()
	pos := off
	for _, b := range parts {
		for len(b) > 0 {
			seg := segs[pos/segSize-first]
			c := copy(seg.buf[pos%segSize:], b)
			b, pos = b[c:], pos+int64(c)
		}
	}
	var ready []int64
	p.mu.Lock()
	for i, seg := range segs {
		seg.pending--
		if seg.pending == 0 && !seg.writing && (seg.end == segSize || p.closed) {
			seg.writing = true
			p.inflight++
			ready = append(ready, first+int64(i))
		}
	}
	p.mu.Unlock()
	for _, si := range ready {
		s.submitSeg(p, si, segs[si-first])
	}
	return nil
}

// submitSeg writes a segment in the background once one of maxSegWrites
// slots is free.
func (s *chunkStore) submitSeg(p *pack, si int64, seg *segment) {
	s.segSem <- struct{}{}
	go func() {
		defer func() { <-s.segSem }()
		s.writeSeg(p, si, seg)
	}()
}

func (s *chunkStore) writeSeg(p *pack, si int64, seg *segment) {
	n := seg.end
	off := si * segSize
	var err error
	padded := false
	direct := !s.noDirect.Load()
	if direct {
		_, err = p.d.WriteAt(seg.buf[:alignUp(n)], off)
		padded = err == nil && alignUp(n) > n
		if errors.Is(err, syscall.EINVAL) {
			// Refused by the file system after all: buffered from now on.
			s.noDirect.Store(true)
			direct = false
		}
	}
	if !direct {
		_, err = p.f.WriteAt(seg.buf[:n], off)
	}
	p.mu.Lock()
	seg.writing = false
	p.inflight--
	if err != nil {
		if seg.err == nil {
			s.failedSegs.Add(1)
		}
		seg.err = err
	} else {
		if seg.err != nil {
			s.failedSegs.Add(-1)
		}
		delete(p.segs, si)
		s.putSeg(seg.buf)
		seg.buf = nil
		p.padded = p.padded || padded
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// flushSegs writes every staged segment of p, which takes no more
// reservations and has no writers left, waits for the writes and
// truncates the padding off: p is then all on disk (but not synced).
func (s *chunkStore) flushSegs(p *pack) error {
	if p.segs == nil {
		return nil
	}
	p.flushMu.Lock()
	defer p.flushMu.Unlock()
	p.mu.Lock()
	p.closed = true
	var ready []int64
	for si, seg := range p.segs {
		if seg.pending == 0 && !seg.writing {
			seg.writing = true
			p.inflight++
			ready = append(ready, si)
		}
	}
	segs := make([]*segment, len(ready))
	for i, si := range ready {
		segs[i] = p.segs[si]
	}
	p.mu.Unlock()
	for i, si := range ready {
		s.submitSeg(p, si, segs[i])
	}
	p.mu.Lock()
	for p.inflight > 0 {
		p.cond.Wait()
	}
	var err error
	for _, seg := range p.segs {
		if err = seg.err; err == nil {
			err = errors.New("segment still has writers") // not reached: the caller waited for them
		}
		break
	}
	padded := p.padded
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("write pack: %w", err)
	}
	if padded {
		if err := p.f.Truncate(p.size); err != nil {
			return fmt.Errorf("write pack: %w", err)
		}
		p.mu.Lock()
		p.padded = false
		p.mu.Unlock()
	}
	return nil
}

// retrySegs writes again, now, the segments whose write failed: until they
// are written, no more records are stored (they would stay in memory too).
// It returns the first error of those writes.
func (s *chunkStore) retrySegs() error {
	s.mu.Lock()
	packs := make([]*pack, 0, len(s.writing))
	for _, p := range s.writing {
		if p.segs != nil {
			packs = append(packs, p)
		}
	}
	s.mu.Unlock()
	for _, p := range packs {
		var nums []int64
		var segs []*segment
		p.mu.Lock()
		for si, seg := range p.segs {
			if seg.err != nil && !seg.writing && seg.pending == 0 {
				seg.writing = true
				p.inflight++
				nums, segs = append(nums, si), append(segs, seg)
			}
		}
		p.mu.Unlock()
		var first error
		for i, si := range nums {
			s.writeSeg(p, si, segs[i])
			p.mu.Lock()
			if err := segs[i].err; err != nil && p.segs[si] == segs[i] && first == nil {
				first = fmt.Errorf("write pack: %w", err)
			}
			p.mu.Unlock()
		}
		if first != nil {
			return first
		}
	}
	return nil
}

// readStaged reads what of buf, at off in pack p, is staged in memory, and
// returns the ranges that are not, which are on disk (a segment leaves
// memory only once it is written).
func (p *pack) readStaged(buf []byte, off int64) (disk [][2]int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pos, end := off, off+int64(len(buf))
	for pos < end {
		si := pos / segSize
		next := min(end, (si+1)*segSize)
		if seg := p.segs[si]; seg != nil && seg.buf != nil {
			copy(buf[pos-off:next-off], seg.buf[pos%segSize:])
		} else if k := len(disk); k > 0 && disk[k-1][1] == pos {
			disk[k-1][1] = next
		} else {
			disk = append(disk, [2]int64{pos, next})
		}
		pos = next
	}
	return disk
}
