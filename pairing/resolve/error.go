package resolve

import (
	"fmt"
	"strings"
)

// Kind classifies why Resolve failed.
type Kind int

// Failure kinds. The zero value is KindUnknown, which Resolve never returns.
const (
	KindUnknown Kind = iota
	// KindNXDomain: every candidate name got NXDOMAIN — the name does not
	// exist.
	KindNXDomain
	// KindServFail: the last answer was SERVFAIL, on every server.
	KindServFail
	// KindTimeout: no server answered within Timeout × Attempts, or ctx's
	// deadline passed (Err then wraps context.DeadlineExceeded).
	KindTimeout
	// KindRefused: the servers refused the query (REFUSED).
	KindRefused
	// KindNoAddress: the name exists (NOERROR) but has neither A nor AAAA
	// records.
	KindNoAddress
	// KindBadTarget: the target is empty, has spaces, or is neither an IP
	// address nor a valid host name. No query was sent.
	KindBadTarget
	// KindNoServers: Config has no servers, or a server is not an
	// "ip:port" address. No query was sent.
	KindNoServers
	// KindNetwork: the servers could not be reached (connection refused,
	// no route, ...).
	KindNetwork
	// KindServerError: the last answer had another error rcode (FORMERR,
	// NOTIMP, ...) or could not be used.
	KindServerError
	// KindCanceled: ctx was canceled; Err wraps context.Canceled.
	KindCanceled
)

var kindNames = [...]string{
	KindUnknown:     "unknown",
	KindNXDomain:    "nxdomain",
	KindServFail:    "servfail",
	KindTimeout:     "timeout",
	KindRefused:     "refused",
	KindNoAddress:   "no_address",
	KindBadTarget:   "bad_target",
	KindNoServers:   "no_servers",
	KindNetwork:     "network",
	KindServerError: "server_error",
	KindCanceled:    "canceled",
}

// String returns the kind's stable code, e.g. "nxdomain", "no_address"
// (suitable for pairing.StepResult.Code).
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Error is Resolve's failure. Result holds everything found and every
// exchange made before the failure.
type Error struct {
	Kind Kind
	// Target is the target as typed.
	Target string
	// Name is the name (FQDN, with trailing dot) whose lookup failed last;
	// empty for KindBadTarget and KindNoServers.
	Name string
	// Server is the server that gave the failing answer (or did not
	// answer); empty when no query was sent.
	Server string
	// Rcode is the failing answer's rcode ("NXDOMAIN", "SERVFAIL",
	// "REFUSED", "NOERROR" for KindNoAddress, ...); empty when there was no
	// answer (timeout, network error, cancel).
	Rcode string
	// Reason details KindBadTarget and KindNoServers.
	Reason string
	// Tried lists the candidate names queried, in order.
	Tried  []string
	Result Result
	// Err is the underlying error (a net.Error, ctx.Err(), ...), if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "resolve %q: ", e.Target)
	from := ""
	if e.Server != "" {
		from = " from " + e.Server
	}
	switch e.Kind {
	case KindNXDomain:
		fmt.Fprintf(&b, "no such host (NXDOMAIN%s; tried %s)", from, strings.Join(e.Tried, ", "))
	case KindServFail:
		fmt.Fprintf(&b, "DNS server failure looking up %s (SERVFAIL%s)", e.Name, from)
	case KindTimeout:
		fmt.Fprintf(&b, "no answer looking up %s (timeout, last server %s)", e.Name, e.Server)
	case KindRefused:
		fmt.Fprintf(&b, "DNS server refused to look up %s (REFUSED%s)", e.Name, from)
	case KindNoAddress:
		fmt.Fprintf(&b, "%s exists but has no A or AAAA record (NOERROR%s)", e.Name, from)
	case KindBadTarget:
		fmt.Fprintf(&b, "not a host name or IP address: %s", e.Reason)
	case KindNoServers:
		fmt.Fprintf(&b, "no usable DNS server: %s", e.Reason)
	case KindNetwork:
		fmt.Fprintf(&b, "cannot reach DNS server %s looking up %s", e.Server, e.Name)
	case KindServerError:
		if e.Rcode != "" {
			fmt.Fprintf(&b, "DNS server error looking up %s (%s%s)", e.Name, e.Rcode, from)
		} else {
			fmt.Fprintf(&b, "unusable DNS answer looking up %s%s", e.Name, from)
		}
	case KindCanceled:
		b.WriteString("canceled")
	default:
		fmt.Fprintf(&b, "%v", e.Kind)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Remedy says what the operator can do about the failure.
func (e *Error) Remedy() string {
	switch e.Kind {
	case KindNXDomain:
		return "Check the spelling of the name, use the machine's full DNS name, or enter its IP address; if the name is new, add it to DNS."
	case KindServFail:
		return "The DNS servers could not answer for this name; check the DNS server (its forwarders and the zone), or enter the machine's IP address."
	case KindTimeout:
		return "No DNS server answered: check that the appliance's DNS servers are up and reachable, or enter the machine's IP address."
	case KindRefused:
		return "The DNS server will not answer the appliance; allow the appliance's address to query it, or configure another DNS server."
	case KindNoAddress:
		return "The name exists but has no address record; add an A or AAAA record for it, or enter the machine's IP address."
	case KindBadTarget:
		return "Enter a host name (e.g. fileserver or fileserver.example.com) or an IP address, without spaces, port or URL."
	case KindNoServers:
		return "Configure at least one DNS server (an IP address) for the appliance."
	case KindNetwork:
		return "The appliance cannot reach its DNS servers; check its network settings and the DNS server addresses."
	case KindServerError:
		return "The DNS server gave an unusable answer; check the DNS server, or enter the machine's IP address."
	case KindCanceled:
		return "The lookup was stopped; run the step again."
	}
	return ""
}
