package channel

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/pairing/identity"
)

// countingConn counts the writes to a connection.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// framePair returns a frameConn on TLS on a counted TCP connection, and
// the TLS connection at the other end.
func framePair(t *testing.T) (*frameConn, *countingConn, *tls.Conn) {
	t.Helper()
	a, err := identity.New("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := identity.New("b")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *tls.Conn, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		conn := tls.Server(raw, identity.ServerConfig(b, ALPN, identity.Pinned(a.Fingerprint())))
		if err := conn.Handshake(); err != nil {
			t.Error(err)
		}
		accepted <- conn
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingConn{Conn: raw}
	conn := tlsClient(counted, identity.ClientConfig(a, ALPN, identity.Pinned(b.Fingerprint())))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { conn.Close(); srv.Close() })
	return newFrameConn(conn), counted, srv
}

func yamuxHeader(typ uint8, length int) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[0], h[1] = yamuxVersion, typ
	binary.BigEndian.PutUint32(h[4:], 3) // stream
	binary.BigEndian.PutUint32(h[8:], uint32(length))
	return h
}

func TestFrameConnWritesAFrameAtOnce(t *testing.T) {
	fc, counted, srv := framePair(t)
	body := counting(WriteBuffer)
	big := counting(3*frameBatch + 5)
	const (
		typeWindowUpdate = 1
		typePing         = 2
	)
	var want bytes.Buffer
	write := func(b []byte, wantWrites int64) {
		t.Helper()
		before := counted.writes.Load()
		if n, err := fc.Write(b); n != len(b) || err != nil {
			t.Fatalf("Write of %d bytes: %d, %v", len(b), n, err)
		}
		if got := counted.writes.Load() - before; got != wantWrites {
			t.Fatalf("Write of %d bytes: %d writes to TCP, want %d", len(b), got, wantWrites)
		}
		want.Write(b)
	}
	write(yamuxHeader(yamuxTypeData, len(body)), 0) // held
	write(body, 1)                                  // with its header
	write(yamuxHeader(typeWindowUpdate, 1<<20), 1)
	write(yamuxHeader(typePing, 7), 1)
	write(yamuxHeader(yamuxTypeData, 0), 1) // no body: at once
	write(yamuxHeader(yamuxTypeData, len(big)), 0)
	write(big, 4) // larger than the batch buffer
	write(yamuxHeader(yamuxTypeData, 10), 0)
	write(counting(9), 1) // not the announced body: written all the same
	if fc.batch.batching || fc.batch.buf != nil {
		t.Fatal("batchConn still batching, or holding its buffer")
	}

	got := make([]byte, want.Len())
	if _, err := io.ReadFull(srv, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the other end read other bytes than were written")
	}
}

func TestBatchConnIsPlainOutsideBatches(t *testing.T) {
	fc, counted, srv := framePair(t)
	// crypto/tls writes directly (an alert, here) when no frame is written.
	before := counted.writes.Load()
	if err := fc.Conn.Close(); err != nil {
		t.Fatal(err)
	}
	if counted.writes.Load() == before {
		t.Fatal("close_notify not written at once")
	}
	if _, err := srv.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after close_notify: %v, want EOF", err)
	}
}

// counting is n bytes that differ from their neighbours.
func counting(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}
