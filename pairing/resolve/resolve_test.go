package resolve

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func testCfg(servers ...string) Config {
	return Config{Servers: servers, Search: []string{"lan.cairn.test"}, Timeout: 2 * time.Second}
}

func newTestZone(t *testing.T) (*zone, string) {
	t.Helper()
	z := newZone(t, testZone)
	return z, startServer(t, z)
}

func resolveOK(t *testing.T, cfg Config, target string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	res, err := Resolve(ctx, cfg, target)
	if err != nil {
		t.Fatalf("Resolve(%q): %v\nqueries: %s", target, err, queryLog(res))
	}
	if res.Target != target {
		t.Errorf("Target = %q, want %q", res.Target, target)
	}
	return res
}

func resolveErr(t *testing.T, cfg Config, target string, kind Kind) *Error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	res, err := Resolve(ctx, cfg, target)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Resolve(%q) = %+v, %v; want *Error of kind %v", target, res, err, kind)
	}
	if e.Kind != kind {
		t.Fatalf("Resolve(%q): kind %v, want %v (%v)\nqueries: %s", target, e.Kind, kind, e, queryLog(e.Result))
	}
	if e.Result.Target != target || e.Target != target {
		t.Errorf("Target = %q / %q, want %q", e.Target, e.Result.Target, target)
	}
	if len(e.Result.Queries) != len(res.Queries) {
		t.Errorf("Error.Result has %d queries, Result %d", len(e.Result.Queries), len(res.Queries))
	}
	if e.Error() == "" || e.Remedy() == "" {
		t.Errorf("empty Error() or Remedy() for %v", kind)
	}
	return e
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// queryLog renders queries as "TYPE name net rcode-or-err", one per line.
func queryLog(res Result) string {
	var b strings.Builder
	for _, q := range res.Queries {
		b.WriteString("\n  " + q.Type + " " + q.Name + " " + q.Server + " " + q.Net + " " + q.Rcode + q.Err)
	}
	return b.String()
}

// asked lists "TYPE name" of the queries.
func asked(res Result) []string {
	var out []string
	for _, q := range res.Queries {
		out = append(out, q.Type+" "+q.Name)
	}
	return out
}

func TestShortNameUsesSearchDomain(t *testing.T) {
	_, srv := newTestZone(t)
	cfg := testCfg(srv)
	cfg.Search = []string{"elsewhere.test", "lan.cairn.test"}
	res := resolveOK(t, cfg, "host")
	if res.IsIP || res.Name != "host.lan.cairn.test." {
		t.Errorf("IsIP %v, Name %q", res.IsIP, res.Name)
	}
	if want := addrs("192.0.2.10", "2001:db8::10"); !slices.Equal(res.Addrs, want) {
		t.Errorf("Addrs = %v, want %v", res.Addrs, want)
	}
	if res.Server != srv {
		t.Errorf("Server = %q, want %q", res.Server, srv)
	}
	if !res.ForwardReverseAgree || !slices.Equal(res.PTR, []string{"host.lan.cairn.test."}) {
		t.Errorf("agree %v, PTR %v", res.ForwardReverseAgree, res.PTR)
	}
	wantQ := []string{
		"A host.elsewhere.test.", // NXDOMAIN: next candidate
		"A host.lan.cairn.test.",
		"AAAA host.lan.cairn.test.",
		"PTR 10.2.0.192.in-addr.arpa.",
		"PTR 0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
	}
	if got := asked(res); !slices.Equal(got, wantQ) {
		t.Errorf("queries %q, want %q", got, wantQ)
	}
	if q := res.Queries[0]; q.Rcode != "NXDOMAIN" || q.Net != "udp" || q.Server != srv || q.RTT <= 0 {
		t.Errorf("first query %+v", q)
	}
	if q := res.Queries[1]; q.Rcode != "NOERROR" || len(q.Answer) != 1 || !strings.Contains(q.Answer[0], "192.0.2.10") {
		t.Errorf("A query %+v", q)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings %q", res.Warnings)
	}
}

