package channel

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// BulkField is the field number of a bulk message's payload (bytes).
const BulkField protowire.Number = 1

// bulkMaxDepth bounds the nesting of groups in a bulk message's other
// fields, as proto.Unmarshal does (protowire.DefaultRecursionLimit).
const bulkMaxDepth = protowire.DefaultRecursionLimit

// ErrBulkMessage is wrapped by BulkCodec's errors for a malformed message.
var ErrBulkMessage = errors.New("malformed bulk message")

// BulkData is a bulk message received without copying it out of gRPC's
// buffers: its payload (field BulkField) by reference, and its other
// fields in wire format.
//
// gRPC's proto codec joins a received message's buffers into one (a copy)
// and proto.Unmarshal copies a bytes field out of that (a second copy, into
// a newly allocated slice). For bulk transfers (SpeedTest today, backup
// data tomorrow) that costs about a quarter of the receiving side's CPU. A
// call with BulkCall instead decodes the messages it receives into a
// BulkData, whose payload is the very buffers gRPC read the HTTP/2 frames
// into (references to them, Data):
//
//	st, err := client.SpeedTest(ctx, req, channel.BulkCall())
//	...
//	var d channel.BulkData
//	for {
//		err := st.RecvMsg(&d) // io.EOF at the end
//		...
//		d.WriteTo(w) // or d.Data's buffers one by one
//		d.Free()
//	}
//
// A bulk message is any protobuf message that carries its payload in field
// 1 as bytes (agentv1.SpeedTestData). Everything else on the call (the
// request, and messages received into a proto message rather than a
// BulkData) goes through gRPC's proto codec as usual.
//
// Data's buffers belong to the BulkData until Free; they come from gRPC's
// buffer pool, so release them as soon as the bytes are consumed: gRPC
// counts them as consumed (for flow control) when RecvMsg returns, so
// what a receiver holds on to is beyond the channel's windows. To keep
// them beyond the next receive, take them (bufs := d.Data; d.Data = nil)
// and free them (bufs.Free()) when done. A BulkData is not safe for
// concurrent use.
type BulkData struct {
	// Data is the payload, in as many buffers as gRPC received it in
	// (typically HTTP/2 frames of 16 KiB). Read it with ReadOnlyData of
	// each buffer, Len, CopyTo, Reader or WriteTo; never modify it.
	Data mem.BufferSlice
	// Rest is every field other than the payload, copied, in wire format:
	// proto.Unmarshal(d.Rest, m) decodes them into m (whose payload field
	// then stays empty). It is empty for agentv1.SpeedTestData.
	Rest []byte
}

// Len is the payload's length in bytes.
func (d *BulkData) Len() int { return d.Data.Len() }

// Free releases the payload's buffers; d is then empty and may be received
// into again. Receiving into a BulkData that still holds a payload frees
// that payload first.
func (d *BulkData) Free() {
	d.Data.Free()
	clear(d.Data)
	d.Data = d.Data[:0]
	d.Rest = d.Rest[:0]
}

