package channel_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/pairing/identity"
)

// countingPool is a mem.BufferPool that counts the buffers taken from it
// and not yet put back. Its buffers have room for more than mem's pooling
// threshold, so that mem.NewBuffer makes reference-counted buffers of them
// even when they are short.
type countingPool struct{ out atomic.Int64 }

func (p *countingPool) Get(n int) *[]byte {
	p.out.Add(1)
	b := make([]byte, n, max(n, 2048))
	return &b
}

func (p *countingPool) Put(*[]byte) { p.out.Add(-1) }

// split copies msg into buffers of the given sizes (the last one takes the
// rest), reference-counted from pool if pool is not nil, else SliceBuffers.
func split(msg []byte, sizes []int, pool *countingPool) mem.BufferSlice {
	var out mem.BufferSlice
	add := func(b []byte) {
		if pool == nil {
			out = append(out, mem.SliceBuffer(bytes.Clone(b)))
			return
		}
		buf := pool.Get(len(b))
		copy(*buf, b)
		out = append(out, mem.NewBuffer(buf, pool))
	}
	for _, n := range sizes {
		n = min(n, len(msg))
		add(msg[:n])
		msg = msg[n:]
	}
	add(msg)
	return out
}

// unmarshal runs the codec as gRPC does: it frees data right after.
func unmarshal(data mem.BufferSlice, d *channel.BulkData) error {
	err := channel.BulkCodec{}.Unmarshal(data, d)
	data.Free()
	return err
}

// pattern is n bytes that differ from their neighbours.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// otherFields is one field of every wire type but the payload's, a group
// holding a field numbered like the payload among them.
func otherFields() []byte {
	var b []byte
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, 1<<40)
	b = protowire.AppendTag(b, 3, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 0xdeadbeef)
	b = protowire.AppendTag(b, 4, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 0x0123456789abcdef)
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("metadata"))
	b = protowire.AppendTag(b, 6, protowire.StartGroupType)
	b = protowire.AppendTag(b, 1, protowire.BytesType) // inside the group: not the payload
	b = protowire.AppendBytes(b, []byte("in group"))
	b = protowire.AppendTag(b, 7, protowire.StartGroupType)
	b = protowire.AppendTag(b, 7, protowire.EndGroupType)
	b = protowire.AppendTag(b, 6, protowire.EndGroupType)
	b = protowire.AppendTag(b, 1, protowire.VarintType) // the payload's number, another type
	b = protowire.AppendVarint(b, 3)
	return b
}

// check decodes msg split as given and compares it with proto.Unmarshal.
func check(t *testing.T, msg []byte, sizes []int, pooled bool) {
	t.Helper()
	var pool *countingPool
	if pooled {
		pool = new(countingPool)
	}
	var want agentv1.SpeedTestData
	werr := proto.Unmarshal(msg, &want)
	var d channel.BulkData
	gerr := unmarshal(split(msg, sizes, pool), &d)
	defer func() {
		d.Free()
		if pool != nil {
			if n := pool.out.Load(); n != 0 {
				t.Errorf("split %v: %d buffers not freed", sizes, n)
			}
		}
	}()
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("split %v of %x: BulkCodec: %v; proto.Unmarshal: %v", sizes, msg, gerr, werr)
	}
	if gerr != nil {
		if !errors.Is(gerr, channel.ErrBulkMessage) {
			t.Errorf("error %v does not wrap ErrBulkMessage", gerr)
		}
		if len(d.Data) != 0 || len(d.Rest) != 0 {
			t.Errorf("failed decode left %d buffers, %d bytes of other fields", len(d.Data), len(d.Rest))
		}
		return
	}
	if d.Len() != len(want.GetData()) || !bytes.Equal(d.Data.Materialize(), want.GetData()) {
		t.Fatalf("split %v: payload of %d bytes differs from proto.Unmarshal's %d", sizes, d.Len(), len(want.GetData()))
	}
	var rest agentv1.SpeedTestData
	if err := proto.Unmarshal(d.Rest, &rest); err != nil {
		t.Fatalf("split %v: other fields: %v", sizes, err)
	}
	if len(rest.GetData()) != 0 {
		t.Fatalf("split %v: other fields hold a payload", sizes)
	}
	rest.Data = want.Data
	if !proto.Equal(&rest, &want) {
		t.Fatalf("split %v: other fields %x differ from proto.Unmarshal's unknown fields %x",
			sizes, d.Rest, want.ProtoReflect().GetUnknown())
	}
}

