// Package resolve is the first pairing step (ARCHITECTURE.md, "Pairing,
// step by step"): it turns what the operator typed — a short host name, an
// FQDN or an IP address — into addresses, with github.com/miekg/dns
// talking to the DNS servers of /etc/resolv.conf (FromResolvConf) or
// configured ones, never through the system resolver.
//
// For a name, Resolve builds the candidate names as resolv.conf(5) does (a
// trailing dot: the name only; at least Ndots dots: the name as is, then
// with each search domain; fewer: the search domains first, then the name
// as is), asks each candidate for A then AAAA, and stops at the first
// candidate that has an address. NXDOMAIN, and NOERROR without an address,
// move on to the next candidate; SERVFAIL, REFUSED, a timeout or an
// unusable answer from one server moves on to the next server (Attempts
// rounds over the servers, starting with the one that answered last); when
// every server failed for a candidate, Resolve stops with that failure
// rather than try the other candidates, so a failing server never makes
// another host's name win. It then asks for the PTR of each address and
// reports whether one of them names the host (ForwardReverseAgree); that
// check is best-effort and never fails the step.
//
// For an IP address, Resolve asks for its PTR names (in-addr.arpa or
// ip6.arpa) and whether each resolves back to the address. An address
// without PTR, or whose reverse zone is broken, is not an error.
//
// Every query uses EDNS0 (a 1232-byte UDP buffer) and is repeated over TCP
// when the UDP answer is truncated, and without EDNS0 when the server
// answers FORMERR to it. Each exchange is recorded in Result.Queries, for
// the wizard's detail. A failure is an *Error whose Kind says why, with
// Remedy for the operator. Names in results are FQDNs with their trailing
// dot.
package resolve

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Defaults for the zero fields of Config.
const (
	DefaultNdots    = 1
	DefaultTimeout  = 2 * time.Second
	DefaultAttempts = 2
)

// Limits on the best-effort reverse checks.
const (
	maxReverseAddrs = 8 // PTR lookups for a name's addresses
	maxPTRNames     = 4 // forward checks of an IP's PTR names
	maxCNAMEChain   = 8
)

// Config says which servers to ask and how.
type Config struct {
	Servers  []string      // "ip:port", e.g. "127.0.0.1:53"; an IP without port gets port 53
	Search   []string      // search domains, tried for names with fewer than Ndots dots
	Ndots    int           // resolv.conf semantics; 0 → 1
	Timeout  time.Duration // per query; 0 → 2 s
	Attempts int           // per server; 0 → 2
	// Hosts, when set, is consulted before DNS, as the C library does
	// with "hosts: files dns": a name it lists (as typed, or with a search
	// domain) and an IP it lists are answered from it, without a query.
	Hosts *Hosts
}

// Query is one exchange with one server, for the wizard's detail.
type Query struct {
	Name   string        `json:"name"`   // the name asked for (FQDN)
	Type   string        `json:"type"`   // "A", "AAAA" or "PTR"
	Server string        `json:"server"` // "ip:port"
	Net    string        `json:"net"`    // "udp" or "tcp"
	Rcode  string        `json:"rcode,omitempty"`
	RTT    time.Duration `json:"rtt"`
	// Answer is the answer section in presentation format.
	Answer []string `json:"answer,omitempty"`
	// Truncated: the UDP answer was truncated (a TCP query follows).
	Truncated bool `json:"truncated,omitempty"`
	// Err says why there is no usable answer (timeout, network error,
	// mismatched reply); empty when the server answered.
	Err string `json:"err,omitempty"`
}

