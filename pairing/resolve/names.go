package resolve

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
)

// maxNameLen is the longest name in text form, without the trailing dot.
const maxNameLen = 253

// parseIP parses an IP literal, IPv6 possibly in brackets and with a zone.
func parseIP(s string) (netip.Addr, bool) {
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	ip, err := netip.ParseAddr(s)
	return ip, err == nil
}

// badIP says why ip cannot be a machine to pair with, or "".
func badIP(ip netip.Addr) string {
	u := ip.Unmap()
	switch {
	case u.IsUnspecified():
		return ip.String() + " is the unspecified address"
	case u.IsMulticast():
		return ip.String() + " is a multicast address"
	case u == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return ip.String() + " is the broadcast address"
	}
	return ""
}

// checkName checks a host name as typed (already trimmed) and returns it
// without its trailing dot, whether it had one, and why it is not a host
// name ("" if it is). Labels are letters, digits, '-' and '_' (seen on
// Windows hosts), 1 to 63 characters, not starting or ending with '-'.
func checkName(s string) (name string, fqdn bool, reason string) {
	switch {
	case s == "":
		return "", false, "empty"
	case strings.IndexFunc(s, unicode.IsSpace) >= 0:
		return "", false, "contains spaces"
	case strings.Contains(s, "://"):
		return "", false, "a URL, not a host name"
	case s == ".":
		return "", false, "the root domain is not a host"
	}
	fqdn = strings.HasSuffix(s, ".")
	name = strings.TrimSuffix(s, ".")
	if len(name) > maxNameLen {
		return "", false, fmt.Sprintf("longer than %d characters", maxNameLen)
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		if strings.Count(name, ":") == 1 && isDigits(name[i+1:]) {
			return "", false, "has a port (" + quote(name[i:]) + "): give the host name or IP address only"
		}
		return "", false, "not a valid IPv6 address, and a host name has no ':'"
	}
	labels := strings.Split(name, ".")
	numeric := true
	for _, l := range labels {
		if l == "" {
			return "", false, "empty label (a leading dot or two dots in a row)"
		}
		if len(l) > 63 {
			return "", false, "label longer than 63 characters"
		}
		for _, c := range l {
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
				numeric = false
			case c > unicode.MaxASCII:
				return "", false, "non-ASCII characters: give the name in its IDNA (xn--) form"
			default:
				return "", false, "invalid character " + strconv.QuoteRune(c)
			}
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", false, "label " + quote(l) + " starts or ends with '-'"
		}
	}
	if numeric && len(labels) > 1 {
		return "", false, "not a valid IP address"
	}
	return name, fqdn, ""
}

func quote(s string) string { return strconv.Quote(s) }

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func itoa(i int) string { return strconv.Itoa(i) }
