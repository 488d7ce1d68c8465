package nbd

// Test fixtures: a server on 127.0.0.1, a deterministic volume image with
// data and zero regions, and a minimal raw-protocol client for the cases
// real clients never produce. No test sleeps to synchronise: each waits on
// a channel, a log record or the server closing the connection, with a
// bounded deadline.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/logtest"
)

// waitTimeout bounds every wait for something that should happen.
const waitTimeout = logtest.Timeout

// testImage makes a deterministic image of size bytes: random data with
// zero regions in it (the second quarter and most of the last), so copies
// that detect zeroes are exercised too.
func testImage(size int) []byte {
	img := make([]byte, size)
	rng := rand.New(rand.NewChaCha8([32]byte{'c', 'a', 'i', 'r', 'n'}))
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	clear(img[size/4 : size/2])
	clear(img[3*size/4 : size-1000])
	return img
}

// export makes an export of img.
func export(name string, img []byte) Export {
	return Export{Name: name, Description: "test volume " + name, Size: int64(len(img)), Data: bytes.NewReader(img)}
}

// testServer is a Server serving on 127.0.0.1 until the test ends.
type testServer struct {
	*Server
	addr   string
	logs   *logtest.Sink
	cancel context.CancelFunc
	done   chan error // Serve's result
}

// startServer serves exports on a new 127.0.0.1 listener; the test's
// cleanup stops it and checks that Serve returned nil.
func startServer(t *testing.T, cfg Config, exports ...Export) *testServer {
	t.Helper()
	logs := logtest.NewSink(t, "nbd")
	cfg.Logger = logs.Logger()
	s, err := New(cfg, exports...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, addr: ln.Addr().String(), logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Serve did not return within %s of its context ending", waitTimeout)
		}
	})
	return ts
}

// client speaks the raw protocol; every failure is fatal to the test.
type client struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

// dial connects to addr; the connection is closed when the test ends and
// every read and write on it gives up after waitTimeout.
func dial(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if err := nc.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	return &client{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *client) send(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *client) recv(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		c.t.Fatalf("receive %d bytes: %v", n, err)
	}
	return b
}

// greeting reads the server's greeting and checks it.
func (c *client) greeting() {
	c.t.Helper()
	b := c.recv(18)
	if m := binary.BigEndian.Uint64(b); m != magicNBD {
		c.t.Fatalf("greeting magic %#x, want NBDMAGIC", m)
	}
	if m := binary.BigEndian.Uint64(b[8:]); m != magicOpt {
		c.t.Fatalf("greeting option magic %#x, want IHAVEOPT", m)
	}
	if f := binary.BigEndian.Uint16(b[16:]); f != flagFixedNewstyle|flagNoZeroes {
		c.t.Fatalf("handshake flags %#x, want FIXED_NEWSTYLE|NO_ZEROES", f)
	}
}

// greet reads the greeting and answers with client flags.
func (c *client) greet(flags uint32) {
	c.t.Helper()
	c.greeting()
	c.send(binary.BigEndian.AppendUint32(nil, flags))
}

// option sends an option request.
func (c *client) option(opt uint32, data []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.send(append(b, data...))
}

// reply reads one option reply to opt and returns its type and data.
func (c *client) reply(opt uint32) (uint32, []byte) {
	c.t.Helper()
	h := c.recv(20)
	if m := binary.BigEndian.Uint64(h); m != magicOptReply {
		c.t.Fatalf("option reply magic %#x", m)
	}
	if o := binary.BigEndian.Uint32(h[8:]); o != opt {
		c.t.Fatalf("reply to option %d, want %d", o, opt)
	}
	typ, n := binary.BigEndian.Uint32(h[12:]), binary.BigEndian.Uint32(h[16:])
	if n > 1<<16 {
		c.t.Fatalf("option reply of %d bytes", n)
	}
	return typ, c.recv(int(n))
}

// infoData is the data of NBD_OPT_INFO and NBD_OPT_GO.
func infoData(name string, reqs ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(reqs)))
	for _, r := range reqs {
		b = binary.BigEndian.AppendUint16(b, r)
	}
	return b
}

// info sends NBD_OPT_INFO or NBD_OPT_GO and reads the replies up to the
// final one: it returns the NBD_REP_INFO data by information type, and the
// final reply's type.
func (c *client) info(opt uint32, name string, reqs ...uint16) (map[uint16][]byte, uint32) {
	c.t.Helper()
	c.option(opt, infoData(name, reqs...))
	infos := make(map[uint16][]byte)
	for range 16 {
		typ, data := c.reply(opt)
		if typ != repInfo {
			return infos, typ
		}
		if len(data) < 2 {
			c.t.Fatalf("NBD_REP_INFO of %d bytes", len(data))
		}
		it := binary.BigEndian.Uint16(data)
		if _, dup := infos[it]; dup {
			c.t.Fatalf("information type %d sent twice", it)
		}
		infos[it] = data[2:]
	}
	c.t.Fatal("more than 16 replies to one option")
	return nil, 0
}

// attach greets the server and enters transmission with NBD_OPT_GO on
// export name, returning its size and transmission flags.
func (c *client) attach(name string) (uint64, uint16) {
	c.t.Helper()
	c.greet(cflagFixedNewstyle | cflagNoZeroes)
	return c.goExport(name)
}

// goExport enters transmission with NBD_OPT_GO on export name, returning
// its size and transmission flags.
func (c *client) goExport(name string) (uint64, uint16) {
	c.t.Helper()
	infos, final := c.info(optGo, name)
	if final != repAck {
		c.t.Fatalf("NBD_OPT_GO %q: reply %#x, want NBD_REP_ACK", name, final)
	}
	e := infos[infoExport]
	if len(e) != 10 {
		c.t.Fatalf("NBD_INFO_EXPORT of %d bytes, want 10", len(e))
	}
	return binary.BigEndian.Uint64(e), binary.BigEndian.Uint16(e[8:])
}

// request sends a transmission request.
func (c *client) request(typ uint16, handle, off uint64, n uint32, payload []byte) {
	c.t.Helper()
	c.send(append(requestHeader(typ, handle, off, n), payload...))
}

// requestHeader is a transmission request's header.
func requestHeader(typ uint16, handle, off uint64, n uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicRequest)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, n)
}

// simpleReply reads a simple reply to handle and returns its error; a
// successful read's reply has n bytes of data, returned too.
func (c *client) simpleReply(handle uint64, n int) (uint32, []byte) {
	c.t.Helper()
	h := c.recv(16)
	if m := binary.BigEndian.Uint32(h); m != magicSimpleReply {
		c.t.Fatalf("reply magic %#x", m)
	}
	if got := binary.BigEndian.Uint64(h[8:]); got != handle {
		c.t.Fatalf("reply to handle %d, want %d", got, handle)
	}
	errno := binary.BigEndian.Uint32(h[4:])
	if errno != 0 || n == 0 {
		return errno, nil
	}
	return 0, c.recv(n)
}

// read reads n bytes at off and returns the reply's error and data.
func (c *client) read(handle, off uint64, n uint32) (uint32, []byte) {
	c.t.Helper()
	c.request(cmdRead, handle, off, n, nil)
	return c.simpleReply(handle, int(n))
}

// closed waits for the server to close the connection, discarding what it
// sends until then, and fails the test if it has not within waitTimeout.
func (c *client) closed() {
	c.t.Helper()
	_, err := io.Copy(io.Discard, c.r)
	// A server that closes with our bytes unread makes the kernel reset
	// the connection: closed all the same.
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("waiting for the server to close the connection: %v", err)
	}
}