func TestFQDN(t *testing.T) {
	_, srv := newTestZone(t)
	cfg := testCfg(srv)
	cfg.Search = []string{"wrong.test"}

	t.Run("trailing dot: no search", func(t *testing.T) {
		res := resolveOK(t, cfg, "host.lan.cairn.test.")
		if res.Name != "host.lan.cairn.test." || len(res.Addrs) != 2 {
			t.Errorf("Name %q, Addrs %v", res.Name, res.Addrs)
		}
		for _, q := range res.Queries {
			if strings.Contains(q.Name, "wrong.test") {
				t.Errorf("search domain used for an FQDN: %q", asked(res))
			}
		}
		e := resolveErr(t, cfg, "host.", KindNXDomain)
		if !slices.Equal(e.Tried, []string{"host."}) {
			t.Errorf("Tried %q, want only host.", e.Tried)
		}
	})
	t.Run("no trailing dot", func(t *testing.T) {
		res := resolveOK(t, cfg, "host.lan.cairn.test")
		if res.Name != "host.lan.cairn.test." || res.Queries[0].Name != "host.lan.cairn.test." {
			t.Errorf("Name %q, first query %q", res.Name, res.Queries[0].Name)
		}
	})
	t.Run("case and spaces", func(t *testing.T) {
		res := resolveOK(t, cfg, "  HOST.Lan.Cairn.Test  ")
		if len(res.Addrs) != 2 || !res.ForwardReverseAgree {
			t.Errorf("Addrs %v, agree %v", res.Addrs, res.ForwardReverseAgree)
		}
	})
}

func TestNdots(t *testing.T) {
	_, srv := newTestZone(t)
	cfg := testCfg(srv)

	// dual.cairn.test exists as is and under lan.cairn.test.
	cfg.Ndots = 1 // 2 dots ≥ 1: as is first
	res := resolveOK(t, cfg, "dual.cairn.test")
	if res.Name != "dual.cairn.test." || !slices.Equal(res.Addrs, addrs("192.0.2.20")) {
		t.Errorf("ndots 1: Name %q, Addrs %v", res.Name, res.Addrs)
	}
	cfg.Ndots = 3 // 2 dots < 3: search list first
	res = resolveOK(t, cfg, "dual.cairn.test")
	if res.Name != "dual.cairn.test.lan.cairn.test." || !slices.Equal(res.Addrs, addrs("192.0.2.21")) {
		t.Errorf("ndots 3: Name %q, Addrs %v", res.Name, res.Addrs)
	}

	// A name with ≥ ndots dots that exists only under a search domain:
	// as is (NXDOMAIN), then the search list.
	cfg.Ndots = 1
	cfg.Search = []string{"cairn.test"}
	res = resolveOK(t, cfg, "host.lan")
	if got := asked(res)[:2]; !slices.Equal(got, []string{"A host.lan.", "A host.lan.cairn.test."}) {
		t.Errorf("queries %q", got)
	}
	if res.Name != "host.lan.cairn.test." {
		t.Errorf("Name %q", res.Name)
	}
}

