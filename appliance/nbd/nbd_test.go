package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/logtest"
)

func TestNewValidatesExports(t *testing.T) {
	data := bytes.NewReader(nil)
	ok := Export{Name: "disk", Size: 0, Data: data}
	tests := []struct {
		name    string
		exports []Export
		want    string // in the error; "" for none
	}{
		{"one", []Export{ok}, ""},
		{"two", []Export{ok, {Name: "other", Size: 1, Data: data}}, ""},
		{"longest name", []Export{{Name: strings.Repeat("n", 4096), Data: data}}, ""},
		{"none", nil, "no exports"},
		{"empty name", []Export{{Data: data}}, "empty"},
		{"long name", []Export{{Name: strings.Repeat("n", 4097), Data: data}}, "more than 4096"},
		{"name not UTF-8", []Export{{Name: "\xff", Data: data}}, "not UTF-8"},
		{"name with NUL", []Export{{Name: "a\x00b", Data: data}}, "NUL"},
		{"long description", []Export{{Name: "d", Description: strings.Repeat("d", 4097), Data: data}}, "description"},
		{"negative size", []Export{{Name: "d", Size: -1, Data: data}}, "negative size"},
		{"no data", []Export{{Name: "d"}}, "no data"},
		{"duplicate", []Export{ok, ok}, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{}, tt.exports...)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("New: error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestInfo(t *testing.T) {
	img := testImage(1 << 20)
	ts := startServer(t, Config{}, export("disk", img))
	c := dial(t, ts.addr)
	c.greet(cflagFixedNewstyle | cflagNoZeroes)

	infos, final := c.info(optInfo, "disk")
	if final != repAck {
		t.Fatalf("NBD_OPT_INFO: final reply %#x, want NBD_REP_ACK", final)
	}
	if len(infos) != 1 {
		t.Errorf("NBD_OPT_INFO without requests: %d information replies, want only NBD_INFO_EXPORT", len(infos))
	}
	e := infos[infoExport]
	if len(e) != 10 {
		t.Fatalf("NBD_INFO_EXPORT of %d bytes, want 10", len(e))
	}
	if size := binary.BigEndian.Uint64(e); size != uint64(len(img)) {
		t.Errorf("size %d, want %d", size, len(img))
	}
	if f := binary.BigEndian.Uint16(e[8:]); f != tflagHasFlags|tflagReadOnly|tflagCanMultiConn {
		t.Errorf("transmission flags %#x, want HAS_FLAGS|READ_ONLY|CAN_MULTI_CONN", f)
	}

	infos, final = c.info(optInfo, "disk", infoBlockSize, infoName, infoDescription, 999, infoBlockSize)
	if final != repAck {
		t.Fatalf("NBD_OPT_INFO with requests: final reply %#x, want NBD_REP_ACK", final)
	}
	bs := infos[infoBlockSize]
	if len(bs) != 12 {
		t.Fatalf("NBD_INFO_BLOCK_SIZE of %d bytes, want 12", len(bs))
	}
	if minB, pref, maxB := binary.BigEndian.Uint32(bs), binary.BigEndian.Uint32(bs[4:]), binary.BigEndian.Uint32(bs[8:]); minB != 1 || pref != 4096 || maxB != 32<<20 {
		t.Errorf("block sizes %d/%d/%d, want 1/4096/%d", minB, pref, maxB, 32<<20)
	}
	if got := string(infos[infoName]); got != "disk" {
		t.Errorf("NBD_INFO_NAME %q, want %q", got, "disk")
	}
	if got := string(infos[infoDescription]); got != "test volume disk" {
		t.Errorf("NBD_INFO_DESCRIPTION %q", got)
	}
	if len(infos) != 4 {
		t.Errorf("%d information replies, want 4 (unknown type ignored, duplicate answered once)", len(infos))
	}

	// INFO does not end the handshake: GO on the same connection does.
	infos, final = c.info(optGo, "disk")
	if final != repAck || len(infos[infoExport]) != 10 {
		t.Fatalf("NBD_OPT_GO after NBD_OPT_INFO: final %#x, infos %v", final, infos)
	}
	if errno, got := c.read(1, 1000, 100); errno != 0 || !bytes.Equal(got, img[1000:1100]) {
		t.Fatalf("read after GO: errno %d, data equal: %v", errno, bytes.Equal(got, img[1000:1100]))
	}
}

func TestList(t *testing.T) {
	ts := startServer(t, Config{}, export("a", []byte("a")), Export{Name: "b", Size: 0, Data: bytes.NewReader(nil)})
	c := dial(t, ts.addr)
	c.greet(cflagFixedNewstyle)
	c.option(optList, nil)
	type entry struct{ name, desc string }
	var got []entry
	for range 3 {
		typ, data := c.reply(optList)
		if typ == repAck {
			break
		}
		if typ != repServer || len(data) < 4 {
			t.Fatalf("NBD_OPT_LIST reply %#x of %d bytes", typ, len(data))
		}
		n := binary.BigEndian.Uint32(data)
		if int(n) > len(data)-4 {
			t.Fatalf("NBD_REP_SERVER name length %d in %d bytes", n, len(data))
		}
		got = append(got, entry{string(data[4 : 4+n]), string(data[4+n:])})
	}
	want := []entry{{"a", "test volume a"}, {"b", ""}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("NBD_OPT_LIST: %q, want %q", got, want)
	}
	// LIST takes no data.
	c.option(optList, []byte("x"))
	if typ, _ := c.reply(optList); typ != repErrInvalid {
		t.Errorf("NBD_OPT_LIST with data: reply %#x, want NBD_REP_ERR_INVALID", typ)
	}
}

// TestOptionErrors checks the options the server refuses with an error
// reply: each leaves the handshake going, so one connection tries them all
// and then attaches.
func TestOptionErrors(t *testing.T) {
	ts := startServer(t, Config{}, export("disk", []byte("data")))
	c := dial(t, ts.addr)
	c.greet(cflagFixedNewstyle | cflagNoZeroes)
	tests := []struct {
		name string
		opt  uint32
		data []byte
		want uint32
	}{
		{"structured reply", optStructuredReply, nil, repErrUnsup},
		{"starttls", optStartTLS, nil, repErrUnsup},
		{"list meta context", 9, infoData("disk"), repErrUnsup},
		{"unknown option", 0xdead, []byte("whatever"), repErrUnsup},
		{"info unknown export", optInfo, infoData("nope"), repErrUnknown},
		{"go unknown export", optGo, infoData("nope", infoBlockSize), repErrUnknown},
		{"go empty name", optGo, infoData(""), repErrUnknown},
		{"info too short", optInfo, []byte{0, 0, 0}, repErrInvalid},
		{"info name past the end", optInfo, []byte{0, 0, 0, 9, 'd', 0, 0}, repErrInvalid},
		{"info count past the end", optInfo, []byte{0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 1}, repErrInvalid},
		{"info trailing bytes", optInfo, append(infoData("disk"), 0), repErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.option(tt.opt, tt.data)
			typ, _ := c.reply(tt.opt)
			if typ != tt.want {
				t.Errorf("reply %#x, want %#x", typ, tt.want)
			}
		})
	}
	c.t = t
	if size, _ := c.goExport("disk"); size != 4 {
		t.Fatalf("size %d after the refused options, want 4", size)
	}
}

func TestExportName(t *testing.T) {
	img := testImage(8192)
	ts := startServer(t, Config{}, export("disk", img))
	for _, noZeroes := range []bool{true, false} {
		c := dial(t, ts.addr)
		flags := uint32(cflagFixedNewstyle)
		if noZeroes {
			flags |= cflagNoZeroes
		}
		c.greet(flags)
		c.option(optExportName, []byte("disk"))
		b := c.recv(10)
		if size, f := binary.BigEndian.Uint64(b), binary.BigEndian.Uint16(b[8:]); size != 8192 || f != transmissionFlags {
			t.Fatalf("NBD_OPT_EXPORT_NAME: size %d flags %#x", size, f)
		}
		if !noZeroes {
			if z := c.recv(124); !bytes.Equal(z, make([]byte, 124)) {
				t.Fatal("124 bytes of padding are not zero")
			}
		}
		if errno, got := c.read(7, 4000, 300); errno != 0 || !bytes.Equal(got, img[4000:4300]) {
			t.Fatalf("no zeroes %v: read: errno %d", noZeroes, errno)
		}
	}
}

func TestAbort(t *testing.T) {
	ts := startServer(t, Config{}, export("disk", []byte("data")))
	c := dial(t, ts.addr)
	c.greet(cflagFixedNewstyle)
	c.option(optAbort, nil)
	if typ, _ := c.reply(optAbort); typ != repAck {
		t.Fatalf("NBD_OPT_ABORT: reply %#x, want NBD_REP_ACK", typ)
	}
	c.closed()
	if r := ts.logs.Wait(t, "connection end", func(r logtest.Record) bool { return strings.HasPrefix(r.Msg, "nbd connection") }); r.Msg != "nbd connection closed" {
		t.Errorf("aborted connection logged as %s", r)
	}
}

func TestRead(t *testing.T) {
	const size = 3<<20 + 12345
	img := testImage(size)
	ts := startServer(t, Config{}, export("disk", img), Export{Name: "empty", Data: bytes.NewReader(nil)})
	c := dial(t, ts.addr)
	if got, _ := c.attach("disk"); got != size {
		t.Fatalf("size %d, want %d", got, size)
	}
	tests := []struct {
		name   string
		off    uint64
		n      uint32
		errno  uint32
		inData bool
	}{
		{"first byte", 0, 1, 0, true},
		{"last byte", size - 1, 1, 0, true},
		{"whole image", 0, size, 0, true},
		{"across data and zeroes", size/4 - 100, 200, 0, true},
		{"unaligned in zeroes", size/4 + 3, 65537, 0, true},
		{"zero length at the end", size, 0, 0, true},
		{"largest read", 0, 32 << 20, errInval, false}, // past the end here
		{"one past the end", size, 1, errInval, false},
		{"straddling the end", size - 10, 11, errInval, false},
		{"far past the end", 1 << 40, 512, errInval, false},
		{"offset overflowing", math.MaxUint64 - 10, 512, errInval, false},
		{"over 32 MiB", 0, 32<<20 + 1, errInval, false},
		{"4 GiB", 0, math.MaxUint32, errInval, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			handle := uint64(i) << 32
			errno, got := c.read(handle, tt.off, tt.n)
			if errno != tt.errno {
				t.Fatalf("error %d, want %d", errno, tt.errno)
			}
			if tt.inData && !bytes.Equal(got, img[tt.off:tt.off+uint64(tt.n)]) {
				t.Fatalf("data differs from the image")
			}
		})
	}
	c.t = t

	// A 32 MiB read is allowed where the export is that large.
	big := testImage(32 << 20)
	ts = startServer(t, Config{}, export("big", big))
	c = dial(t, ts.addr)
	c.attach("big")
	if errno, got := c.read(1, 0, 32<<20); errno != 0 || !bytes.Equal(got, big) {
		t.Fatalf("32 MiB read: error %d", errno)
	}
}