func bulkMessage(payload, before, after []byte) []byte {
	m := bytes.Clone(before)
	m = protowire.AppendTag(m, channel.BulkField, protowire.BytesType)
	m = protowire.AppendBytes(m, payload)
	return append(m, after...)
}

func TestBulkCodecSplitAtEveryOffset(t *testing.T) {
	other := otherFields()
	msgs := map[string][]byte{
		"payload only":      bulkMessage(pattern(3000), nil, nil),
		"fields around":     bulkMessage(pattern(3000), other, other),
		"short payload":     bulkMessage(pattern(5), other, nil),
		"empty payload":     bulkMessage(nil, nil, other),
		"no payload":        other,
		"empty":             nil,
		"two payloads":      bulkMessage(pattern(1500), nil, bulkMessage(pattern(2500)[7:], other, nil)),
		"SpeedTestData":     mustMarshal(t, &agentv1.SpeedTestData{Data: pattern(70000)}),
		"long varint start": append([]byte{0x8a, 0x80, 0x00, 0x03}, 'a', 'b', 'c'), // tag and length not minimal
	}
	for name, msg := range msgs {
		t.Run(name, func(t *testing.T) {
			step := 1
			if len(msg) > 5000 {
				step = 97
			}
			for _, pooled := range []bool{true, false} {
				for i := 0; i <= len(msg); i += step {
					check(t, msg, []int{i}, pooled)                // two buffers
					check(t, msg, []int{i, 0, 1, 0, 1024}, pooled) // with empty ones and small ones
				}
				for _, n := range []int{1, 2, 3, 10, 1025, 16384} { // buffers of n bytes
					var sizes []int
					for range len(msg) / n {
						sizes = append(sizes, n)
					}
					check(t, msg, sizes, pooled)
				}
			}
		})
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBulkCodecMalformed(t *testing.T) {
	tag := func(n protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, n, typ) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	overflow := bytes.Repeat([]byte{0xff}, 9)
	overflow = append(overflow, 0x02)
	bad := map[string][]byte{
		"truncated payload":       bulkMessage(pattern(100), nil, nil)[:50],
		"payload length overflow": cat(tag(1, protowire.BytesType), overflow),
		"payload length cut":      cat(tag(1, protowire.BytesType), []byte{0x80, 0x80}),
		"tag overflow":            overflow,
		"tag cut":                 {0x80},
		"field 0":                 cat(tag(0, protowire.VarintType), []byte{1}),
		"field beyond max":        cat(tag(protowire.MaxValidNumber+1, protowire.VarintType), []byte{1}),
		"varint overflow":         cat(tag(2, protowire.VarintType), overflow),
		"varint cut":              cat(tag(2, protowire.VarintType), []byte{0x80}),
		"fixed32 cut":             cat(tag(2, protowire.Fixed32Type), []byte{1, 2, 3}),
		"fixed64 cut":             cat(tag(2, protowire.Fixed64Type), []byte{1, 2, 3, 4, 5, 6, 7}),
		"bytes cut":               cat(tag(2, protowire.BytesType), []byte{5, 1, 2}),
		"end group alone":         tag(2, protowire.EndGroupType),
		"group not ended":         cat(tag(2, protowire.StartGroupType), tag(3, protowire.VarintType), []byte{1}),
		"group ends wrong":        cat(tag(2, protowire.StartGroupType), tag(3, protowire.EndGroupType)),
		"wire type 6":             tag(2, 6),
		"wire type 7":             tag(1, 7),
		"bad after payload":       cat(bulkMessage(pattern(2000), nil, nil), []byte{0x80}),
	}
	for name, msg := range bad {
		t.Run(name, func(t *testing.T) {
			if err := proto.Unmarshal(msg, new(agentv1.SpeedTestData)); err == nil {
				t.Fatalf("proto.Unmarshal accepts %x", msg)
			}
			for i := 0; i <= len(msg); i++ {
				check(t, msg, []int{i}, true)
			}
		})
	}
}

func TestBulkCodecReuse(t *testing.T) {
	pool := new(countingPool)
	var d channel.BulkData
	for i, n := range []int{5000, 20, 0, 40000} {
		msg := bulkMessage(pattern(n), nil, otherFields())
		if err := unmarshal(split(msg, []int{3, 1500, 16384}, pool), &d); err != nil {
			t.Fatal(err)
		}
		// Received into again without Free: the codec frees the last payload.
		if !bytes.Equal(d.Data.Materialize(), pattern(n)) || !bytes.Equal(d.Rest, otherFields()) {
			t.Fatalf("message %d: wrong payload or other fields", i)
		}
		var w bytes.Buffer
		if k, err := d.WriteTo(&w); err != nil || k != int64(n) || !bytes.Equal(w.Bytes(), pattern(n)) {
			t.Fatalf("message %d: WriteTo: %d, %v", i, k, err)
		}
	}
	if pool.out.Load() == 0 {
		t.Fatal("payload freed before BulkData.Free")
	}
	d.Free()
	if n := pool.out.Load(); n != 0 {
		t.Fatalf("%d buffers not freed", n)
	}

	// Taken buffers outlive the BulkData.
	if err := unmarshal(split(bulkMessage(pattern(3000), nil, nil), []int{100}, pool), &d); err != nil {
		t.Fatal(err)
	}
	bufs := d.Data
	d.Data = nil
	d.Free()
	if err := unmarshal(split(bulkMessage(pattern(10), nil, nil), nil, pool), &d); err != nil {
		t.Fatal(err)
	}
	d.Free()
	if !bytes.Equal(bufs.Materialize(), pattern(3000)) {
		t.Fatal("taken payload changed")
	}
	bufs.Free()
	if n := pool.out.Load(); n != 0 {
		t.Fatalf("%d buffers not freed", n)
	}
}

func TestBulkCodecIsProtoForOtherTypes(t *testing.T) {
	var c channel.BulkCodec
	if c.Name() != "proto" {
		t.Fatalf("Name %q, want proto", c.Name())
	}
	in := &agentv1.SpeedTestData{Data: pattern(5000)}
	out, err := c.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Free()
	if !bytes.Equal(out.Materialize(), mustMarshal(t, in)) {
		t.Fatal("Marshal differs from proto.Marshal")
	}
	var m agentv1.SpeedTestData
	if err := c.Unmarshal(out, &m); err != nil || !proto.Equal(&m, in) {
		t.Fatalf("Unmarshal into a proto message: %v", err)
	}
	if err := c.Unmarshal(out, 42); err == nil {
		t.Fatal("Unmarshal into an int succeeded")
	}
}

// FuzzBulkCodec checks that BulkCodec decodes any input, split anyhow, as
// proto.Unmarshal decodes it into a SpeedTestData.
func FuzzBulkCodec(f *testing.F) {
	f.Add(bulkMessage(pattern(3000), nil, nil), []byte{0, 200, 1})
	f.Add(bulkMessage(pattern(40), otherFields(), otherFields()), []byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add(otherFields(), []byte{})
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, []byte{3})
	f.Fuzz(func(t *testing.T, msg, cuts []byte) {
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c) % 40
			if c >= 250 {
				sizes[i] = 1500 // beyond mem's pooling threshold
			}
		}
		check(t, msg, sizes, len(cuts)%2 == 0)
	})
}

