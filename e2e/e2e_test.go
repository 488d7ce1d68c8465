// Package e2e runs the real cairn-appliance and cairn-agent binaries
// against each other on loopback (and, for NAT, in a network namespace).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var bin string // directory of the built binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cairn-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	flag.Parse()
	// Tests run the programs built with the race detector; benchmarks
	// measure them as they ship.
	race := []string{"-race"}
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		race = nil
	}
	code := func() int {
		defer os.RemoveAll(dir)
		for _, cmd := range []string{"cairn-appliance", "cairn-agent", "cairn-activation"} {
			args := append(append([]string{"build"}, race...), "-o", filepath.Join(dir, cmd), "../cmd/"+cmd)
			build := exec.Command("go", args...)
			build.Stdout, build.Stderr = os.Stderr, os.Stderr
			if err := build.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "build", cmd+":", err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// proc is a running binary whose log lines are watched.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  []string
	seen chan struct{} // closed and replaced on every new line
	done chan struct{}
}

// start runs a binary (copied into dir when dir is not "", so that it
// finds agent.conf next to itself); it is killed when the test ends.
func start(t testing.TB, name string, env []string, wrap []string, args ...string) *proc {
	t.Helper()
	path := filepath.Join(bin, name)
	argv := append(append([]string{}, wrap...), path)
	argv = append(argv, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: cmd, seen: make(chan struct{}), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log = append(p.log, sc.Text())
			close(p.seen)
			p.seen = make(chan struct{})
			p.mu.Unlock()
		}
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s log:\n%s", name, strings.Join(p.log, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// waitLog waits for a log line matching re and returns its submatches.
func (p *proc) waitLog(re string, timeout time.Duration) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(timeout)
	next := 0
	for {
		p.mu.Lock()
		lines, seen := p.log[next:], p.seen
		next = len(p.log)
		p.mu.Unlock()
		for _, l := range lines {
			if m := rx.FindStringSubmatch(l); m != nil {
				return m
			}
		}
		select {
		case <-seen:
		case <-p.done:
			p.mu.Lock()
			more := len(p.log) > next
			p.mu.Unlock()
			if !more {
				p.t.Fatalf("%s exited (%v) before logging %q", p.name, p.cmd.ProcessState, re)
			}
		case <-deadline:
			p.t.Fatalf("%s did not log %q within %s", p.name, re, timeout)
		}
	}
}

// appliance is a running cairn-appliance.
type appliance struct {
	*proc
	url, gateway string
	// data is the data directory; token the API token the appliance
	// wrote there for its command line at this start.
	data, token string
}

func startAppliance(t testing.TB, data, gateway string) *appliance {
	t.Helper()
	return launchAppliance(t, data, "-gateway", gateway, "-name", "test-appliance")
}

// launchAppliance starts cairn-appliance on data with a loopback HTTP port
// and args, and reads the API token it writes at start.
func launchAppliance(t testing.TB, data string, args ...string) *appliance {
	t.Helper()
	p := start(t, "cairn-appliance", nil, nil, append([]string{"-data", data, "-listen", "127.0.0.1:0"}, args...)...)
	a := &appliance{proc: p, data: data}
	a.url = p.waitLog(`cairn appliance running"? url=(http://\S+)/`, 30*time.Second)[1]
	if i := slices.Index(args, "-gateway"); i < 0 || i+1 == len(args) || args[i+1] != "" {
		a.gateway = p.waitLog(`agent gateway listening"? addr=(\S+)`, 30*time.Second)[1]
	}
	tok, err := os.ReadFile(filepath.Join(data, "api.token"))
	if err != nil {
		t.Fatalf("the appliance wrote no API token: %v", err)
	}
	a.token = strings.TrimSpace(string(tok))
	return a
}

// request is a request to the appliance's API with its API token.
func (a *appliance) request(t testing.TB, method, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, a.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	return req
}

func (a *appliance) get(t testing.TB, path string, out any) int {
	t.Helper()
	resp, err := http.DefaultClient.Do(a.request(t, http.MethodGet, path, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode
}

// post sends body as JSON and decodes the answer, whatever its status,
// into out.
func (a *appliance) post(t testing.TB, path string, body, out any) int {
	t.Helper()
	return a.send(t, http.MethodPost, path, body, out, true)
}

// put sends body as JSON with PUT and decodes a 2xx answer into out.
func (a *appliance) put(t testing.TB, path string, body, out any) int {
	t.Helper()
	return a.send(t, http.MethodPut, path, body, out, false)
}

// do sends a request without a body and returns the status.
func (a *appliance) do(t testing.TB, method, path string) int {
	t.Helper()
	return a.send(t, method, path, nil, nil, false)
}

// send makes a request with body (JSON; none if nil) and decodes the
// answer into out (if not nil): a 2xx answer, or any when anyStatus.
func (a *appliance) send(t testing.TB, method, path string, body, out any, anyStatus bool) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req := a.request(t, method, path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if out != nil && (anyStatus || resp.StatusCode/100 == 2) {
		if err := json.Unmarshal(rb, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, rb)
		}
	}
	return resp.StatusCode
}

type agentInfo struct {
	ID          string `json:"id"`
	Mode        string `json:"mode"`
	Fingerprint string `json:"fingerprint"`
	Connected   bool   `json:"connected"`
	Session     *struct {
		RemoteAddr     string    `json:"remote_addr"`
		Hostname       string    `json:"hostname"`
		ConnectedSince time.Time `json:"connected_since"`
		LastSeen       time.Time `json:"last_seen"`
		LastDuplicate  *struct {
			RemoteAddr string `json:"remote_addr"`
			Count      int    `json:"count"`
		} `json:"last_duplicate"`
	} `json:"session"`
}

// waitConnected polls the appliance's agent list (bounded in time) until
// the agent is connected.
func (a *appliance) waitConnected(t testing.TB, id string, timeout time.Duration) agentInfo {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var agents []agentInfo
		a.get(t, "/api/agents", &agents)
		for _, ag := range agents {
			if ag.ID == id && ag.Connected {
				return ag
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s not connected within %s: %+v", id, timeout, agents)
		}
		select {
		case <-a.done:
			t.Fatal("appliance exited")
		case <-time.After(50 * time.Millisecond): // polling interval, not synchronisation
		}
	}
}

// checkAgentAPI runs Hello, Ping and ListVolumes through the appliance.
func checkAgentAPI(t *testing.T, a *appliance, id string) {
	t.Helper()
	var hello struct {
		AgentID         string `json:"agent_id"`
		Fingerprint     string `json:"fingerprint"`
		Hostname        string `json:"hostname"`
		Os              string `json:"os"`
		ProtocolVersion uint32 `json:"protocol_version"`
	}
	if code := a.get(t, "/api/agents/"+id+"/hello", &hello); code != 200 {
		t.Fatalf("hello: HTTP %d", code)
	}
	host, _ := os.Hostname()
	if hello.AgentID != id || hello.Os != "linux" || hello.Hostname != host || hello.ProtocolVersion != 2 ||
		!strings.HasPrefix(hello.Fingerprint, "SHA256:") {
		t.Fatalf("hello: %+v", hello)
	}
	var ping struct {
		RTT int64 `json:"rtt_ns"`
	}
	if code := a.get(t, "/api/agents/"+id+"/ping", &ping); code != 200 || ping.RTT <= 0 {
		t.Fatalf("ping: HTTP %d, %+v", code, ping)
	}
	var vols struct {
		Volumes []struct {
			ID          string   `json:"id"`
			MountPoints []string `json:"mount_points"`
			SizeBytes   uint64   `json:"size_bytes"`
		} `json:"volumes"`
	}
	if code := a.get(t, "/api/agents/"+id+"/volumes", &vols); code != 200 {
		t.Fatalf("volumes: HTTP %d", code)
	}
	// Whatever the machine mounts, /proc is never a volume and every
	// volume has a mount point.
	for _, v := range vols.Volumes {
		if len(v.MountPoints) == 0 || !strings.HasPrefix(v.ID, "/dev/") {
			t.Fatalf("volume %+v", v)
		}
	}
	var writers struct {
		Writers          []any  `json:"writers"`
		SnapshotProvider string `json:"snapshot_provider"`
	}
	if code := a.get(t, "/api/agents/"+id+"/writers", &writers); code != 200 || len(writers.Writers) != 0 || writers.SnapshotProvider == "" {
		t.Fatalf("writers: HTTP %d, %+v", code, writers)
	}
}

func TestDirectMode(t *testing.T) {
	a := startAppliance(t, t.TempDir(), "127.0.0.1:0")
	state := t.TempDir()
	ag := start(t, "cairn-agent", nil, nil, "-state", state, "-listen", "127.0.0.1:0")
	addr := ag.waitLog(`listening for the appliance \(direct mode\)"? addr=(\S+)`, 30*time.Second)[1]

	var st map[string]any
	if code := a.post(t, "/api/agents/direct", map[string]string{"agent_id": "lan1", "address": addr}, &st); code != 200 {
		t.Fatalf("pair: HTTP %d: %v", code, st)
	}
	info := a.waitConnected(t, "lan1", 10*time.Second)
	if info.Mode != "direct" || info.Session.RemoteAddr != addr {
		t.Fatalf("agent %+v", info)
	}
	checkAgentAPI(t, a, "lan1")
	ag.waitLog(`paired with appliance"? appliance=test-appliance`, 10*time.Second)
	if _, err := os.Stat(filepath.Join(state, "appliance.json")); err != nil {
		t.Fatalf("agent did not pin the appliance: %v", err)
	}

	// Another appliance cannot take over the paired agent.
	b := startAppliance(t, t.TempDir(), "127.0.0.1:0")
	var e struct{ Error string }
	if code := b.post(t, "/api/agents/direct", map[string]string{"agent_id": "lan1", "address": addr}, &e); code/100 == 2 {
		t.Fatal("a second appliance paired with a paired agent")
	}
	ag.waitLog(`appliance connection refused`, 10*time.Second)

	// After unpair on the agent, it can be paired again.
	out, err := exec.Command(filepath.Join(bin, "cairn-agent"), "unpair", "-state", state).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "unpaired from appliance test-appliance") {
		t.Fatalf("unpair: %v: %s", err, out)
	}
	if code := b.post(t, "/api/agents/direct", map[string]string{"agent_id": "lan1", "address": addr}, &st); code != 200 {
		t.Fatalf("pair after unpair: HTTP %d: %v", code, st)
	}
	b.waitConnected(t, "lan1", 10*time.Second)
}

func TestReverseModeSurvivesApplianceRestart(t *testing.T) {
	data := t.TempDir()
	a := startAppliance(t, data, "127.0.0.1:0")
	out, err := exec.Command(filepath.Join(bin, "cairn-appliance"), "token", "create", "-agent", "nat1", "-url", a.url, "-data", a.data).CombinedOutput()
	if err != nil {
		t.Fatalf("token create: %v: %s", err, out)
	}
	tok := regexp.MustCompile(`(?m)^  (\d+\|[0-9A-Za-z]{40,})$`).FindStringSubmatch(string(out))
	if tok == nil {
		t.Fatalf("no token in:\n%s", out)
	}
	ag := start(t, "cairn-agent", []string{"CAIRN_AGENT_TOKEN=" + tok[1]}, nil,
		"-state", t.TempDir(), "-appliance", a.gateway, "-listen", "off")
	info := a.waitConnected(t, "nat1", 20*time.Second)
	if info.Mode != "reverse" || info.Fingerprint == "" {
		t.Fatalf("agent %+v", info)
	}
	checkAgentAPI(t, a, "nat1")
	// The secret is in no log.
	secret := strings.SplitN(tok[1], "|", 2)[1]
	for _, p := range []*proc{a.proc, ag} {
		p.mu.Lock()
		for _, l := range p.log {
			if strings.Contains(l, secret) {
				t.Errorf("%s logged the token secret: %s", p.name, l)
			}
		}
		p.mu.Unlock()
	}

	// Kill the appliance; start it again on the same data and port.
	gw := a.gateway
	a.kill()
	ag.waitLog(`disconnected from the appliance`, 20*time.Second)
	a2 := startAppliance(t, data, gw)
	start := time.Now()
	a2.waitConnected(t, "nat1", 75*time.Second) // the backoff cap is 60 s
	t.Logf("agent back %s after the appliance restarted", time.Since(start).Round(time.Millisecond))
	checkAgentAPI(t, a2, "nat1")
}

func TestAgentConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		conf, env string
		want      string
	}{
		"no token":          {conf: "appliance = 127.0.0.1:1\n", want: "needs an agent token"},
		"malformed in conf": {conf: "appliance = 127.0.0.1:1\ntoken = 12|short\n", want: "agent.conf is malformed"},
		"malformed in env":  {conf: "appliance = 127.0.0.1:1\n", env: "CAIRN_AGENT_TOKEN=abc", want: "CAIRN_AGENT_TOKEN is malformed"},
		"unknown key":       {conf: "tokn = 1|x\n", want: `unknown key "tokn"`},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			exe := filepath.Join(dir, "cairn-agent")
			b, err := os.ReadFile(filepath.Join(bin, "cairn-agent"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(exe, b, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "agent.conf"), []byte(tc.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, exe)
			cmd.Env = os.Environ()
			if tc.env != "" {
				cmd.Env = append(cmd.Env, tc.env)
			}
			out, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
				t.Fatalf("got %v, output %q; want exit 2 and %q", err, out, tc.want)
			}
			if strings.Contains(string(out), "short") {
				t.Fatalf("the token's text is in the message: %s", out)
			}
		})
	}
}