// Result is what Resolve found.
type Result struct {
	Target string `json:"target"` // as typed
	IsIP   bool   `json:"is_ip"`
	// Name is the FQDN that answered; for an IP, its PTR name (the first
	// one that resolves back to the IP, else the first), if any.
	Name string `json:"name,omitempty"`
	// Canonical is the end of Name's CNAME chain, when Name is an alias.
	Canonical string `json:"canonical,omitempty"`
	// Addrs are the A and AAAA addresses, sorted, IPv4 first; for an IP,
	// the IP itself.
	Addrs []netip.Addr `json:"addrs"`
	// PTR: for an IP, its PTR names; for a name, the PTR names of its
	// addresses (for the agreement check).
	PTR []string `json:"ptr,omitempty"`
	// Server is the server that gave the answer (for an IP: the PTR
	// answer, if any).
	Server string `json:"server,omitempty"`
	// ForwardReverseAgree: for an IP, one of its PTR names resolves back
	// to it; for a name, the PTR of one of its addresses is the name (or
	// its canonical name).
	ForwardReverseAgree bool `json:"forward_reverse_agree"`
	// Warnings are problems that did not fail the step (an AAAA or reverse
	// lookup that failed, ...), for the operator.
	Warnings []string `json:"warnings,omitempty"`
	// Queries is every exchange made, in order.
	Queries []Query `json:"queries"`
}

// Resolve resolves a hostname, FQDN or IP literal. Failure is a *Error carrying the Result so far.
//
// A target is trimmed of surrounding white space; an IPv6 address may be
// in brackets and carry a zone ("fe80::1%eth0"). An IP address needs no
// server: without one (or with a bad one) Resolve returns the address with
// a warning instead of KindNoServers.
func Resolve(ctx context.Context, cfg Config, target string) (Result, error) {
	r := &resolver{res: Result{Target: target, Addrs: []netip.Addr{}, Queries: []Query{}}}
	if err := r.run(ctx, cfg, strings.TrimSpace(target)); err != nil {
		err.Target = target
		err.Result = r.res
		return r.res, err
	}
	return r.res, nil
}

func (r *resolver) run(ctx context.Context, cfg Config, t string) *Error {
	if ip, ok := parseIP(t); ok {
		r.res.IsIP = true
		if reason := badIP(ip); reason != "" {
			return &Error{Kind: KindBadTarget, Reason: reason}
		}
		r.res.Addrs = append(r.res.Addrs, ip)
		r.cfg.Hosts = cfg.Hosts
		if r.reverseFromHosts(ip) {
			return nil
		}
		if err := r.setup(cfg); err != nil {
			r.warn("reverse lookup skipped: " + err.Reason)
			return nil
		}
		return r.reverseIP(ctx, ip)
	}
	name, fqdn, reason := checkName(t)
	if reason != "" {
		return &Error{Kind: KindBadTarget, Reason: reason}
	}
	if cfg.Hosts != nil {
		r.cfg.Hosts, r.cfg.Search, r.cfg.Ndots = cfg.Hosts, cfg.Search, max(cfg.Ndots, DefaultNdots)
		if r.fromHosts(r.candidates(name, fqdn)) {
			return nil
		}
	}
	if err := r.setup(cfg); err != nil {
		return err
	}
	if err := r.forward(ctx, r.candidates(name, fqdn)); err != nil {
		return err
	}
	return r.reverseName(ctx)
}

type resolver struct {
	cfg     Config
	servers []string
	pref    int // index of the server that answered last
	res     Result
}

func (r *resolver) warn(s string) { r.res.Warnings = append(r.res.Warnings, s) }

// setup normalizes cfg into r.
func (r *resolver) setup(cfg Config) *Error {
	if cfg.Ndots <= 0 {
		cfg.Ndots = DefaultNdots
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = DefaultAttempts
	}
	r.cfg = cfg
	fail := func(reason string) *Error { return &Error{Kind: KindNoServers, Reason: reason} }
	if len(cfg.Servers) == 0 {
		return fail("no DNS servers configured")
	}
	for _, s := range cfg.Servers {
		addr, err := serverAddr(s)
		if err != nil {
			return fail(err.Error())
		}
		if !slices.Contains(r.servers, addr) {
			r.servers = append(r.servers, addr)
		}
	}
	return nil
}

