// Package nbd serves volume images read-only over the Network Block Device
// protocol, so that an operator can attach a recovery point's volume with
// an ordinary NBD client (nbd-client, qemu-img, nbdcopy, nbdfuse) and mount
// it. It speaks the fixed newstyle handshake (NBD_OPT_EXPORT_NAME, GO, INFO,
// LIST, ABORT) and simple replies only; every write-type command fails with
// EPERM. The protocol is described in the NBD project's doc/proto.md.
package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Defaults for Config's zero values.
const (
	DefaultMaxConns         = 16
	DefaultHandshakeTimeout = 10 * time.Second
)

// Export is one volume image the server offers.
type Export struct {
	// Name is the export name clients ask for: non-empty UTF-8 of at most
	// 4096 bytes with no NUL, unique within a server.
	Name string
	// Description is shown by clients that list exports (nbdinfo --list);
	// optional, at most 4096 bytes of UTF-8.
	Description string
	// Size is the export's size in bytes.
	Size int64
	// Data is a read-only view of the volume, read concurrently by every
	// connection attached to the export. Reads stay within [0, Size).
	Data io.ReaderAt
}

// Config configures a Server.
type Config struct {
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// MaxConns caps the connections served at once, across every Serve
	// call; more are closed as soon as they are accepted (0: DefaultMaxConns).
	MaxConns int
	// HandshakeTimeout bounds a connection's handshake, from accept to the
	// start of transmission (0: DefaultHandshakeTimeout). Attached clients
	// have no idle timeout: a mounted volume may sit unused for hours.
	HandshakeTimeout time.Duration
}

// Server serves a fixed set of exports read-only.
type Server struct {
	cfg     Config
	log     *slog.Logger
	exports []Export           // in the order given, for NBD_OPT_LIST
	byName  map[string]*Export // into exports
	slots   chan struct{}      // one per live connection, MaxConns in all
}

// New validates the exports and makes a server for them.
func New(cfg Config, exports ...Export) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if len(exports) == 0 {
		return nil, errors.New("nbd: no exports")
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger,
		exports: make([]Export, len(exports)),
		byName:  make(map[string]*Export, len(exports)),
		slots:   make(chan struct{}, cfg.MaxConns),
	}
	copy(s.exports, exports)
	for i := range s.exports {
		e := &s.exports[i]
		if err := checkString(e.Name); err != nil || e.Name == "" {
			if err == nil {
				err = errors.New("empty")
			}
			return nil, fmt.Errorf("nbd: export %d: name %.64q: %w", i, e.Name, err)
		}
		if err := checkString(e.Description); err != nil {
			return nil, fmt.Errorf("nbd: export %q: description: %w", e.Name, err)
		}
		if e.Size < 0 {
			return nil, fmt.Errorf("nbd: export %q: negative size %d", e.Name, e.Size)
		}
		if e.Data == nil {
			return nil, fmt.Errorf("nbd: export %q: no data", e.Name)
		}
		if _, dup := s.byName[e.Name]; dup {
			return nil, fmt.Errorf("nbd: export %q: name given twice", e.Name)
		}
		s.byName[e.Name] = e
	}
	return s, nil
}

// checkString applies the protocol's rules for strings: UTF-8, no NUL, at
// most maxString bytes.
func checkString(s string) error {
	switch {
	case len(s) > maxString:
		return fmt.Errorf("%d bytes, more than %d", len(s), maxString)
	case !utf8.ValidString(s):
		return errors.New("not UTF-8")
	case strings.ContainsRune(s, 0):
		return errors.New("contains NUL")
	}
	return nil
}

// Serve accepts NBD clients on ln until ctx ends or ln fails. It closes ln
// and every connection it accepted before it returns, and returns nil when
// ctx ended. Once it has returned no read of an export's Data is running,
// so the caller may release the volume.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait() // runs last: after cancel has closed every connection
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	s.log.Info("nbd server listening", "addr", ln.Addr().String(), "exports", len(s.exports))
	// Each turn accepts one connection; the loop ends when ln is closed
	// (ctx ended) or fails.
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("nbd: accept on %s: %w", ln.Addr(), err)
		}
		select {
		case s.slots <- struct{}{}:
		default:
			s.log.Warn("nbd connection refused: too many connections", "remote", nc.RemoteAddr().String(), "max", s.cfg.MaxConns)
			nc.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			remote := nc.RemoteAddr().String()
			err := s.serveConn(ctx, nc)
			<-s.slots
			switch {
			case err == nil, errors.Is(err, io.EOF), ctx.Err() != nil:
				s.log.Info("nbd connection closed", "remote", remote)
			default:
				s.log.Warn("nbd connection failed", "remote", remote, "err", err)
			}
		}()
	}
}

// Running is a server started by Start.
type Running struct {
	addr   net.Addr
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Serve's, once done is closed
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves exports in a
// goroutine until Stop is called or ctx ends. ctx bounds the server's whole
// life, so it must outlive the call: pass the appliance's context, not an
// HTTP request's.
func Start(ctx context.Context, addr string, cfg Config, exports ...Export) (*Running, error) {
	s, err := New(cfg, exports...)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("nbd: listen on %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Running{addr: ln.Addr(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = s.Serve(ctx, ln)
	}()
	return r, nil
}

// Addr is the address the server listens on.
func (r *Running) Addr() net.Addr { return r.addr }

// Stop ends the server, closing its listener and connections, and waits
// for it: once it returns no read of an export's Data is running. It
// returns the error that had stopped the server already, if any (nil when
// Stop or ctx ended it); calling it again returns the same.
func (r *Running) Stop() error {
	r.cancel()
	<-r.done
	return r.err
}