func TestIPWithPTR(t *testing.T) {
	_, srv := newTestZone(t)
	cfg := testCfg(srv)

	t.Run("agrees", func(t *testing.T) {
		res := resolveOK(t, cfg, "192.0.2.10")
		if !res.IsIP || !slices.Equal(res.Addrs, addrs("192.0.2.10")) {
			t.Errorf("IsIP %v, Addrs %v", res.IsIP, res.Addrs)
		}
		if res.Name != "host.lan.cairn.test." || !slices.Equal(res.PTR, []string{"host.lan.cairn.test."}) {
			t.Errorf("Name %q, PTR %v", res.Name, res.PTR)
		}
		if !res.ForwardReverseAgree || res.Server != srv {
			t.Errorf("agree %v, Server %q", res.ForwardReverseAgree, res.Server)
		}
		if want := []string{"PTR 10.2.0.192.in-addr.arpa.", "A host.lan.cairn.test."}; !slices.Equal(asked(res), want) {
			t.Errorf("queries %q, want %q", asked(res), want)
		}
	})
	t.Run("disagrees", func(t *testing.T) {
		res := resolveOK(t, cfg, "192.0.2.30")
		if res.Name != "other.cairn.test." || res.ForwardReverseAgree {
			t.Errorf("Name %q, agree %v", res.Name, res.ForwardReverseAgree)
		}
		if len(res.Warnings) == 0 {
			t.Error("no warning for a disagreeing PTR")
		}
	})
	t.Run("none", func(t *testing.T) {
		res := resolveOK(t, cfg, "192.0.2.99")
		if res.Name != "" || len(res.PTR) != 0 || res.ForwardReverseAgree || res.Server != "" {
			t.Errorf("Name %q, PTR %v, agree %v, Server %q", res.Name, res.PTR, res.ForwardReverseAgree, res.Server)
		}
		if !slices.Equal(res.Addrs, addrs("192.0.2.99")) {
			t.Errorf("Addrs %v", res.Addrs)
		}
		if len(res.Queries) != 1 || res.Queries[0].Rcode != "NXDOMAIN" {
			t.Errorf("queries %s", queryLog(res))
		}
	})
	t.Run("IPv6", func(t *testing.T) {
		for _, target := range []string{"2001:db8::10", "[2001:db8::10]", "2001:0db8:0:0::10"} {
			res := resolveOK(t, cfg, target)
			if !res.IsIP || !slices.Equal(res.Addrs, addrs("2001:db8::10")) {
				t.Errorf("%s: IsIP %v, Addrs %v", target, res.IsIP, res.Addrs)
			}
			if res.Name != "host.lan.cairn.test." || !res.ForwardReverseAgree {
				t.Errorf("%s: Name %q, agree %v", target, res.Name, res.ForwardReverseAgree)
			}
			if got := asked(res); len(got) != 2 || !strings.HasSuffix(got[0], ".ip6.arpa.") || got[1] != "AAAA host.lan.cairn.test." {
				t.Errorf("%s: queries %q", target, got)
			}
		}
		res := resolveOK(t, cfg, "fe80::1%eth0")
		if !slices.Equal(res.Addrs, addrs("fe80::1%eth0")) {
			t.Errorf("zoned: Addrs %v", res.Addrs)
		}
	})
	t.Run("no servers", func(t *testing.T) {
		res := resolveOK(t, Config{}, "192.0.2.10")
		if !slices.Equal(res.Addrs, addrs("192.0.2.10")) || len(res.Queries) != 0 || len(res.Warnings) != 1 {
			t.Errorf("%+v", res)
		}
	})
}

func TestNameReverseCheck(t *testing.T) {
	_, srv := newTestZone(t)
	cfg := testCfg(srv)

	res := resolveOK(t, cfg, "mismatch.cairn.test")
	if res.ForwardReverseAgree || !slices.Equal(res.PTR, []string{"other.cairn.test."}) {
		t.Errorf("mismatch: agree %v, PTR %v", res.ForwardReverseAgree, res.PTR)
	}
	res = resolveOK(t, cfg, "v6only.cairn.test")
	if !slices.Equal(res.Addrs, addrs("2001:db8::40")) || len(res.PTR) != 0 || res.ForwardReverseAgree {
		t.Errorf("v6only: %+v", res)
	}
	res = resolveOK(t, cfg, "alias.cairn.test")
	if res.Name != "alias.cairn.test." || res.Canonical != "host.lan.cairn.test." || !res.ForwardReverseAgree {
		t.Errorf("alias: Name %q, Canonical %q, agree %v", res.Name, res.Canonical, res.ForwardReverseAgree)
	}
	res = resolveOK(t, cfg, "multi.cairn.test")
	if want := addrs("192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1", "2001:db8::2"); !slices.Equal(res.Addrs, want) {
		t.Errorf("multi: Addrs %v, want %v", res.Addrs, want)
	}
}

func TestNXDomain(t *testing.T) {
	_, srv := newTestZone(t)
	e := resolveErr(t, testCfg(srv), "nosuch", KindNXDomain)
	if e.Rcode != "NXDOMAIN" || e.Server != srv || e.Name != "nosuch." {
		t.Errorf("Rcode %q, Server %q, Name %q", e.Rcode, e.Server, e.Name)
	}
	if want := []string{"nosuch.lan.cairn.test.", "nosuch."}; !slices.Equal(e.Tried, want) {
		t.Errorf("Tried %q, want %q", e.Tried, want)
	}
	// NXDOMAIN for A: no AAAA query.
	if want := []string{"A nosuch.lan.cairn.test.", "A nosuch."}; !slices.Equal(asked(e.Result), want) {
		t.Errorf("queries %q, want %q", asked(e.Result), want)
	}
	if !strings.Contains(e.Error(), "NXDOMAIN") || !strings.Contains(e.Error(), "nosuch.lan.cairn.test.") {
		t.Errorf("Error() = %q", e.Error())
	}
}

