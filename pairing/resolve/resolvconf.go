package resolve

import (
	"net"
	"time"

	"github.com/miekg/dns"
)

// FromResolvConf reads a resolv.conf(5) file (usually /etc/resolv.conf)
// with dns.ClientConfigFromFile: its nameservers (each with port 53), its
// search list ("search" or "domain"), and its options ndots, timeout and
// attempts (which default to 1, 5 s and 2 when the file does not set
// them). A file without nameserver gives a Config without servers, which
// Resolve refuses with KindNoServers; no server is made up.
func FromResolvConf(path string) (Config, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return Config{}, err
	}
	port := cc.Port
	if port == "" {
		port = "53"
	}
	cfg := Config{
		Ndots:    cc.Ndots,
		Timeout:  time.Duration(cc.Timeout) * time.Second,
		Attempts: cc.Attempts,
	}
	for _, s := range cc.Servers {
		cfg.Servers = append(cfg.Servers, net.JoinHostPort(s, port))
	}
	cfg.Search = append(cfg.Search, cc.Search...)
	return cfg, nil
}
