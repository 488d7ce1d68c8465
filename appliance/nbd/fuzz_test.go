package nbd

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzHandshake feeds arbitrary bytes as the client's side of a connection,
// handshake and transmission, to a server on a net.Pipe: the server must
// neither panic nor hang, whatever it is sent.
func FuzzHandshake(f *testing.F) {
	flags := func(fl uint32) []byte { return binary.BigEndian.AppendUint32(nil, fl) }
	opt := func(o uint32, data []byte) []byte {
		b := binary.BigEndian.AppendUint64(nil, magicOpt)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	std := flags(cflagFixedNewstyle | cflagNoZeroes)
	f.Add([]byte{})
	f.Add(std)
	f.Add(cat(std, opt(optList, nil), opt(optAbort, nil)))
	f.Add(cat(std, opt(optInfo, infoData("disk", infoBlockSize, infoName, infoDescription)), opt(optInfo, infoData("nope"))))
	f.Add(cat(std, opt(optStructuredReply, nil), opt(optGo, infoData("disk")),
		requestHeader(cmdRead, 1, 0, 4096), requestHeader(cmdRead, 2, 4000, 200),
		requestHeader(cmdWrite, 3, 0, 4), []byte("abcd"), requestHeader(cmdTrim, 4, 0, 4096),
		requestHeader(cmdFlush, 5, 0, 0), requestHeader(99, 6, 0, 0), requestHeader(cmdDisc, 7, 0, 0)))
	f.Add(cat(flags(cflagFixedNewstyle), opt(optExportName, []byte("disk")), requestHeader(cmdRead, 1, 1<<40, 1<<30)))
	f.Add(cat(std, opt(optGo, []byte{0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 9})))
	f.Add(cat(std, opt(optGo, infoData("disk")), requestHeader(cmdWrite, 1, 0, 1<<20)))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))

	img := testImage(8192)
	s, err := New(Config{HandshakeTimeout: 5 * time.Second}, export("disk", img))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, cli := net.Pipe()
		served := make(chan error, 1)
		go func() { served <- s.serveConn(t.Context(), srv) }()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			_, _ = io.Copy(io.Discard, cli) // ends when cli is closed
		}()
		_, _ = cli.Write(in) // fails once the server has closed its end
		cli.Close()
		select {
		case <-served:
		case <-time.After(waitTimeout):
			t.Fatalf("serveConn did not end within %s of the client closing", waitTimeout)
		}
		<-drained
	})
}