// serverAddr checks a server address: "ip:port", or an IP, which gets
// port 53. Host names are refused: looking them up would need a resolver.
func serverAddr(s string) (string, error) {
	s = strings.TrimSpace(s)
	if ip, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return net.JoinHostPort(ip.String(), "53"), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", errors.New("server " + quote(s) + " is not an ip:port address")
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", errors.New("server " + quote(s) + " is not an IP address")
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 || !isDigits(port) {
		return "", errors.New("server " + quote(s) + " has a bad port")
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// candidates lists the names to try for name, as resolv.conf(5) does.
func (r *resolver) candidates(name string, fqdn bool) []string {
	asIs := name + "."
	if fqdn {
		return []string{asIs}
	}
	var searched []string
	for _, d := range r.cfg.Search {
		d = strings.TrimSuffix(strings.TrimSpace(d), ".")
		if d == "" {
			continue
		}
		if _, _, bad := checkName(d); bad != "" {
			continue
		}
		c := name + "." + d
		if len(c) > maxNameLen {
			continue
		}
		searched = append(searched, c+".")
	}
	var out []string
	if strings.Count(name, ".") >= r.cfg.Ndots {
		out = append([]string{asIs}, searched...)
	} else {
		out = append(searched, asIs)
	}
	// Drop repeats (search domains may repeat, or differ in case only).
	var uniq []string
	for _, c := range out {
		if !slices.ContainsFunc(uniq, func(u string) bool { return strings.EqualFold(u, c) }) {
			uniq = append(uniq, c)
		}
	}
	return uniq
}

// forward looks up the candidates in turn; the first with an address wins.
func (r *resolver) forward(ctx context.Context, cands []string) *Error {
	var noAddr *Error // the first candidate that exists without address
	var last *Error
	tried := []string{}
	for _, name := range cands {
		tried = append(tried, name)
		a, err := r.lookup(ctx, name, dns.TypeA)
		if err != nil {
			err.Tried = tried
			return err
		}
		if a.msg.Rcode == dns.RcodeNameError {
			last = &Error{Kind: KindNXDomain, Name: name, Server: a.server, Rcode: "NXDOMAIN"}
			continue
		}
		v4, canon4 := addrsOf(a.msg, name, dns.TypeA)

		aaaa, err := r.lookup(ctx, name, dns.TypeAAAA)
		var v6 []netip.Addr
		var canon6 string
		switch {
		case err != nil && len(v4) == 0:
			err.Tried = tried
			return err
		case err != nil:
			if err.ctxEnded() {
				err.Tried = tried
				return err
			}
			r.warn("AAAA lookup of " + name + " failed (" + err.Kind.String() + "); using its IPv4 addresses")
		case aaaa.msg.Rcode == dns.RcodeSuccess:
			v6, canon6 = addrsOf(aaaa.msg, name, dns.TypeAAAA)
		}
		if len(v4) == 0 && len(v6) == 0 {
			if noAddr == nil {
				noAddr = &Error{Kind: KindNoAddress, Name: name, Server: a.server, Rcode: "NOERROR"}
			}
			continue
		}
		addrs := append(v4, v6...)
		slices.SortFunc(addrs, netip.Addr.Compare)
		r.res.Addrs = slices.Compact(addrs)
		r.res.Name = name
		r.res.Server = a.server
		if len(v4) == 0 {
			r.res.Server = aaaa.server
		}
		canon := canon4
		if canon == "" {
			canon = canon6
		}
		if canon != "" && !strings.EqualFold(canon, name) {
			r.res.Canonical = canon
		}
		return nil
	}
	if noAddr != nil {
		last = noAddr
	}
	last.Tried = tried
	return last
}

// reverseName asks for the PTR of each of the name's addresses.
func (r *resolver) reverseName(ctx context.Context) *Error {
	for i, ip := range r.res.Addrs {
		if i == maxReverseAddrs {
			r.warn("reverse check limited to the first " + itoa(maxReverseAddrs) + " addresses")
			break
		}
		names, _, err := r.ptr(ctx, ip)
		if err != nil {
			if err.ctxEnded() {
				return err
			}
			r.warn("reverse lookup of " + ip.String() + " failed (" + err.Kind.String() + ")")
			if err.Kind == KindTimeout {
				break // do not wait for every address
			}
			continue
		}
		for _, n := range names {
			if !containsFold(r.res.PTR, n) {
				r.res.PTR = append(r.res.PTR, n)
			}
			if strings.EqualFold(n, r.res.Name) || (r.res.Canonical != "" && strings.EqualFold(n, r.res.Canonical)) {
				r.res.ForwardReverseAgree = true
			}
		}
	}
	if len(r.res.Addrs) > 0 && !r.res.ForwardReverseAgree {
		r.warn("no address of " + r.res.Name + " has it as PTR name")
	}
	return nil
}

// reverseIP asks for ip's PTR names and whether they resolve back to ip.
func (r *resolver) reverseIP(ctx context.Context, ip netip.Addr) *Error {
	names, server, err := r.ptr(ctx, ip)
	if err != nil {
		if err.ctxEnded() {
			return err
		}
		r.warn("reverse lookup of " + ip.String() + " failed (" + err.Kind.String() + ")")
		return nil
	}
	r.res.PTR = names
	if len(names) == 0 {
		r.warn(ip.String() + " has no PTR name")
		return nil
	}
	r.res.Server = server
	qtype := dns.TypeA
	if !ip.Unmap().Is4() {
		qtype = dns.TypeAAAA
	}
	want := ip.Unmap().WithZone("")
	for i, n := range names {
		if i == maxPTRNames {
			break
		}
		l, err := r.lookup(ctx, n, qtype)
		if err != nil {
			if err.ctxEnded() {
				return err
			}
			r.warn("forward lookup of PTR name " + n + " failed (" + err.Kind.String() + ")")
			if err.Kind == KindTimeout {
				break
			}
			continue
		}
		addrs, _ := addrsOf(l.msg, n, qtype)
		if slices.Contains(addrs, want) {
			r.res.ForwardReverseAgree = true
			r.res.Name = n
			return nil
		}
	}
	r.res.Name = names[0]
	r.warn("no PTR name of " + ip.String() + " resolves back to it")
	return nil
}

// ptr returns ip's PTR names; none (NXDOMAIN or NOERROR without PTR) is
// not an error.
func (r *resolver) ptr(ctx context.Context, ip netip.Addr) ([]string, string, *Error) {
	arpa, err := dns.ReverseAddr(ip.Unmap().WithZone("").String())
	if err != nil {
		return nil, "", &Error{Kind: KindBadTarget, Reason: err.Error()}
	}
	l, e := r.lookup(ctx, arpa, dns.TypePTR)
	if e != nil {
		return nil, "", e
	}
	var names []string
	rrs, _ := chase(l.msg, arpa, dns.TypePTR)
	for _, rr := range rrs {
		n := rr.(*dns.PTR).Ptr
		if !containsFold(names, n) {
			names = append(names, n)
		}
	}
	return names, l.server, nil
}

// addrsOf returns the addresses of type qtype for name in m, following
// CNAMEs, and the end of the CNAME chain.
func addrsOf(m *dns.Msg, name string, qtype uint16) ([]netip.Addr, string) {
	rrs, canon := chase(m, name, qtype)
	var out []netip.Addr
	for _, rr := range rrs {
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A.To4()
		case *dns.AAAA:
			ip = rr.AAAA.To16()
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a)
		}
	}
	return out, canon
}

// chase returns the records of type qtype owned by name or by the end of
// its CNAME chain in m's answer section, and the chain's end.
func chase(m *dns.Msg, name string, qtype uint16) ([]dns.RR, string) {
	cur := name
	for range maxCNAMEChain {
		var next string
		var out []dns.RR
		for _, rr := range m.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, cur) || h.Class != dns.ClassINET {
				continue
			}
			if h.Rrtype == qtype {
				out = append(out, rr)
			} else if c, ok := rr.(*dns.CNAME); ok && next == "" {
				next = c.Target
			}
		}
		if len(out) > 0 || next == "" {
			return out, cur
		}
		cur = next
	}
	return nil, cur
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}
