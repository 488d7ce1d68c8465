package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Wire constants, named as in proto.md.
const (
	magicNBD         = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt         = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply    = 0x0003e889045565a9
	magicRequest     = 0x25609513
	magicSimpleReply = 0x67446698

	// Handshake flags (server) and client flags.
	flagFixedNewstyle  = 1 << 0
	flagNoZeroes       = 1 << 1
	cflagFixedNewstyle = 1 << 0
	cflagNoZeroes      = 1 << 1

	// Options.
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8

	// Option replies.
	repAck        = 1
	repServer     = 2
	repInfo       = 3
	repErrUnsup   = 1<<31 + 1
	repErrInvalid = 1<<31 + 3
	repErrUnknown = 1<<31 + 6

	// Information types of NBD_REP_INFO.
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3

	// Transmission flags.
	tflagHasFlags     = 1 << 0
	tflagReadOnly     = 1 << 1
	tflagCanMultiConn = 1 << 8

	// Commands.
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6

	// Errors of simple replies (errno values fixed by the protocol).
	errPerm  = 1
	errIO    = 5
	errInval = 22
)

// Limits.
const (
	// maxString is the protocol's limit on a string (export name,
	// description).
	maxString = 4096
	// maxOptionLen bounds an option's data: the longest valid one is
	// NBD_OPT_GO with a maxString name and a few information requests.
	// Longer options close the connection.
	maxOptionLen = 8 << 10
	// maxOptions bounds the options of one handshake.
	maxOptions = 128
	// maxRequest is the largest read (and write payload) accepted: the
	// protocol's default maximum block size, advertised as such in
	// NBD_INFO_BLOCK_SIZE.
	maxRequest = 32 << 20
	// minBlock and preferredBlock are advertised in NBD_INFO_BLOCK_SIZE.
	minBlock       = 1
	preferredBlock = 4096
	// keepBuffer is the largest read reply buffer a connection keeps for
	// the next read.
	keepBuffer = 16 + 1<<20

	transmissionFlags = tflagHasFlags | tflagReadOnly | tflagCanMultiConn
)

var be = binary.BigEndian

// conn is one client connection.
type conn struct {
	srv      *Server
	nc       net.Conn
	r        *bufio.Reader
	w        *bufio.Writer // handshake replies; flushed after each option
	noZeroes bool          // the client set NBD_FLAG_C_NO_ZEROES
	buf      []byte        // read replies, reused up to keepBuffer
}

// serveConn runs one connection, handshake then transmission, and closes
// it. It returns nil when the client aborted or disconnected politely.
func (s *Server) serveConn(ctx context.Context, nc net.Conn) error {
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	c := &conn{srv: s, nc: nc, r: bufio.NewReader(nc), w: bufio.NewWriter(nc)}
	if err := nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout)); err != nil {
		return fmt.Errorf("set handshake deadline: %w", err)
	}
	exp, err := c.handshake()
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if exp == nil {
		return nil // NBD_OPT_ABORT
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clear handshake deadline: %w", err)
	}
	s.log.Info("nbd client attached", "remote", nc.RemoteAddr().String(), "export", exp.Name)
	if err := c.transmit(exp); err != nil {
		return fmt.Errorf("export %q: %w", exp.Name, err)
	}
	return nil
}

// handshake greets the client and haggles options until one chooses an
// export, which it returns; it returns nil and no error if the client
// aborted.
func (c *conn) handshake() (*Export, error) {
	var hello [18]byte
	be.PutUint64(hello[0:], magicNBD)
	be.PutUint64(hello[8:], magicOpt)
	be.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(hello[:]); err != nil {
		return nil, fmt.Errorf("send greeting: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.r, cf[:]); err != nil {
		return nil, fmt.Errorf("read client flags: %w", err)
	}
	flags := be.Uint32(cf[:])
	if flags&^(cflagFixedNewstyle|cflagNoZeroes) != 0 {
		return nil, fmt.Errorf("unknown client flags %#x", flags)
	}
	if flags&cflagFixedNewstyle == 0 {
		return nil, errors.New("client does not speak fixed newstyle")
	}
	c.noZeroes = flags&cflagNoZeroes != 0
	for range maxOptions {
		opt, data, err := c.readOption()
		if err != nil {
			return nil, err
		}
		exp, done, err := c.option(opt, data)
		if err == nil {
			err = c.w.Flush()
		}
		if err != nil {
			return nil, fmt.Errorf("option %d: %w", opt, err)
		}
		if done {
			return exp, nil
		}
	}
	return nil, fmt.Errorf("more than %d options", maxOptions)
}

// readOption reads one option request.
func (c *conn) readOption() (uint32, []byte, error) {
	var h [16]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, nil, fmt.Errorf("read option: %w", err)
	}
	if m := be.Uint64(h[0:]); m != magicOpt {
		return 0, nil, fmt.Errorf("bad option magic %#x", m)
	}
	opt, n := be.Uint32(h[8:]), be.Uint32(h[12:])
	if n > maxOptionLen {
		return 0, nil, fmt.Errorf("option %d: %d bytes of data, more than %d", opt, n, maxOptionLen)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c.r, data); err != nil {
		return 0, nil, fmt.Errorf("read option %d data: %w", opt, err)
	}
	return opt, data, nil
}