// TestAPINeedsToken: cairn-appliance serves the web UI, and the REST API
// only to a session or an API token; the command line uses the token the
// appliance writes into its data directory at each start.
func TestAPINeedsToken(t *testing.T) {
	data := t.TempDir()
	a := startAppliance(t, data, "127.0.0.1:0")
	status := func(req *http.Request) int {
		t.Helper()
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	plain := func(path string) *http.Request {
		req, err := http.NewRequest(http.MethodGet, a.url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	if code := status(plain("/api/v1/agents")); code != http.StatusUnauthorized {
		t.Errorf("API without a token: HTTP %d, want 401", code)
	}
	if code := status(a.request(t, http.MethodGet, "/api/v1/agents", nil)); code != http.StatusOK {
		t.Errorf("API with the token: HTTP %d, want 200", code)
	}
	if code := status(plain("/healthz")); code != http.StatusOK {
		t.Errorf("/healthz: HTTP %d, want 200 without a token", code)
	}
	if code := status(plain("/")); code != http.StatusSeeOther {
		t.Errorf("/ before the admin exists: HTTP %d, want 303 (to /setup)", code)
	}
	if fi, err := os.Stat(filepath.Join(data, "api.token")); err != nil {
		t.Errorf("api.token: %v", err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("api.token: mode %v, want 0600", fi.Mode().Perm())
	}
	cli := func(dataDir string) ([]byte, error) {
		return exec.Command(filepath.Join(bin, "cairn-appliance"), "agents", "-url", a.url, "-data", dataDir).CombinedOutput()
	}
	if out, err := cli(data); err != nil {
		t.Errorf("cairn-appliance agents: %v: %s", err, out)
	}
	if out, err := cli(t.TempDir()); err == nil || !strings.Contains(string(out), "no API token") {
		t.Errorf("cairn-appliance agents with a data directory without a token: %v: %s", err, out)
	}

	// A restart writes a new token; the old one stops working.
	old := *a
	a.kill()
	a = startAppliance(t, data, "127.0.0.1:0")
	if a.token == old.token {
		t.Fatal("the restart wrote the same token")
	}
	req := a.request(t, http.MethodGet, "/api/v1/agents", nil)
	req.Header.Set("Authorization", "Bearer "+old.token)
	if code := status(req); code != http.StatusUnauthorized {
		t.Errorf("the old token after a restart: HTTP %d, want 401", code)
	}
	if out, err := cli(data); err != nil {
		t.Errorf("cairn-appliance agents after a restart: %v: %s", err, out)
	}
}