func TestWritesRefused(t *testing.T) {
	img := testImage(1 << 16)
	ts := startServer(t, Config{}, export("disk", img))
	c := dial(t, ts.addr)
	c.attach("disk")
	payload := bytes.Repeat([]byte{0xee}, 5000)
	tests := []struct {
		name    string
		typ     uint16
		n       uint32
		payload []byte
		errno   uint32
	}{
		{"write", cmdWrite, uint32(len(payload)), payload, errPerm},
		{"empty write", cmdWrite, 0, nil, errPerm},
		{"trim", cmdTrim, 4096, nil, errPerm},
		{"write zeroes", cmdWriteZeroes, 4096, nil, errPerm},
		{"flush", cmdFlush, 0, nil, 0},
		{"cache", 5, 4096, nil, errInval},
		{"block status", 7, 4096, nil, errInval},
		{"unknown command", 0x4242, 4096, nil, errInval},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.t = t
			c.request(tt.typ, uint64(i), 0, tt.n, tt.payload)
			if errno, _ := c.simpleReply(uint64(i), 0); errno != tt.errno {
				t.Fatalf("error %d, want %d", errno, tt.errno)
			}
			// The connection is still in step, and the data untouched.
			if errno, got := c.read(1000+uint64(i), 0, 8192); errno != 0 || !bytes.Equal(got, img[:8192]) {
				t.Fatalf("read after it: error %d, data unchanged: %v", errno, bytes.Equal(got, img[:8192]))
			}
		})
	}
}