// option answers one option. done means the handshake is over: with the
// export chosen, or nil if the client aborted.
func (c *conn) option(opt uint32, data []byte) (*Export, bool, error) {
	switch opt {
	case optExportName:
		exp := c.srv.byName[string(data)]
		if exp == nil {
			// This option has no way to refuse but closing.
			return nil, false, fmt.Errorf("unknown export %.64q", data)
		}
		b := make([]byte, 10, 10+124)
		be.PutUint64(b[0:], uint64(exp.Size))
		be.PutUint16(b[8:], transmissionFlags)
		if !c.noZeroes {
			b = b[:10+124]
		}
		_, err := c.w.Write(b)
		return exp, true, err
	case optAbort:
		return nil, true, c.reply(opt, repAck, nil)
	case optList:
		if len(data) != 0 {
			return nil, false, c.reply(opt, repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
		}
		for i := range c.srv.exports {
			e := &c.srv.exports[i]
			b := make([]byte, 4, 4+len(e.Name)+len(e.Description))
			be.PutUint32(b, uint32(len(e.Name)))
			b = append(append(b, e.Name...), e.Description...)
			if err := c.reply(opt, repServer, b); err != nil {
				return nil, false, err
			}
		}
		return nil, false, c.reply(opt, repAck, nil)
	case optInfo, optGo:
		return c.info(opt, data)
	case optStructuredReply:
		return nil, false, c.reply(opt, repErrUnsup, []byte("structured replies are not supported"))
	case optStartTLS:
		return nil, false, c.reply(opt, repErrUnsup, []byte("TLS is not supported"))
	default:
		return nil, false, c.reply(opt, repErrUnsup, nil)
	}
}

// info answers NBD_OPT_INFO and NBD_OPT_GO; after a successful GO the
// handshake is done.
func (c *conn) info(opt uint32, data []byte) (*Export, bool, error) {
	// Data: u32 name length, name, u16 count, count × u16 info types.
	if len(data) < 6 {
		return nil, false, c.reply(opt, repErrInvalid, []byte("option too short"))
	}
	n := be.Uint32(data)
	if uint64(n) > uint64(len(data)-6) {
		return nil, false, c.reply(opt, repErrInvalid, []byte("name longer than the option"))
	}
	name, rest := data[4:4+n], data[4+n:]
	count := int(be.Uint16(rest))
	if len(rest) != 2+2*count {
		return nil, false, c.reply(opt, repErrInvalid, []byte("information request count does not match the option's length"))
	}
	exp := c.srv.byName[string(name)]
	if exp == nil {
		return nil, false, c.reply(opt, repErrUnknown, fmt.Appendf(nil, "no export named %.64q", name))
	}
	b := make([]byte, 12)
	be.PutUint16(b[0:], infoExport)
	be.PutUint64(b[2:], uint64(exp.Size))
	be.PutUint16(b[10:], transmissionFlags)
	if err := c.reply(opt, repInfo, b); err != nil {
		return nil, false, err
	}
	var sent [infoBlockSize + 1]bool // each answered once; unknown types ignored
	for i := range count {
		typ := be.Uint16(rest[2+2*i:])
		if int(typ) >= len(sent) || sent[typ] {
			continue
		}
		sent[typ] = true
		var b []byte
		switch typ {
		case infoName:
			b = append(be.AppendUint16(nil, infoName), exp.Name...)
		case infoDescription:
			b = append(be.AppendUint16(nil, infoDescription), exp.Description...)
		case infoBlockSize:
			b = be.AppendUint16(nil, infoBlockSize)
			b = be.AppendUint32(b, minBlock)
			b = be.AppendUint32(b, preferredBlock)
			b = be.AppendUint32(b, maxRequest)
		default: // infoExport: sent already
			continue
		}
		if err := c.reply(opt, repInfo, b); err != nil {
			return nil, false, err
		}
	}
	if err := c.reply(opt, repAck, nil); err != nil {
		return nil, false, err
	}
	if opt == optGo {
		return exp, true, nil
	}
	return nil, false, nil
}

// reply buffers one option reply.
func (c *conn) reply(opt, typ uint32, data []byte) error {
	var h [20]byte
	be.PutUint64(h[0:], magicOptReply)
	be.PutUint32(h[8:], opt)
	be.PutUint32(h[12:], typ)
	be.PutUint32(h[16:], uint32(len(data)))
	if _, err := c.w.Write(h[:]); err != nil {
		return fmt.Errorf("send reply: %w", err)
	}
	if _, err := c.w.Write(data); err != nil {
		return fmt.Errorf("send reply: %w", err)
	}
	return nil
}

// transmit answers requests one at a time until the client disconnects.
// Replies go out in request order, which the protocol allows.
func (c *conn) transmit(exp *Export) error {
	var h [28]byte
	// Each turn answers one request; the loop ends with NBD_CMD_DISC, a
	// protocol error, or the connection closing (client gone, ctx ended).
	for {
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return fmt.Errorf("read request: %w", err)
		}
		if m := be.Uint32(h[0:]); m != magicRequest {
			return fmt.Errorf("bad request magic %#x", m)
		}
		typ, handle := be.Uint16(h[6:]), be.Uint64(h[8:])
		off, n := be.Uint64(h[16:]), be.Uint32(h[24:])
		var err error
		switch typ {
		case cmdRead:
			err = c.read(exp, handle, off, n)
		case cmdWrite:
			// Read the payload to stay in step with the client, unless it
			// is too large to be a sane write.
			if n > maxRequest {
				return fmt.Errorf("write of %d bytes, more than %d", n, maxRequest)
			}
			if _, err := io.CopyN(io.Discard, c.r, int64(n)); err != nil {
				return fmt.Errorf("read write payload: %w", err)
			}
			err = c.simple(handle, errPerm)
		case cmdTrim, cmdWriteZeroes:
			err = c.simple(handle, errPerm)
		case cmdFlush:
			err = c.simple(handle, 0)
		case cmdDisc:
			return nil
		default:
			err = c.simple(handle, errInval)
		}
		if err != nil {
			return err
		}
	}
}

