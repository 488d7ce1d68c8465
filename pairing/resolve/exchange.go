package resolve

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ednsSize is the UDP payload size announced with EDNS0 (the DNS Flag
// Day 2020 value, which avoids IP fragmentation).
const ednsSize = 1232

// errMismatch: a TCP reply that does not answer the question asked.
var errMismatch = errors.New("reply does not match the query")

type answer struct {
	msg    *dns.Msg // NOERROR or NXDOMAIN
	server string
}

// lookup asks the servers for name's records of type qtype until one
// answers NOERROR or NXDOMAIN. It makes Attempts rounds over the servers,
// starting with the one that answered last; a server that refused, gave
// another error rcode or could not be reached is not asked again, one that
// timed out or answered SERVFAIL is asked again in the next round. The
// failure returned is the last one seen.
func (r *resolver) lookup(ctx context.Context, name string, qtype uint16) (answer, *Error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(ednsSize, false)
	if _, err := q.Pack(); err != nil {
		return answer{}, &Error{Kind: KindBadTarget, Name: name, Reason: "cannot query " + quote(name), Err: err}
	}

	n := len(r.servers)
	skip := make([]bool, n)
	var last *Error
	for range r.cfg.Attempts {
		asked := false
		for i := range n {
			idx := (r.pref + i) % n
			if skip[idx] {
				continue
			}
			server := r.servers[idx]
			if err := ctxDone(ctx); err != nil {
				return answer{}, ctxError(err, name, server)
			}
			asked = true
			m, err := r.ask(ctx, server, q.Copy())
			if err != nil {
				if cerr := ctxDone(ctx); cerr != nil {
					return answer{}, ctxError(cerr, name, server)
				}
				last = &Error{Kind: KindNetwork, Name: name, Server: server, Err: err}
				switch {
				case isTimeout(err):
					last.Kind = KindTimeout
				case errors.Is(err, errMismatch):
					last.Kind = KindServerError
					skip[idx] = true
				default:
					skip[idx] = true
				}
				continue
			}
			rcode := rcodeString(m.Rcode)
			switch m.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				r.pref = idx
				return answer{msg: m, server: server}, nil
			case dns.RcodeServerFailure:
				last = &Error{Kind: KindServFail, Name: name, Server: server, Rcode: rcode}
			case dns.RcodeRefused:
				last = &Error{Kind: KindRefused, Name: name, Server: server, Rcode: rcode}
				skip[idx] = true
			default:
				last = &Error{Kind: KindServerError, Name: name, Server: server, Rcode: rcode}
				skip[idx] = true
			}
		}
		if !asked {
			break
		}
	}
	return answer{}, last
}

// ctxDone is ctx.Err(), and context.DeadlineExceeded as soon as ctx's
// deadline has passed (a connection's deadline, set from it, may fire
// before ctx's own timer).
func ctxDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// ctxError is the failure for ctx's error: a passed deadline is a
// timeout, a cancel is KindCanceled.
func ctxError(err error, name, server string) *Error {
	k := KindCanceled
	if errors.Is(err, context.DeadlineExceeded) {
		k = KindTimeout
	}
	return &Error{Kind: k, Name: name, Server: server, Err: err}
}

// ask sends q to server over UDP, then over TCP if the answer was
// truncated, and again without EDNS0 if the server answered FORMERR to it.
func (r *resolver) ask(ctx context.Context, server string, q *dns.Msg) (*dns.Msg, error) {
	m, err := r.exchange(ctx, "udp", server, q)
	if err == nil && m.Truncated {
		m, err = r.exchange(ctx, "tcp", server, q)
	}
	if err == nil && m.Rcode == dns.RcodeFormatError && q.IsEdns0() != nil {
		plain := q.Copy()
		plain.Extra = nil
		plain.Id = dns.Id()
		return r.ask(ctx, server, plain)
	}
	return m, err
}

// exchange makes one exchange and records it in r.res.Queries.
func (r *resolver) exchange(ctx context.Context, network, server string, q *dns.Msg) (*dns.Msg, error) {
	rec := Query{
		Name:   q.Question[0].Name,
		Type:   typeString(q.Question[0].Qtype),
		Server: server,
		Net:    network,
	}
	m, rtt, err := roundTrip(ctx, network, server, q, r.cfg.Timeout)
	rec.RTT = rtt
	switch {
	case err != nil && ctxDone(ctx) != nil:
		rec.Err = ctxDone(ctx).Error()
	case err != nil && isTimeout(err):
		rec.Err = "no answer within " + r.cfg.Timeout.String()
	case err != nil:
		rec.Err = err.Error()
	default:
		rec.Rcode = rcodeString(m.Rcode)
		rec.Truncated = m.Truncated
		for _, rr := range m.Answer {
			rec.Answer = append(rec.Answer, strings.ReplaceAll(rr.String(), "\t", " "))
		}
	}
	r.res.Queries = append(r.res.Queries, rec)
	return m, err
}

// aLongTimeAgo is a deadline that has passed: setting it makes a blocked
// read or write return at once.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip sends q to server over network ("udp" or "tcp") and reads its
// answer, waiting at most timeout (less if ctx ends sooner). Over UDP,
// replies that are not the answer to q (another id or question, or not a
// DNS message) are ignored, as stray or spoofed packets.
func roundTrip(ctx context.Context, network, server string, q *dns.Msg, timeout time.Duration) (*dns.Msg, time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	d := net.Dialer{Deadline: deadline}
	c, err := d.DialContext(ctx, network, server)
	if err != nil {
		return nil, time.Since(start), err
	}
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return nil, time.Since(start), err
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(aLongTimeAgo) })
	defer stop()

	co := &dns.Conn{Conn: c}
	if err := co.WriteMsg(q); err != nil {
		return nil, time.Since(start), err
	}
	if network == "tcp" {
		m, err := co.ReadMsg()
		if err != nil {
			return nil, time.Since(start), err
		}
		if !answers(m, q) {
			return nil, time.Since(start), errMismatch
		}
		return m, time.Since(start), nil
	}
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, time.Since(start), err
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			// A truncated answer that does not parse still says "use TCP".
			if n >= 12 && binary.BigEndian.Uint16(buf) == q.Id && buf[2]&0x82 == 0x82 {
				m = &dns.Msg{MsgHdr: dns.MsgHdr{Id: q.Id, Response: true, Truncated: true}}
				return m, time.Since(start), nil
			}
			continue
		}
		if answers(m, q) {
			return m, time.Since(start), nil
		}
	}
}

// answers reports whether m is a reply to q: same id, and same question
// (an error reply may have none).
func answers(m, q *dns.Msg) bool {
	if !m.Response || m.Id != q.Id {
		return false
	}
	if len(m.Question) == 0 {
		return m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError
	}
	a, b := m.Question[0], q.Question[0]
	return len(m.Question) == 1 && a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func rcodeString(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}

func typeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// ctxEnded reports whether e comes from the end of Resolve's ctx (a
// cancel or its deadline), which stops Resolve even where a failure would
// only be a warning.
func (e *Error) ctxEnded() bool {
	return e.Kind == KindCanceled || errors.Is(e.Err, context.DeadlineExceeded)
}
