package pairing

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cairnbackup/cairn/pairing/resolve"
)

// Resolve runs the Resolve step: the target (host name, FQDN or IP) to
// addresses, with the server that answered and whether forward and reverse
// lookups agree. Forward and reverse disagreeing is a warning.
func Resolve(ctx context.Context, cfg resolve.Config, target string) StepResult {
	res, err := resolve.Resolve(ctx, cfg, target)
	if err != nil {
		var re *resolve.Error
		if !errors.As(err, &re) {
			return fail(StepResolve, "resolve_failed", err.Error(), "retry this step", nil)
		}
		code, remedy := resolveRemedy(re, cfg)
		return fail(StepResolve, code, re.Error(), remedy, re.Result)
	}
	addrs := make([]string, len(res.Addrs))
	for i, a := range res.Addrs {
		addrs[i] = a.String()
	}
	detail := fmt.Sprintf("%s → %s (answered by %s)", target, strings.Join(addrs, ", "), res.Server)
	if res.IsIP {
		detail = fmt.Sprintf("%s is an address", target)
		if len(res.PTR) > 0 {
			detail += fmt.Sprintf("; PTR %s (answered by %s)", strings.Join(res.PTR, ", "), res.Server)
		}
	} else if res.Name != "" && !strings.EqualFold(strings.TrimSuffix(res.Name, "."), strings.TrimSuffix(target, ".")) {
		detail = fmt.Sprintf("%s (%s) → %s (answered by %s)", target, res.Name, strings.Join(addrs, ", "), res.Server)
	}
	if len(res.Warnings) > 0 {
		detail += " (" + strings.Join(res.Warnings, "; ") + ")"
	}
	if !res.ForwardReverseAgree {
		why := "the reverse lookup (PTR) of its addresses does not name it"
		if res.IsIP {
			why = "it has no PTR record"
			if len(res.PTR) > 0 {
				why = "its PTR name does not resolve back to it"
			}
		}
		return warn(StepResolve, "reverse_mismatch", detail+"; forward and reverse DNS disagree: "+why,
			"pairing goes on; fix the PTR record on the DNS server so that logs and certificates name the machine consistently", res)
	}
	return ok(StepResolve, detail+"; forward and reverse agree", res)
}

func resolveRemedy(e *resolve.Error, cfg resolve.Config) (code, remedy string) {
	servers := strings.Join(cfg.Servers, ", ")
	switch e.Kind {
	case resolve.KindNXDomain:
		search := ""
		if len(cfg.Search) > 0 {
			search = " (search domains: " + strings.Join(cfg.Search, ", ") + ")"
		}
		return "nxdomain", "the name does not exist" + search + ": check its spelling, use the FQDN or the IP address, or add the machine to DNS"
	case resolve.KindServFail:
		return "servfail", "the DNS server (" + servers + ") failed to answer for this name: check the server and its forwarders, or pair by IP address"
	case resolve.KindTimeout:
		return "timeout", "no DNS server answered (" + servers + "): check the appliance's network and /etc/resolv.conf, or pair by IP address"
	case resolve.KindRefused:
		return "refused", "the DNS server (" + servers + ") refuses this appliance's queries: allow it on the server, or pair by IP address"
	case resolve.KindNoAddress:
		return "no_address", "the name exists but has no address (A/AAAA) record: add one, or pair by IP address"
	case resolve.KindBadTarget:
		return "bad_target", "enter a host name, an FQDN or an IP address"
	case resolve.KindNoServers:
		return "no_servers", "configure DNS servers for the appliance (/etc/resolv.conf), or pair by IP address"
	case resolve.KindNetwork:
		return "network", "the DNS servers (" + servers + ") cannot be reached: check the appliance's network"
	case resolve.KindCanceled:
		return "canceled", "retry this step"
	case resolve.KindServerError:
		return "server_error", "the DNS server (" + servers + ") gave an unusable answer: check it, or pair by IP address"
	}
	return "dns_error", "check the DNS server (" + servers + "), or pair by IP address"
}