func TestDisconnect(t *testing.T) {
	ts := startServer(t, Config{}, export("disk", []byte("data")))
	c := dial(t, ts.addr)
	c.attach("disk")
	c.request(cmdDisc, 1, 0, 0, nil)
	c.closed()
	if r := ts.logs.Wait(t, "connection end", func(r logtest.Record) bool { return strings.HasPrefix(r.Msg, "nbd connection") }); r.Msg != "nbd connection closed" {
		t.Errorf("disconnected connection logged as %s", r)
	}
}

// TestProtocolErrorsClose checks that the server closes the connection on
// what it cannot answer.
func TestProtocolErrorsClose(t *testing.T) {
	ts := startServer(t, Config{}, export("disk", []byte("data")))
	optHeader := func(opt, n uint32) []byte {
		b := binary.BigEndian.AppendUint64(nil, magicOpt)
		b = binary.BigEndian.AppendUint32(b, opt)
		return binary.BigEndian.AppendUint32(b, n)
	}
	tests := []struct {
		name string
		do   func(c *client)
	}{
		{"unknown client flags", func(c *client) { c.greet(cflagFixedNewstyle | 1<<7) }},
		{"not fixed newstyle", func(c *client) { c.greet(0) }},
		{"garbage instead of an option", func(c *client) {
			c.greet(cflagFixedNewstyle)
			c.send([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		}},
		{"option longer than 8 KiB", func(c *client) {
			c.greet(cflagFixedNewstyle)
			c.send(optHeader(optGo, 8<<10+1))
		}},
		{"option of 4 GiB", func(c *client) {
			c.greet(cflagFixedNewstyle)
			c.send(append(optHeader(optList, math.MaxUint32), make([]byte, 100)...))
		}},
		{"export name unknown", func(c *client) {
			c.greet(cflagFixedNewstyle)
			c.option(optExportName, []byte("nope"))
		}},
		{"too many options", func(c *client) {
			c.greet(cflagFixedNewstyle)
			for range maxOptions {
				c.option(0xdead, nil)
				c.reply(0xdead)
			}
			c.option(0xdead, nil)
		}},
		{"client gone in an option", func(c *client) {
			c.greet(cflagFixedNewstyle)
			c.send(optHeader(optGo, 100)[:10])
			c.nc.(*net.TCPConn).CloseWrite()
		}},
		{"garbage request", func(c *client) {
			c.attach("disk")
			c.send(bytes.Repeat([]byte{0x42}, 28))
		}},
		{"write larger than 32 MiB", func(c *client) {
			c.attach("disk")
			c.request(cmdWrite, 1, 0, 32<<20+1, make([]byte, 1000))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			tt.do(c)
			c.closed()
		})
	}
}

func TestHandshakeTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ts := startServer(t, Config{HandshakeTimeout: timeout}, export("disk", []byte("data")))

	// A client that sends nothing after the greeting is cut.
	start := time.Now()
	c := dial(t, ts.addr)
	c.greeting()
	c.closed()
	if d := time.Since(start); d < timeout {
		t.Errorf("silent client cut after %s, before the %s handshake timeout", d, timeout)
	}
	r := ts.logs.Wait(t, "the failed connection", logtest.MsgIs("nbd connection failed"))
	var ne net.Error
	if err := r.Err(); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("silent client failed with %v, want a timeout", err)
	}

	// One that attached is not: its deadline is gone. The timer measures
	// the timeout; it synchronises nothing.
	c = dial(t, ts.addr)
	c.attach("disk")
	<-time.After(3 * timeout)
	if errno, got := c.read(1, 0, 4); errno != 0 || string(got) != "data" {
		t.Fatalf("read after %s attached: error %d, data %q", 3*timeout, errno, got)
	}
}

