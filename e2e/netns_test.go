package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// requireNetns fails (under make test, which sets CAIRN_TEST_NETNS=1) or
// skips (plain go test) without root and iproute2.
func requireNetns(t *testing.T) {
	t.Helper()
	var missing string
	if os.Geteuid() != 0 {
		missing = "root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		missing = "iproute2 (ip)"
	}
	if missing == "" {
		return
	}
	if os.Getenv("CAIRN_TEST_NETNS") == "1" {
		t.Fatalf("CAIRN_TEST_NETNS=1 but %s is missing", missing)
	}
	t.Skipf("needs %s: run make test as root", missing)
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// TestNATReverseChannel puts the agent in its own network namespace,
// joined to this one by a veth pair on a private /30, with no listener the
// appliance could reach: the appliance cannot open a connection to it, and
// still drives it through the reverse channel the agent opened.
func TestNATReverseChannel(t *testing.T) {
	requireNetns(t)
	pid := os.Getpid() % 10000
	ns := fmt.Sprintf("cairn-nat-%d", pid)
	hostIf, nsIf := fmt.Sprintf("cairnh%d", pid), fmt.Sprintf("cairnn%d", pid)
	// 10.201.x.y/30: host .1, agent .2; x.y from the pid so that parallel
	// runs on one machine do not collide.
	net4 := fmt.Sprintf("10.201.%d.%d", (pid/64)%256, (pid%64)*4)
	base := net.ParseIP(net4).To4()
	hostIP := net.IPv4(base[0], base[1], base[2], base[3]+1).String()
	agentIP := net.IPv4(base[0], base[1], base[2], base[3]+2).String()

	ip(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip(t, "link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	t.Cleanup(func() { exec.Command("ip", "link", "del", hostIf).Run() })
	ip(t, "link", "set", nsIf, "netns", ns)
	ip(t, "addr", "add", hostIP+"/30", "dev", hostIf)
	ip(t, "link", "set", hostIf, "up")
	ip(t, "-n", ns, "addr", "add", agentIP+"/30", "dev", nsIf)
	ip(t, "-n", ns, "link", "set", nsIf, "up")
	ip(t, "-n", ns, "link", "set", "lo", "up")

	a := startAppliance(t, t.TempDir(), hostIP+":0")
	out, err := exec.Command(filepath.Join(bin, "cairn-appliance"), "token", "create", "-agent", "behind-nat", "-url", a.url, "-data", a.data).CombinedOutput()
	if err != nil {
		t.Fatalf("token create: %v: %s", err, out)
	}
	tok := regexp.MustCompile(`(?m)^  (\d+\|[0-9A-Za-z]{40,})$`).FindStringSubmatch(string(out))
	if tok == nil {
		t.Fatalf("no token in:\n%s", out)
	}
	start(t, "cairn-agent", []string{"CAIRN_AGENT_TOKEN=" + tok[1]}, []string{"ip", "netns", "exec", ns},
		"-state", t.TempDir(), "-appliance", a.gateway, "-listen", "off")

	info := a.waitConnected(t, "behind-nat", 30*time.Second)
	if host, _, _ := net.SplitHostPort(info.Session.RemoteAddr); host != agentIP {
		t.Fatalf("agent connected from %s, want %s", info.Session.RemoteAddr, agentIP)
	}
	checkAgentAPI(t, a, "behind-nat")

	// The appliance cannot reach the agent the other way.
	var e struct{ Error string }
	code := a.post(t, "/api/agents/direct", map[string]string{"agent_id": "direct-try", "address": net.JoinHostPort(agentIP, "25568")}, &e)
	if code/100 == 2 || !strings.Contains(e.Error, "connect to agent") {
		t.Fatalf("direct connection to the agent in the namespace: HTTP %d %q", code, e.Error)
	}
}