func TestNoAddress(t *testing.T) {
	_, srv := newTestZone(t)
	e := resolveErr(t, testCfg(srv), "nodata.cairn.test", KindNoAddress)
	if e.Rcode != "NOERROR" || e.Name != "nodata.cairn.test." || e.Server != srv {
		t.Errorf("Rcode %q, Name %q, Server %q", e.Rcode, e.Name, e.Server)
	}
	if len(e.Result.Addrs) != 0 {
		t.Errorf("Addrs %v", e.Result.Addrs)
	}
}

func TestServFailThenSecondServer(t *testing.T) {
	bad := &rcodeHandler{rcode: dns.RcodeServerFailure}
	badSrv := startServer(t, bad)
	_, srv := newTestZone(t)
	res := resolveOK(t, testCfg(badSrv, srv), "host")
	if res.Server != srv {
		t.Errorf("Server = %q, want the second %q", res.Server, srv)
	}
	if len(res.Addrs) != 2 {
		t.Errorf("Addrs %v", res.Addrs)
	}
	if q := res.Queries[0]; q.Server != badSrv || q.Rcode != "SERVFAIL" {
		t.Errorf("first query %+v", q)
	}
	// The server that answered is asked first from then on.
	if n := bad.n.Load(); n != 1 {
		t.Errorf("failing server asked %d times, want 1%s", n, queryLog(res))
	}
}

func TestAllServFail(t *testing.T) {
	h1 := &rcodeHandler{rcode: dns.RcodeServerFailure}
	h2 := &rcodeHandler{rcode: dns.RcodeServerFailure}
	s1, s2 := startServer(t, h1), startServer(t, h2)
	e := resolveErr(t, testCfg(s1, s2), "host", KindServFail)
	if e.Rcode != "SERVFAIL" || e.Server != s2 || e.Name != "host.lan.cairn.test." {
		t.Errorf("Rcode %q, Server %q, Name %q", e.Rcode, e.Server, e.Name)
	}
	// Attempts (2) rounds over both servers, then stop: no other candidate.
	if len(e.Result.Queries) != 4 || h1.n.Load() != 2 || h2.n.Load() != 2 {
		t.Errorf("queries %s", queryLog(e.Result))
	}
	if !slices.Equal(e.Tried, []string{"host.lan.cairn.test."}) {
		t.Errorf("Tried %q", e.Tried)
	}
}

func TestRefused(t *testing.T) {
	h := &rcodeHandler{rcode: dns.RcodeRefused}
	s := startServer(t, h)
	e := resolveErr(t, testCfg(s), "host", KindRefused)
	if e.Rcode != "REFUSED" || h.n.Load() != 1 {
		t.Errorf("Rcode %q, asked %d times", e.Rcode, h.n.Load())
	}
}

func TestServerNeverAnswers(t *testing.T) {
	b := startBlackhole(t)
	cfg := testCfg(b.addr)
	cfg.Timeout = 200 * time.Millisecond
	start := time.Now()
	e := resolveErr(t, cfg, "host", KindTimeout)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	if e.Server != b.addr || e.Rcode != "" || e.Name != "host.lan.cairn.test." {
		t.Errorf("Server %q, Rcode %q, Name %q", e.Server, e.Rcode, e.Name)
	}
	if len(e.Result.Queries) != 2 { // Attempts
		t.Errorf("queries %s", queryLog(e.Result))
	}
	if !isTimeout(e.Err) {
		t.Errorf("Err = %v", e.Err)
	}
	select {
	case <-b.got:
	default:
		t.Error("the silent server saw no query")
	}
}

func TestDeadServerThenGood(t *testing.T) {
	b := startBlackhole(t)
	_, srv := newTestZone(t)
	cfg := testCfg(b.addr, srv)
	cfg.Timeout = 200 * time.Millisecond
	res := resolveOK(t, cfg, "host")
	if res.Server != srv || len(res.Addrs) != 2 {
		t.Errorf("Server %q, Addrs %v", res.Server, res.Addrs)
	}
	if q := res.Queries[0]; q.Server != b.addr || q.Err == "" {
		t.Errorf("first query %+v", q)
	}
	for _, q := range res.Queries[1:] {
		if q.Server != srv {
			t.Errorf("query after failover to %q: %+v", srv, q)
		}
	}
}