func TestServeEndsWithContext(t *testing.T) {
	s, err := New(Config{}, export("disk", []byte("data")))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	attached := dial(t, ln.Addr().String())
	attached.attach("disk")
	if errno, _ := attached.read(1, 0, 4); errno != 0 {
		t.Fatalf("read: error %d", errno)
	}
	handshaking := dial(t, ln.Addr().String())
	handshaking.greeting()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v when its context ended, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Serve did not return when its context ended")
	}
	attached.closed()
	handshaking.closed()
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still accepts after Serve returned")
	}
}

func TestServeReturnsListenerError(t *testing.T) {
	s, err := New(Config{}, export("disk", []byte("data")))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := s.Serve(t.Context(), ln); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve on a closed listener: %v, want net.ErrClosed", err)
	}
}

func TestMaxConns(t *testing.T) {
	ts := startServer(t, Config{MaxConns: 2}, export("disk", []byte("data")))
	a, b := dial(t, ts.addr), dial(t, ts.addr)
	a.attach("disk")
	b.greeting()

	refused := dial(t, ts.addr)
	refused.closed()
	ts.logs.Wait(t, "the refusal", logtest.MsgIs("nbd connection refused: too many connections"))

	// The live ones are unaffected, and a slot freed is a slot reused.
	if errno, _ := a.read(1, 0, 4); errno != 0 {
		t.Fatalf("read: error %d", errno)
	}
	a.request(cmdDisc, 2, 0, 0, nil)
	a.closed()
	ts.logs.Wait(t, "the first connection's end", logtest.MsgIs("nbd connection closed"))
	c := dial(t, ts.addr)
	c.attach("disk")
}

