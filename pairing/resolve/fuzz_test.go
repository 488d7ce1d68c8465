package resolve

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// FuzzResolve checks that Resolve never panics on any target, and that it
// returns either addresses or an *Error of a known kind, against the
// in-process test server. Run it bounded, e.g.
//
//	go test -run '^$' -fuzz FuzzResolve -fuzztime 20s -parallel 1 ./pairing/resolve/
func FuzzResolve(f *testing.F) {
	for _, s := range []string{
		"host", "host.", "host.lan.cairn.test", "HOST.LAN.CAIRN.TEST.", "alias.cairn.test",
		"nodata.cairn.test", "big.cairn.test", "nosuch", "192.0.2.10", "192.0.2.30", "2001:db8::10",
		"[2001:db8::10]", "fe80::1%eth0", "::ffff:192.0.2.10", "", " ", "a..b", "-x", "x:1",
		"\x00", "é.test", `a\.b`, "10.2.0.192.in-addr.arpa.", "*.cairn.test",
	} {
		f.Add(s)
	}
	srv := startServer(f, newZone(f, testZone))
	cfg := Config{
		Servers:  []string{srv},
		Search:   []string{"lan.cairn.test", "cairn.test"},
		Timeout:  2 * time.Second,
		Attempts: 1,
	}
	f.Fuzz(func(t *testing.T, target string) {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		res, err := Resolve(ctx, cfg, target)
		if res.Target != target {
			t.Fatalf("Target %q, want %q", res.Target, target)
		}
		if err == nil {
			if len(res.Addrs) == 0 {
				t.Fatalf("%q: no error and no address", target)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%q: error %T %v is not *Error", target, err, err)
		}
		switch e.Kind {
		case KindNXDomain, KindNoAddress, KindBadTarget:
		default:
			t.Fatalf("%q: unexpected kind %v: %v", target, e.Kind, e)
		}
		_ = e.Error()
		_ = e.Remedy()
	})
}

func FuzzParseHosts(f *testing.F) {
	f.Add([]byte(hostsText))
	f.Add([]byte("::ffff:127.0.0.1 mapped\n fe80::1%eth0 zoned\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHosts(bytes.NewReader(b))
		if err != nil {
			return
		}
		for name, addrs := range h.byName {
			for _, ip := range addrs {
				if !slices.Contains(h.names(ip), name) {
					t.Fatalf("%s → %s, but not back", name, ip)
				}
			}
		}
	})
}