func TestCancel(t *testing.T) {
	b := startBlackhole(t)
	cfg := testCfg(b.addr)
	cfg.Timeout = time.Minute

	t.Run("while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		type out struct {
			res Result
			err error
		}
		done := make(chan out, 1)
		go func() {
			res, err := Resolve(ctx, cfg, "host")
			done <- out{res, err}
		}()
		select {
		case <-b.got:
		case <-time.After(waitLimit):
			t.Fatal("no query arrived")
		}
		cancel()
		select {
		case o := <-done:
			var e *Error
			if !errors.As(o.err, &e) || e.Kind != KindCanceled || !errors.Is(o.err, context.Canceled) {
				t.Fatalf("err = %v", o.err)
			}
			if len(e.Result.Queries) != 1 {
				t.Errorf("queries %s", queryLog(e.Result))
			}
		case <-time.After(waitLimit):
			t.Fatal("Resolve did not stop on cancel")
		}
	})
	t.Run("before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Resolve(ctx, cfg, "host")
		var e *Error
		if !errors.As(err, &e) || e.Kind != KindCanceled || len(e.Result.Queries) != 0 {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := Resolve(ctx, cfg, "host")
		var e *Error
		if !errors.As(err, &e) || e.Kind != KindTimeout || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestTruncatedRetriesOverTCP(t *testing.T) {
	z, srv := newTestZone(t)
	res := resolveOK(t, testCfg(srv), "big.cairn.test")
	if len(res.Addrs) != 100 {
		t.Fatalf("%d addresses, want 100", len(res.Addrs))
	}
	var nets []string
	for _, q := range res.Queries {
		if q.Type == "AAAA" {
			nets = append(nets, q.Net)
			if q.Net == "udp" && !q.Truncated {
				t.Errorf("UDP AAAA query not marked truncated: %+v", q)
			}
		}
	}
	if !slices.Equal(nets, []string{"udp", "tcp"}) {
		t.Errorf("AAAA over %q, want udp then tcp", nets)
	}
	if z.tcp.Load() != 1 {
		t.Errorf("%d TCP queries, want 1", z.tcp.Load())
	}
}

func TestEDNS0AvoidsTruncation(t *testing.T) {
	z, srv := newTestZone(t)
	res := resolveOK(t, testCfg(srv), "medium.cairn.test") // > 512 bytes
	if len(res.Addrs) != 40 || z.tcp.Load() != 0 {
		t.Errorf("%d addresses, %d TCP queries", len(res.Addrs), z.tcp.Load())
	}
}

func TestFormErrWithoutEDNS0(t *testing.T) {
	z := newZone(t, testZone)
	z.noEDNS = true
	srv := startServer(t, z)
	res := resolveOK(t, testCfg(srv), "host")
	if len(res.Addrs) != 2 {
		t.Errorf("Addrs %v", res.Addrs)
	}
	if q := res.Queries[0]; q.Rcode != "FORMERR" {
		t.Errorf("first query %+v", q)
	}
}

func TestIgnoresStrayReplies(t *testing.T) {
	zoneH := newZone(t, testZone)
	srv := startRaw(t, func(q *dns.Msg) [][]byte {
		good := new(dns.Msg)
		good.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA && q.Question[0].Name == "host.lan.cairn.test." {
			good.Answer = zoneH.rrs["host.lan.cairn.test."][:1]
		}
		wrongID := good.Copy()
		wrongID.Id = q.Id + 1
		wrongQ := good.Copy()
		wrongQ.Question[0].Name = "evil.test."
		wrongQ.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "evil.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: netip.MustParseAddr("203.0.113.66").AsSlice()}}
		var out [][]byte
		for _, m := range []*dns.Msg{wrongID, wrongQ} {
			p, _ := m.Pack()
			out = append(out, p)
		}
		p, _ := good.Pack()
		return append(out, []byte("not dns"), p)
	})
	cfg := testCfg(srv)
	res := resolveOK(t, cfg, "host.lan.cairn.test.")
	if !slices.Equal(res.Addrs, addrs("192.0.2.10")) {
		t.Errorf("Addrs %v", res.Addrs)
	}
}

func TestBestEffortParts(t *testing.T) {
	z := newZone(t, testZone)
	z.fail = map[uint16]int{dns.TypeAAAA: dns.RcodeServerFailure, dns.TypePTR: dns.RcodeRefused}
	srv := startServer(t, z)
	cfg := testCfg(srv)

	// AAAA and PTR fail; the IPv4 address is still the answer.
	res := resolveOK(t, cfg, "host")
	if !slices.Equal(res.Addrs, addrs("192.0.2.10")) || res.ForwardReverseAgree || len(res.Warnings) < 2 {
		t.Errorf("Addrs %v, agree %v, warnings %q", res.Addrs, res.ForwardReverseAgree, res.Warnings)
	}
	// An IP whose reverse zone refuses is still an answer.
	res = resolveOK(t, cfg, "192.0.2.10")
	if !slices.Equal(res.Addrs, addrs("192.0.2.10")) || res.Name != "" || len(res.Warnings) != 1 {
		t.Errorf("Addrs %v, Name %q, warnings %q", res.Addrs, res.Name, res.Warnings)
	}
	// No A and a failing AAAA: the failure is the answer.
	e := resolveErr(t, cfg, "v6only.cairn.test", KindServFail)
	if e.Name != "v6only.cairn.test." {
		t.Errorf("Name %q", e.Name)
	}
}

func TestUnreachableServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := pc.LocalAddr().String()
	pc.Close()
	e := resolveErr(t, testCfg(closed), "host", KindNetwork)
	if e.Server != closed || e.Err == nil || len(e.Result.Queries) != 1 {
		t.Errorf("Server %q, Err %v, queries %s", e.Server, e.Err, queryLog(e.Result))
	}
}

func TestBadTargets(t *testing.T) {
	z, srv := newTestZone(t)
	cfg := testCfg(srv)
	long := strings.Repeat("a", 60) + "."
	for _, target := range []string{
		"", "   ", "\t\n", "file server", "http://host", "host:443", "192.0.2.10:443",
		"-host", "host-", "a..b", ".host", ".", "..", "host/share", `a\.b`, "h@st", "ホスト",
		strings.Repeat("a", 64), strings.Repeat(long, 5), "192.168.1.300", "1.2.3", "10.0.0.1.",
		"0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "[host]",
	} {
		e := resolveErr(t, cfg, target, KindBadTarget)
		if e.Reason == "" || len(e.Result.Queries) != 0 {
			t.Errorf("%q: reason %q, %d queries", target, e.Reason, len(e.Result.Queries))
		}
	}
	if n := z.udp.Load() + z.tcp.Load(); n != 0 {
		t.Errorf("%d queries sent for bad targets", n)
	}
}

func TestNoServers(t *testing.T) {
	for _, servers := range [][]string{nil, {}, {"dns.example:53"}, {"127.0.0.1:domain"}, {"127.0.0.1:0"}, {"127.0.0.1:99999"}} {
		e := resolveErr(t, Config{Servers: servers}, "host", KindNoServers)
		if e.Reason == "" {
			t.Errorf("%q: no reason", servers)
		}
	}
}

func TestServerAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":      "127.0.0.1:53",
		"127.0.0.1:5353": "127.0.0.1:5353",
		"::1":            "[::1]:53",
		"[::1]":          "[::1]:53",
		"[::1]:5353":     "[::1]:5353",
		" 192.0.2.1 ":    "192.0.2.1:53",
	} {
		if got, err := serverAddr(in); err != nil || got != want {
			t.Errorf("serverAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestCandidates(t *testing.T) {
	r := &resolver{cfg: Config{Ndots: 2, Search: []string{"a.example", "A.Example.", "", ".", "bad..domain", "b.example"}}}
	if got, want := r.candidates("x", false), []string{"x.a.example.", "x.b.example.", "x."}; !slices.Equal(got, want) {
		t.Errorf("short: %q, want %q", got, want)
	}
	if got, want := r.candidates("x.y.z", false), []string{"x.y.z.", "x.y.z.a.example.", "x.y.z.b.example."}; !slices.Equal(got, want) {
		t.Errorf("ndots: %q, want %q", got, want)
	}
	if got, want := r.candidates("x.y", true), []string{"x.y."}; !slices.Equal(got, want) {
		t.Errorf("fqdn: %q, want %q", got, want)
	}
}

func TestFromResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "# test\nnameserver 127.0.0.1\nnameserver ::1\nsearch lan.cairn.test cairn.test\noptions ndots:2 timeout:1 attempts:3\n"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := FromResolvConf(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Servers, []string{"127.0.0.1:53", "[::1]:53"}) {
		t.Errorf("Servers %q", cfg.Servers)
	}
	if !slices.Equal(cfg.Search, []string{"lan.cairn.test", "cairn.test"}) {
		t.Errorf("Search %q", cfg.Search)
	}
	if cfg.Ndots != 2 || cfg.Timeout != time.Second || cfg.Attempts != 3 {
		t.Errorf("Ndots %d, Timeout %v, Attempts %d", cfg.Ndots, cfg.Timeout, cfg.Attempts)
	}

	// The parsed search list and ndots drive Resolve (against the test
	// server, not the file's servers).
	_, srv := newTestZone(t)
	cfg.Servers = []string{srv}
	res := resolveOK(t, cfg, "host.lan") // 1 dot < ndots 2: search first
	if res.Name != "host.lan.cairn.test." || res.Queries[0].Name != "host.lan.lan.cairn.test." {
		t.Errorf("Name %q, queries %q", res.Name, asked(res))
	}

	if _, err := FromResolvConf(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("no error for a missing file")
	}
}

func TestKindString(t *testing.T) {
	for k := KindUnknown; k <= KindCanceled; k++ {
		if s := k.String(); s == "" || strings.HasPrefix(s, "Kind(") {
			t.Errorf("%d: %q", k, s)
		}
	}
	if Kind(99).String() != "Kind(99)" {
		t.Error(Kind(99).String())
	}
}

const hostsText = `# comment
127.0.0.1	localhost
::1	localhost ip6-localhost
127.0.1.7	pc7.lan.example pc7   # an alias
not-an-ip	ignored
127.0.1.8
10.0.0.1	bad_name..
`

func TestParseHosts(t *testing.T) {
	h, err := ParseHosts(strings.NewReader(hostsText))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		target string
		addrs  []string
		name   string
		agree  bool
	}{
		{"localhost", []string{"127.0.0.1", "::1"}, "localhost.", true},
		{"LOCALHOST.", []string{"127.0.0.1", "::1"}, "LOCALHOST.", true},
		{"pc7", []string{"127.0.1.7"}, "pc7.", true},
		{"pc7.lan.example", []string{"127.0.1.7"}, "pc7.lan.example.", true},
	} {
		// No DNS server at all: the hosts file must answer on its own.
		res, err := Resolve(context.Background(), Config{Hosts: h}, tc.target)
		if err != nil {
			t.Errorf("%s: %v", tc.target, err)
			continue
		}
		var got []string
		for _, a := range res.Addrs {
			got = append(got, a.String())
		}
		if !slices.Equal(got, tc.addrs) || res.Name != tc.name || res.ForwardReverseAgree != tc.agree ||
			!strings.HasPrefix(res.Server, hostsPrefix) || len(res.Queries) != 1 || res.Queries[0].Net != "file" {
			t.Errorf("%s: addrs %v name %q agree %v server %q queries %+v; want %v %q %v from the hosts file",
				tc.target, got, res.Name, res.ForwardReverseAgree, res.Server, res.Queries, tc.addrs, tc.name, tc.agree)
		}
	}
	res, err := Resolve(context.Background(), Config{Hosts: h}, "127.0.1.7")
	if err != nil || !slices.Equal(res.PTR, []string{"pc7.lan.example.", "pc7."}) || res.Name != "pc7.lan.example." {
		t.Errorf("reverse of 127.0.1.7: %+v, %v", res, err)
	}
	// A name the file does not list goes to DNS: here there is none.
	if _, err := Resolve(context.Background(), Config{Hosts: h}, "ignored"); err == nil {
		t.Error("a name missing from the hosts file resolved without DNS")
	}
}

func TestHostsFileBeforeDNS(t *testing.T) {
	// The DNS server says NXDOMAIN for everything; the hosts file wins.
	nx := &rcodeHandler{rcode: dns.RcodeNameError}
	srv := startServer(t, nx)
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte(hostsText), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := ReadHosts(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Resolve(context.Background(), Config{Servers: []string{srv}, Hosts: h}, "pc7")
	if err != nil || res.Server != hostsPrefix+" "+path {
		t.Fatalf("pc7: %+v, %v", res, err)
	}
	if n := nx.n.Load(); n != 0 {
		t.Fatalf("%d DNS queries for a name in the hosts file, want none", n)
	}
	if _, err := Resolve(context.Background(), Config{Servers: []string{srv}, Hosts: h}, "elsewhere"); err == nil {
		t.Fatal("elsewhere resolved though DNS says NXDOMAIN")
	}
	if _, err := ReadHosts(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("ReadHosts of a missing file succeeded")
	}
}