// failingReader fails every read past its first byte.
type failingReader struct{}

func (failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off == 0 && len(p) == 1 {
		p[0] = 'x'
		return 1, nil
	}
	return 0, errors.New("disk on fire")
}

func TestReadErrors(t *testing.T) {
	ts := startServer(t, Config{},
		Export{Name: "failing", Size: 1 << 20, Data: failingReader{}},
		// Less data than the export claims: reads at the end are short.
		Export{Name: "short", Size: 20, Data: strings.NewReader("0123456789")})
	c := dial(t, ts.addr)
	c.attach("failing")
	if errno, _ := c.read(1, 4096, 4096); errno != errIO {
		t.Fatalf("failing read: error %d, want EIO", errno)
	}
	r := ts.logs.Wait(t, "the read failure", logtest.MsgIs("nbd read failed"))
	if err := r.Err(); err == nil || err.Error() != "disk on fire" {
		t.Errorf("logged error %v", err)
	}
	if errno, got := c.read(2, 0, 1); errno != 0 || string(got) != "x" {
		t.Fatalf("read after the failure: error %d, data %q", errno, got)
	}

	c = dial(t, ts.addr)
	c.attach("short")
	if errno, got := c.read(1, 5, 5); errno != 0 || string(got) != "56789" {
		t.Fatalf("full read ending at the data's end: error %d, data %q", errno, got)
	}
	if errno, _ := c.read(2, 5, 10); errno != errIO {
		t.Fatalf("short read: error %d, want EIO", errno)
	}
}

func TestConcurrentClients(t *testing.T) {
	img := testImage(4 << 20)
	ts := startServer(t, Config{}, export("disk", img))
	const clients, reads = 8, 32
	var wg sync.WaitGroup
	errc := make(chan string, clients)
	for i := range clients {
		c := dial(t, ts.addr) // dial here: Fatal belongs to the test goroutine
		c.attach("disk")
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Pipelined: all requests first, then all replies, in order.
			var reqs []byte
			for j := range reads {
				off := uint64((i*reads + j) * 4099 % (len(img) - 65536))
				reqs = append(reqs, requestHeader(cmdRead, uint64(j), off, 65536)...)
			}
			if _, err := c.nc.Write(reqs); err != nil {
				errc <- err.Error()
				return
			}
			for j := range reads {
				off := uint64((i*reads + j) * 4099 % (len(img) - 65536))
				h := make([]byte, 16+65536)
				if _, err := io.ReadFull(c.r, h); err != nil {
					errc <- err.Error()
					return
				}
				if binary.BigEndian.Uint64(h[8:]) != uint64(j) || binary.BigEndian.Uint32(h[4:]) != 0 || !bytes.Equal(h[16:], img[off:off+65536]) {
					errc <- "wrong reply"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for e := range errc {
		t.Error(e)
	}
}

func TestStartStop(t *testing.T) {
	r, err := Start(t.Context(), "127.0.0.1:0", Config{}, export("disk", []byte("data")))
	if err != nil {
		t.Fatal(err)
	}
	addr := r.Addr().String()
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("Addr %s", addr)
	}
	c := dial(t, addr)
	c.attach("disk")
	if errno, got := c.read(1, 0, 4); errno != 0 || string(got) != "data" {
		t.Fatalf("read: error %d, data %q", errno, got)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	c.closed()
	if err := r.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if nc, err := net.Dial("tcp", addr); err == nil {
		nc.Close()
		t.Error("still listening after Stop")
	}

	// Its context ending stops it too.
	ctx, cancel := context.WithCancel(t.Context())
	r, err = Start(ctx, "127.0.0.1:0", Config{}, export("disk", []byte("data")))
	if err != nil {
		t.Fatal(err)
	}
	c = dial(t, r.Addr().String())
	c.attach("disk")
	cancel()
	c.closed()
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop after the context ended: %v", err)
	}

	if _, err := Start(t.Context(), "127.0.0.1:0", Config{}); err == nil {
		t.Error("Start with no exports succeeded")
	}
	if _, err := Start(t.Context(), "127.0.0.1:-1", Config{}, export("disk", nil)); err == nil {
		t.Error("Start on a bad address succeeded")
	}
}