// TestBulkCallOverChannel runs SpeedTest (patterned data in messages of
// various sizes) and Ping through a session with BulkCall.
func TestBulkCallOverChannel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, stop := startPatternAgent(ctx, t)
	defer stop()

	for _, c := range []struct{ size, total int }{
		{1, 3000}, {1000, 300000}, {16 << 10, 1<<20 + 3}, {1<<20 - 1<<10, 7<<20 + 12345}, {3 << 20, 7<<20 + 12345},
	} {
		size, total := c.size, c.total
		st, err := client.SpeedTest(ctx, &agentv1.SpeedTestRequest{Bytes: uint64(total), MessageSize: uint32(size)}, channel.BulkCall())
		if err != nil {
			t.Fatal(err)
		}
		var d channel.BulkData
		var got int
		for {
			err := st.RecvMsg(&d)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("size %d: after %d bytes: %v", size, got, err)
			}
			if want := min(size, total-got); d.Len() != want || !bytes.Equal(d.Data.Materialize(), patternAt(got, want)) {
				t.Fatalf("size %d: message at %d: %d bytes, want %d of the pattern", size, got, d.Len(), want)
			}
			got += d.Len()
			d.Free()
		}
		if got != total {
			t.Fatalf("size %d: %d bytes, want %d", size, got, total)
		}
	}
	// The codec is proto for anything but a BulkData.
	if _, err := client.Ping(ctx, &agentv1.PingRequest{SentUnixNano: 1}, channel.BulkCall()); err != nil {
		t.Fatal(err)
	}
	st, err := client.SpeedTest(ctx, &agentv1.SpeedTestRequest{Bytes: 3000, MessageSize: 1000}, channel.BulkCall())
	if err != nil {
		t.Fatal(err)
	}
	var m agentv1.SpeedTestData
	if err := st.RecvMsg(&m); err != nil || !bytes.Equal(m.GetData(), patternAt(0, 1000)) {
		t.Fatalf("SpeedTestData by proto: %v", err)
	}
}