// WriteTo writes the payload to w, buffer by buffer (io.WriterTo). It does
// not free the payload.
func (d *BulkData) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, b := range d.Data {
		k, err := w.Write(b.ReadOnlyData())
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// BulkCodec is gRPC's proto codec, except that it receives into a
// *BulkData without copying (see BulkData): it marshals with the proto
// codec, and unmarshals everything but a *BulkData with it. Its name is
// the proto codec's, "proto", so that the peer sees a proto call (content
// type application/grpc+proto, which a gRPC server decodes with its proto
// codec). Use it on the calls that receive bulk data (BulkCall).
type BulkCodec struct{}

var _ encoding.CodecV2 = BulkCodec{}

// protoCodec is gRPC's proto codec, registered by its package's init.
var protoCodec = encoding.GetCodecV2(grpcproto.Name)

// BulkCall is the call option of a call that receives bulk data: it uses
// BulkCodec.
func BulkCall() grpc.CallOption { return grpc.ForceCodecV2(BulkCodec{}) }

// Name is "proto", the proto codec's name.
func (BulkCodec) Name() string { return grpcproto.Name }

// Marshal is the proto codec's.
func (BulkCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

// Unmarshal decodes data into v: a *BulkData by reference (it takes its
// own references to data's buffers), anything else with the proto codec.
// It accepts exactly the messages that proto.Unmarshal accepts for a
// message whose field BulkField is bytes, with the same meaning (the last
// occurrence of the payload wins).
func (BulkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	d, ok := v.(*BulkData)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	d.Free()
	p := bulkParser{bufs: data, left: data.Len(), d: d}
	if err := p.message(); err != nil {
		d.Free()
		return err
	}
	return nil
}

// bulkParser reads a bulk message's wire format from a list of buffers,
// in place.
type bulkParser struct {
	bufs mem.BufferSlice // from the current buffer on
	off  int             // in bufs[0]
	left int             // bytes left in all of bufs
	d    *BulkData
}

func (p *bulkParser) fail(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBulkMessage, fmt.Sprintf(format, args...))
}

// message parses the whole message.
func (p *bulkParser) message() error {
	for p.left > 0 {
		num, typ, n, err := p.tag()
		if err != nil {
			return err
		}
		// proto.Unmarshal refuses field numbers beyond MaxValidNumber at
		// the top level (protowire.ConsumeTag, used for groups, does not).
		if num > protowire.MaxValidNumber {
			return p.fail("field number %d", num)
		}
		if num == BulkField && typ == protowire.BytesType {
			p.skip(n, false)
			if err := p.payload(); err != nil {
				return err
			}
			continue
		}
		// Any other field, or the payload's number with another wire type
		// (which proto.Unmarshal keeps as an unknown field): copy it.
		p.skip(n, true)
		if err := p.value(num, typ, bulkMaxDepth); err != nil {
			return err
		}
	}
	return nil
}

// payload reads the payload's length and takes references to its bytes;
// a later payload replaces an earlier one.
func (p *bulkParser) payload() error {
	v, n := protowire.ConsumeVarint(p.peek())
	if n < 0 {
		return p.fail("payload length: %v", protowire.ParseError(n))
	}
	p.skip(n, false)
	if v > uint64(p.left) {
		return p.fail("payload of %d bytes, %d left in the message", v, p.left)
	}
	p.d.Data.Free()
	clear(p.d.Data)
	p.d.Data = p.d.Data[:0]
	p.refs(int(v))
	return nil
}

// value skips (and copies to Rest) the value of a field that is not the
// payload, its tag already copied; depth bounds the nesting of groups as
// protowire.ConsumeFieldValue does.
func (p *bulkParser) value(num protowire.Number, typ protowire.Type, depth int) error {
	switch typ {
	case protowire.VarintType:
		_, n := protowire.ConsumeVarint(p.peek())
		if n < 0 {
			return p.fail("field %d: %v", num, protowire.ParseError(n))
		}
		p.skip(n, true)
	case protowire.Fixed32Type, protowire.Fixed64Type:
		n := 4
		if typ == protowire.Fixed64Type {
			n = 8
		}
		if p.left < n {
			return p.fail("field %d: %v", num, io.ErrUnexpectedEOF)
		}
		p.skip(n, true)
	case protowire.BytesType:
		v, n := protowire.ConsumeVarint(p.peek())
		if n < 0 {
			return p.fail("field %d: %v", num, protowire.ParseError(n))
		}
		if v > uint64(p.left-n) {
			return p.fail("field %d: %v", num, io.ErrUnexpectedEOF)
		}
		p.skip(n+int(v), true)
	case protowire.StartGroupType:
		if depth < 0 {
			return p.fail("field %d: groups nested too deep", num)
		}
		for {
			num2, typ2, n, err := p.tag()
			if err != nil {
				return err
			}
			p.skip(n, true)
			if typ2 == protowire.EndGroupType {
				if num2 != num {
					return p.fail("group %d ends with field %d", num, num2)
				}
				return nil
			}
			if err := p.value(num2, typ2, depth-1); err != nil {
				return err
			}
		}
	case protowire.EndGroupType:
		return p.fail("field %d: end of a group that did not start", num)
	default:
		return p.fail("field %d: wire type %d", num, typ)
	}
	return nil
}

// tag parses the next tag without consuming it, and returns its length.
func (p *bulkParser) tag() (protowire.Number, protowire.Type, int, error) {
	num, typ, n := protowire.ConsumeTag(p.peek())
	if n < 0 {
		return 0, 0, 0, p.fail("tag: %v", protowire.ParseError(n))
	}
	return num, typ, n, nil
}

// peek returns up to the next 10 bytes (the longest varint), from the
// current buffer if it holds them, else gathered from the next ones.
func (p *bulkParser) peek() []byte {
	const maxVarint = 10
	if len(p.bufs) == 0 {
		return nil
	}
	if b := p.bufs[0].ReadOnlyData()[p.off:]; len(b) >= maxVarint || len(b) == p.left {
		return b
	}
	var tmp [maxVarint]byte
	out := tmp[:0]
	off := p.off
	for _, buf := range p.bufs {
		b := buf.ReadOnlyData()[off:]
		off = 0
		out = append(out, b[:min(len(b), maxVarint-len(out))]...)
		if len(out) == maxVarint {
			break
		}
	}
	return out
}

// skip consumes n bytes (n <= p.left), appending them to Rest if keep.
func (p *bulkParser) skip(n int, keep bool) {
	p.left -= n
	for n > 0 {
		b := p.bufs[0].ReadOnlyData()[p.off:]
		k := min(n, len(b))
		if keep {
			p.d.Rest = append(p.d.Rest, b[:k]...)
		}
		n -= k
		p.advance(k, len(b))
	}
	p.next()
}

// refs consumes n bytes (n <= p.left), appending references to them to
// Data: a whole buffer by a reference to it, a part of one by a buffer of
// its own that holds a reference to it.
func (p *bulkParser) refs(n int) {
	p.left -= n
	for n > 0 {
		buf := p.bufs[0]
		b := buf.ReadOnlyData()[p.off:]
		k := min(n, len(b))
		switch sb, isSlice := buf.(mem.SliceBuffer); {
		case k == 0:
		case isSlice: // not reference counted
			p.d.Data = append(p.d.Data, sb[p.off:p.off+k:p.off+k])
		case p.off == 0 && k == len(b):
			buf.Ref()
			p.d.Data = append(p.d.Data, buf)
		case mem.IsBelowBufferPoolingThreshold(k):
			// Small: a copy is cheaper than a reference.
			p.d.Data = append(p.d.Data, mem.SliceBuffer(append([]byte(nil), b[:k]...)))
		default:
			p.d.Data = append(p.d.Data, subBuffer(buf, b[:k:k]))
		}
		n -= k
		p.advance(k, len(b))
	}
	p.next()
}

// advance moves k bytes on in the current buffer, which had n left.
func (p *bulkParser) advance(k, n int) {
	if k < n {
		p.off += k
		return
	}
	p.bufs, p.off = p.bufs[1:], 0
}

// next drops empty buffers at the front.
func (p *bulkParser) next() {
	for len(p.bufs) > 0 && p.off == len(p.bufs[0].ReadOnlyData()) {
		p.bufs, p.off = p.bufs[1:], 0
	}
}

// subBuffer returns a buffer of b, a part of buf (longer than mem's pooling
// threshold), that holds a reference to buf and frees it when freed
// itself. mem.SplitUnsafe would change buf, which gRPC still holds.
func subBuffer(buf mem.Buffer, b []byte) mem.Buffer {
	buf.Ref()
	r := &subRef{buf: buf, data: b}
	return mem.NewBuffer(&r.data, r)
}

// subRef is the "pool" of a part of another buffer: returning the part to
// it frees the reference to the whole.
type subRef struct {
	buf  mem.Buffer
	data []byte
}

// Get is never called by mem (which only puts a buffer back); it is here
// to be a mem.BufferPool.
func (*subRef) Get(n int) *[]byte {
	b := make([]byte, n)
	return &b
}

func (r *subRef) Put(*[]byte) {
	r.buf.Free()
	r.buf, r.data = nil, nil
}