// read answers NBD_CMD_READ.
func (c *conn) read(exp *Export, handle, off uint64, n uint32) error {
	if n > maxRequest || off > uint64(exp.Size) || uint64(n) > uint64(exp.Size)-off {
		return c.simple(handle, errInval)
	}
	size := 16 + int(n)
	var b []byte
	if size <= keepBuffer {
		if cap(c.buf) < size {
			c.buf = make([]byte, size)
		}
		b = c.buf[:size]
	} else {
		b = make([]byte, size) // not kept: MaxConns × maxRequest would be too much
	}
	be.PutUint32(b[0:], magicSimpleReply)
	be.PutUint32(b[4:], 0)
	be.PutUint64(b[8:], handle)
	// A ReaderAt returns an error whenever it reads less than asked, and
	// may return io.EOF with a full read at the end.
	if m, err := exp.Data.ReadAt(b[16:], int64(off)); m < int(n) {
		c.srv.log.Warn("nbd read failed", "export", exp.Name, "offset", off, "length", n, "err", err)
		return c.simple(handle, errIO)
	}
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("send read reply: %w", err)
	}
	return nil
}

// simple sends a simple reply without data.
func (c *conn) simple(handle uint64, errno uint32) error {
	var b [16]byte
	be.PutUint32(b[0:], magicSimpleReply)
	be.PutUint32(b[4:], errno)
	be.PutUint64(b[8:], handle)
	if _, err := c.nc.Write(b[:]); err != nil {
		return fmt.Errorf("send reply: %w", err)
	}
	return nil
}
