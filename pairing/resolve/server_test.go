package resolve

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// waitLimit bounds every wait in these tests.
const waitLimit = 10 * time.Second

// testZone is the zone the in-process server serves. Addresses are from
// the documentation ranges: they are only data, never contacted.
var testZone = []string{
	"host.lan.cairn.test. A 192.0.2.10",
	"host.lan.cairn.test. AAAA 2001:db8::10",
	"10.2.0.192.in-addr.arpa. PTR host.lan.cairn.test.",
	// dual: exists as is and under the search domain.
	"dual.cairn.test. A 192.0.2.20",
	"dual.cairn.test.lan.cairn.test. A 192.0.2.21",
	// mismatch: its PTR names another host.
	"mismatch.cairn.test. A 192.0.2.30",
	"30.2.0.192.in-addr.arpa. PTR other.cairn.test.",
	"other.cairn.test. A 192.0.2.31",
	"alias.cairn.test. CNAME host.lan.cairn.test.",
	`nodata.cairn.test. TXT "no address here"`,
	"v6only.cairn.test. AAAA 2001:db8::40",
	"multi.cairn.test. A 192.0.2.3",
	"multi.cairn.test. AAAA 2001:db8::2",
	"multi.cairn.test. A 192.0.2.1",
	"multi.cairn.test. AAAA 2001:db8::1",
	"multi.cairn.test. A 192.0.2.2",
	// 192.0.2.99 has no PTR.
}

func init() {
	arpa, err := dns.ReverseAddr("2001:db8::10")
	if err != nil {
		panic(err)
	}
	testZone = append(testZone, arpa+" PTR host.lan.cairn.test.")
	// medium: too big for 512 bytes, fits the EDNS0 buffer.
	for i := range 40 {
		testZone = append(testZone, fmt.Sprintf("medium.cairn.test. A 198.51.100.%d", i+1))
	}
	// big: too big for the EDNS0 buffer; needs TCP.
	for i := range 100 {
		testZone = append(testZone, fmt.Sprintf("big.cairn.test. AAAA 2001:db8::1:%x", i))
	}
}

// zone is an authoritative-style handler over a fixed set of records. It
// answers NXDOMAIN for names it does not hold, follows CNAMEs within its
// data, truncates UDP answers to the requester's buffer, and counts
// queries per transport.
type zone struct {
	rrs      map[string][]dns.RR
	udp, tcp atomic.Int64
	// noEDNS makes the server answer FORMERR to queries with EDNS0.
	noEDNS bool
	// fail maps query types to the rcode to answer them with.
	fail map[uint16]int
}

func newZone(tb testing.TB, lines []string) *zone {
	tb.Helper()
	z := &zone{rrs: map[string][]dns.RR{}}
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			tb.Fatalf("zone line %q: %v", l, err)
		}
		n := strings.ToLower(rr.Header().Name)
		z.rrs[n] = append(z.rrs[n], rr)
	}
	return z
}

func (z *zone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	udp := w.RemoteAddr().Network() == "udp"
	if udp {
		z.udp.Add(1)
	} else {
		z.tcp.Add(1)
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	opt := r.IsEdns0()
	if len(r.Question) != 1 || (z.noEDNS && opt != nil) {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	if rc, ok := z.fail[q.Qtype]; ok {
		m.Rcode = rc
		w.WriteMsg(m)
		return
	}
	cur := strings.ToLower(q.Name)
	if _, ok := z.rrs[cur]; !ok {
		m.Rcode = dns.RcodeNameError
		soa, _ := dns.NewRR("cairn.test. SOA ns.cairn.test. admin.cairn.test. 1 3600 600 86400 60")
		m.Ns = append(m.Ns, soa)
	}
	for range 8 {
		var cname *dns.CNAME
		found := false
		for _, rr := range z.rrs[cur] {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
				found = true
			} else if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if found || cname == nil {
			break
		}
		m.Answer = append(m.Answer, cname)
		cur = strings.ToLower(cname.Target)
	}
	size := dns.MinMsgSize
	if opt != nil {
		size = int(opt.UDPSize())
		m.SetEdns0(opt.UDPSize(), false)
	}
	if udp {
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// rcodeHandler answers every query with one rcode, and counts them.
type rcodeHandler struct {
	rcode int
	n     atomic.Int64
}

func (h *rcodeHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	h.n.Add(1)
	m := new(dns.Msg)
	m.SetRcode(r, h.rcode)
	w.WriteMsg(m)
}

// startServer serves h over UDP and TCP on one 127.0.0.1 port and returns
// "127.0.0.1:port". The servers stop when the test ends.
func startServer(tb testing.TB, h dns.Handler) string {
	tb.Helper()
	var pc net.PacketConn
	var l net.Listener
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			break
		}
		pc.Close()
		if try == 20 {
			tb.Fatalf("no port free for both UDP and TCP: %v", err)
		}
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-done:
			tb.Fatalf("dns server: %v", err)
		case <-time.After(waitLimit):
			tb.Fatal("dns server did not start")
		}
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			if err := srv.ShutdownContext(ctx); err != nil {
				tb.Errorf("dns server shutdown: %v", err)
			}
			select {
			case <-done:
			case <-time.After(waitLimit):
				tb.Error("dns server did not stop")
			}
		})
	}
	return pc.LocalAddr().String()
}

// blackhole is a UDP socket on 127.0.0.1 that reads queries and never
// answers. got receives a value per query (dropped if full).
type blackhole struct {
	addr string
	got  chan struct{}
}

func startBlackhole(tb testing.TB) *blackhole {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &blackhole{addr: pc.LocalAddr().String(), got: make(chan struct{}, 64)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65535)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			select {
			case b.got <- struct{}{}:
			default:
			}
		}
	}()
	tb.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return b
}

// startRaw serves UDP on 127.0.0.1 with a function that returns the raw
// packets to send back for each query, in order.
func startRaw(tb testing.TB, reply func(q *dns.Msg) [][]byte) string {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			for _, p := range reply(q) {
				pc.WriteTo(p, from)
			}
		}
	}()
	tb.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return pc.LocalAddr().String()
}
