package resolve

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// hostsPrefix starts Result.Server for an answer from a hosts file.
const hostsPrefix = "hosts file"

// maxHostsFile bounds the hosts file read (a real one is a few KiB).
const maxHostsFile = 4 << 20

// Hosts is a parsed hosts(5) file: lower-case names (without the trailing
// dot) to addresses, and addresses to names, in file order.
type Hosts struct {
	Path   string
	byName map[string][]netip.Addr
	byAddr map[netip.Addr][]string
}

// ReadHosts reads a hosts(5) file, usually /etc/hosts. Lines that are not
// "address name [aliases...]" are ignored, as the C library does.
func ReadHosts(path string) (*Hosts, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hosts file: %w", err)
	}
	defer f.Close()
	h, err := ParseHosts(io.LimitReader(f, maxHostsFile))
	if err != nil {
		return nil, fmt.Errorf("hosts file %s: %w", path, err)
	}
	h.Path = path
	return h, nil
}

// ParseHosts parses the text of a hosts(5) file.
func ParseHosts(r io.Reader) (*Hosts, error) {
	h := &Hosts{byName: map[string][]netip.Addr{}, byAddr: map[netip.Addr][]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		ip, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		ip = ip.Unmap().WithZone("")
		for _, name := range f[1:] {
			name = strings.ToLower(strings.TrimSuffix(name, "."))
			if _, _, bad := checkName(name); bad != "" {
				continue
			}
			if !slices.Contains(h.byName[name], ip) {
				h.byName[name] = append(h.byName[name], ip)
			}
			if !slices.Contains(h.byAddr[ip], name) {
				h.byAddr[ip] = append(h.byAddr[ip], name)
			}
		}
	}
	return h, sc.Err()
}

// lookup returns the addresses of name (a candidate FQDN with its dot).
func (h *Hosts) lookup(name string) []netip.Addr {
	if h == nil {
		return nil
	}
	return h.byName[strings.ToLower(strings.TrimSuffix(name, "."))]
}

// names returns the names of ip.
func (h *Hosts) names(ip netip.Addr) []string {
	if h == nil {
		return nil
	}
	return h.byAddr[ip.Unmap().WithZone("")]
}

func (h *Hosts) source() string {
	if h.Path == "" {
		return hostsPrefix
	}
	return hostsPrefix + " " + h.Path
}

// fromHosts answers a name from the hosts file, as the C library does
// before DNS ("hosts: files dns"), trying the candidates DNS would (the
// name as typed and with each search domain). It reports whether the
// hosts file knew one.
func (r *resolver) fromHosts(cands []string) bool {
	h := r.cfg.Hosts
	if h == nil {
		return false
	}
	for _, c := range cands {
		addrs := h.lookup(c)
		if len(addrs) == 0 {
			continue
		}
		addrs = slices.Clone(addrs)
		slices.SortFunc(addrs, compareV4First)
		r.res.Addrs = slices.Compact(addrs)
		r.res.Name = strings.TrimSuffix(c, ".") + "."
		r.res.Server = h.source()
		r.res.Queries = append(r.res.Queries, Query{Name: r.res.Name, Type: "A/AAAA", Server: h.source(), Net: "file",
			Answer: addrStrings(r.res.Addrs)})
		// The hosts file maps both ways: forward and reverse agree when
		// one of the addresses maps back to the name.
		for _, ip := range r.res.Addrs {
			for _, n := range h.names(ip) {
				if strings.EqualFold(n+".", r.res.Name) {
					r.res.ForwardReverseAgree = true
				}
				if !slices.Contains(r.res.PTR, n+".") {
					r.res.PTR = append(r.res.PTR, n+".")
				}
			}
		}
		return true
	}
	return false
}

// reverseFromHosts answers an IP's names from the hosts file.
func (r *resolver) reverseFromHosts(ip netip.Addr) bool {
	h := r.cfg.Hosts
	names := h.names(ip)
	if len(names) == 0 {
		return false
	}
	for _, n := range names {
		r.res.PTR = append(r.res.PTR, n+".")
	}
	r.res.Name = names[0] + "."
	r.res.Server = h.source()
	r.res.ForwardReverseAgree = true
	r.res.Queries = append(r.res.Queries, Query{Name: ip.String(), Type: "PTR", Server: h.source(), Net: "file", Answer: r.res.PTR})
	return true
}

func compareV4First(a, b netip.Addr) int {
	if a.Is4() != b.Is4() {
		if a.Is4() {
			return -1
		}
		return 1
	}
	return a.Compare(b)
}

func addrStrings(addrs []netip.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}