func patternAt(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((off + i) * 13 >> 3)
	}
	return b
}

// patternAgent serves SpeedTest with patternAt's bytes.
type patternAgent struct {
	agentv1.UnimplementedAgentServiceServer
}

func (patternAgent) Ping(_ context.Context, req *agentv1.PingRequest) (*agentv1.PingResponse, error) {
	return &agentv1.PingResponse{SentUnixNano: req.GetSentUnixNano()}, nil
}

func (patternAgent) SpeedTest(req *agentv1.SpeedTestRequest, stream grpc.ServerStreamingServer[agentv1.SpeedTestData]) error {
	size := int(req.GetMessageSize())
	for off := 0; off < int(req.GetBytes()); off += size {
		if err := stream.Send(&agentv1.SpeedTestData{Data: patternAt(off, min(size, int(req.GetBytes())-off))}); err != nil {
			return err
		}
	}
	return nil
}

// startPatternAgent connects to a patternAgent through a direct-mode
// session on loopback.
func startPatternAgent(ctx context.Context, t *testing.T) (agentv1.AgentServiceClient, func()) {
	t.Helper()
	app, err := identity.New("test-appliance")
	if err != nil {
		t.Fatal(err)
	}
	agent, err := identity.New("test-agent")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		raw, err := ln.Accept()
		ln.Close()
		if err != nil {
			served <- err
			return
		}
		s, err := channel.AcceptAppliance(ctx, raw, agent, identity.Pinned(app.Fingerprint()), 0, nil)
		if err != nil {
			served <- err
			return
		}
		srv := grpc.NewServer(channel.ServerOptions()...)
		agentv1.RegisterAgentServiceServer(srv, patternAgent{})
		served <- s.Serve(srv)
	}()
	s, err := channel.DialAgent(ctx, ln.Addr().String(), app, identity.Pinned(agent.Fingerprint()), nil)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := s.ClientConn()
	if err != nil {
		t.Fatal(err)
	}
	return agentv1.NewAgentServiceClient(cc), func() {
		cc.Close()
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
}
