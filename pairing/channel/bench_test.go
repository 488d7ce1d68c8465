package channel_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/agent"
	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/pairing/channel"
	"github.com/cairnbackup/cairn/pairing/identity"
)

// BenchmarkChannel runs the agent side in a child process (this test binary
// again, as TestBenchChild: the real agent, package agent's ServeDirect,
// which the benchmark pairs first) and measures from the appliance side,
// in the same run and alternately:
//
//   - plain: benchBytes read to the end over TLS 1.3 with the channel's
//     identity configuration and the agent's key, written by the child in
//     benchMessage chunks;
//   - channel: a SpeedTest of benchBytes in benchMessage messages, gRPC over
//     yamux over the same kind of TLS connection, received as bulk data
//     (channel.BulkCall: counted in gRPC's buffers, not copied out);
//
// each benchRounds times, and reports the medians (MB/s of 10^6 bytes),
// their ratio (the channel should reach at least benchTarget of plain TLS),
// and the round trip of benchPings unary Ping RPCs (median and p99) and of
// yamux's own ping. On Linux it also reports the CPU time each transfer took
// in both processes (median per mode): on a machine shared with other work
// the throughputs vary from run to run, the CPU times much less.
//
// CAIRN_BENCH_CHANNEL_CHILD_CPUPROFILE=file writes the child's CPU profile
// (-test.cpuprofile writes the parent's).
func BenchmarkChannel(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), benchDeadline)
	defer cancel()

	self, err := identity.New("bench-appliance")
	if err != nil {
		b.Fatal(err)
	}
	child, err := startBenchChild(ctx, self.Fingerprint())
	if err != nil {
		b.Fatal(err)
	}
	defer child.stop(b)

	verify := identity.Pinned(child.fp)
	s, err := channel.DialAgent(ctx, child.chanAddr, self, verify, nil)
	if err != nil {
		b.Fatalf("dial channel: %v", err)
	}
	defer s.Close()
	cc, err := s.ClientConn()
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	client := agentv1.NewAgentServiceClient(cc)
	if _, err := client.Pair(ctx, &agentv1.PairRequest{ApplianceFingerprint: self.Fingerprint().String(),
		ApplianceName: "bench-appliance", AgentId: "bench-agent"}); err != nil {
		b.Fatalf("pair: %v", err)
	}

	for range b.N {
		var plain, chans []float64 // MB/s
		var plainCPU, chanCPU []cpuUse
		for round := range benchRounds {
			var p, c time.Duration
			cpu, err := child.measure(func() (err error) {
				p, err = plainTransfer(ctx, child.plainAddr, self, verify, benchBytes, benchMessage)
				return err
			})
			if err != nil {
				b.Fatalf("plain TLS, round %d: %v", round+1, err)
			}
			plainCPU = append(plainCPU, cpu)
			cpu, err = child.measure(func() (err error) {
				c, err = speedTest(ctx, client, benchBytes, benchMessage)
				return err
			})
			if err != nil {
				b.Fatalf("channel, round %d: %v", round+1, err)
			}
			chanCPU = append(chanCPU, cpu)
			plain, chans = append(plain, mbps(benchBytes, p)), append(chans, mbps(benchBytes, c))
			fmt.Printf("channel bench: round %d: plain TLS %7.1f MB/s (CPU %v), channel %7.1f MB/s (CPU %v)\n",
				round+1, plain[round], plainCPU[round], chans[round], chanCPU[round])
		}
		pMed, cMed := median(plain), median(chans)
		ratio := cMed / pMed

		pings, err := grpcPings(ctx, client, benchPings)
		if err != nil {
			b.Fatalf("ping: %v", err)
		}
		ypings, err := yamuxPings(s, benchYamuxPings)
		if err != nil {
			b.Fatalf("yamux ping: %v", err)
		}

		verdict := "ok"
		if ratio < benchTarget {
			verdict = "BELOW TARGET"
		}
		fmt.Printf("channel bench: plain TLS  %7.1f MB/s (median of %d x %d MiB)\n", pMed, benchRounds, benchBytes>>20)
		fmt.Printf("channel bench: channel    %7.1f MB/s (median of %d x %d MiB, gRPC SpeedTest, %d KiB messages)\n",
			cMed, benchRounds, benchBytes>>20, benchMessage>>10)
		fmt.Printf("channel bench: ratio      %7.3f (target >= %.2f: %s)\n", ratio, benchTarget, verdict)
		fmt.Printf("channel bench: gRPC Ping  median %v, p99 %v (%d RPCs)\n",
			pct(pings, 50), pct(pings, 99), len(pings))
		fmt.Printf("channel bench: yamux ping median %v, p99 %v (%d pings)\n",
			pct(ypings, 50), pct(ypings, 99), len(ypings))

		if pc, cc := medianCPU(plainCPU), medianCPU(chanCPU); pc.ok && cc.ok {
			fmt.Printf("channel bench: CPU per GiB: plain TLS %v, channel %v (appliance + agent); plain/channel %.3f\n",
				pc, cc, pc.total().Seconds()/cc.total().Seconds())
			b.ReportMetric(pc.total().Seconds(), "plain-cpu-s")
			b.ReportMetric(cc.total().Seconds(), "channel-cpu-s")
		}
		b.ReportMetric(pMed, "plain-MB/s")
		b.ReportMetric(cMed, "channel-MB/s")
		b.ReportMetric(ratio, "ratio")
		b.ReportMetric(us(pct(pings, 50)), "ping-p50-µs")
		b.ReportMetric(us(pct(pings, 99)), "ping-p99-µs")
		b.ReportMetric(us(pct(ypings, 50)), "yamux-ping-p50-µs")
	}
}

const (
	benchBytes      = 1 << 30       // one transfer
	benchMessage    = 1<<20 - 1<<10 // SpeedTest message and plain TLS write: agent/service.go's speedChunk
	benchRounds     = 3
	benchPings      = 2000
	benchYamuxPings = 200
	benchTarget     = 0.70

	benchDeadline    = 8 * time.Minute // the whole benchmark
	transferDeadline = 2 * time.Minute // one transfer

	benchChildEnv     = "CAIRN_BENCH_CHANNEL_CHILD"            // set: TestBenchChild is the agent
	benchChildPeerEnv = "CAIRN_BENCH_CHANNEL_PEER"             // the appliance's fingerprint
	benchChildProfEnv = "CAIRN_BENCH_CHANNEL_CHILD_CPUPROFILE" // optional: the child's CPU profile
	benchChildLine    = "cairn-bench-child"
)

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pct is the p-th percentile of sorted (nearest rank).
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}

// cpuUse is the CPU time that one transfer took in each process.
type cpuUse struct {
	appliance, agent time.Duration
	ok               bool
}

func (u cpuUse) total() time.Duration { return u.appliance + u.agent }

func (u cpuUse) String() string {
	if !u.ok {
		return "n/a"
	}
	return fmt.Sprintf("%.2fs = %.2f + %.2f", u.total().Seconds(), u.appliance.Seconds(), u.agent.Seconds())
}

// medianCPU is the use of median total.
func medianCPU(v []cpuUse) cpuUse {
	s := slices.Clone(v)
	slices.SortFunc(s, func(a, b cpuUse) int { return int(a.total() - b.total()) })
	return s[len(s)/2]
}

// measure runs f and returns the CPU time it took in this process and the
// child.
func (c *benchChild) measure(f func() error) (cpuUse, error) {
	s0, o0, ok0 := cpuTimes(c.cmd.Process.Pid)
	if err := f(); err != nil {
		return cpuUse{}, err
	}
	s1, o1, ok1 := cpuTimes(c.cmd.Process.Pid)
	return cpuUse{appliance: s1 - s0, agent: o1 - o0, ok: ok0 && ok1}, nil
}

// plainTransfer asks the child's plain listener for n bytes in chunks of
// size and times reading them to the end.
func plainTransfer(ctx context.Context, addr string, id *identity.Identity, verify identity.Verifier,
	n int64, size int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, transferDeadline)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	conn := tls.Client(raw, identity.ClientConfig(id, channel.ALPN, verify))
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := conn.HandshakeContext(ctx); err != nil {
		return 0, err
	}
	var req [12]byte
	binary.BigEndian.PutUint64(req[:8], uint64(n))
	binary.BigEndian.PutUint32(req[8:], uint32(size))
	start := time.Now()
	if _, err := conn.Write(req[:]); err != nil {
		return 0, err
	}
	buf := make([]byte, size)
	var got int64
	for {
		k, err := conn.Read(buf)
		got += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("after %d bytes: %w", got, err)
		}
	}
	el := time.Since(start)
	if got != n {
		return 0, fmt.Errorf("got %d bytes, want %d", got, n)
	}
	return el, nil
}

// speedTest times a SpeedTest of n bytes in messages of size.
func speedTest(ctx context.Context, client agentv1.AgentServiceClient, n int64, size int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, transferDeadline)
	defer cancel()
	start := time.Now()
	st, err := client.SpeedTest(ctx, &agentv1.SpeedTestRequest{Bytes: uint64(n), MessageSize: uint32(size)},
		channel.BulkCall())
	if err != nil {
		return 0, err
	}
	var got int64
	var d channel.BulkData
	for {
		err := st.RecvMsg(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("after %d bytes: %w", got, err)
		}
		got += int64(d.Len())
		d.Free()
	}
	el := time.Since(start)
	if got != n {
		return 0, fmt.Errorf("got %d bytes, want %d", got, n)
	}
	return el, nil
}

// grpcPings returns the sorted round trips of n unary Ping RPCs.
func grpcPings(ctx context.Context, client agentv1.AgentServiceClient, n int) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, transferDeadline)
	defer cancel()
	for range 50 { // warm up
		if _, err := client.Ping(ctx, &agentv1.PingRequest{}); err != nil {
			return nil, err
		}
	}
	rtts := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := client.Ping(ctx, &agentv1.PingRequest{SentUnixNano: start.UnixNano()}); err != nil {
			return nil, err
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	return rtts, nil
}

// yamuxPings returns the sorted round trips of n yamux pings. A yamux ping
// has no deadline of its own but ConnectionWriteTimeout on its send.
func yamuxPings(s *channel.Session, n int) ([]time.Duration, error) {
	rtts := make([]time.Duration, 0, n)
	for range n {
		d, err := s.Ping()
		if err != nil {
			return nil, err
		}
		rtts = append(rtts, d)
	}
	slices.Sort(rtts)
	return rtts, nil
}

// benchChild is the agent process.
type benchChild struct {
	cmd       *exec.Cmd
	stdin     io.Closer
	done      chan struct{}
	chanAddr  string
	plainAddr string
	fp        identity.Fingerprint
}

// startBenchChild starts this test binary as TestBenchChild and reads its
// addresses and fingerprint. The child lives until its stdin is closed,
// ctx ends (it is killed) or its own deadline passes.
func startBenchChild(ctx context.Context, peer identity.Fingerprint) (*benchChild, error) {
	args := []string{"-test.run=^TestBenchChild$", "-test.count=1", "-test.timeout=" + benchDeadline.String()}
	if p := os.Getenv(benchChildProfEnv); p != "" {
		args = append(args, "-test.cpuprofile="+p)
	}
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), benchChildEnv+"=1", benchChildPeerEnv+"="+peer.String())
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &benchChild{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() {
			line := sc.Text()
			if !found && strings.HasPrefix(line, benchChildLine+" ") {
				found = true
				lines <- line
				continue
			}
			fmt.Println("child:", line)
		}
		close(lines)
	}()
	go func() { cmd.Wait(); close(c.done) }()

	fail := func(err error) (*benchChild, error) {
		cmd.Process.Kill()
		<-c.done
		return nil, err
	}
	select {
	case line, ok := <-lines:
		if !ok {
			return fail(errors.New("child exited without its addresses"))
		}
		for _, f := range strings.Fields(line)[1:] {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "chan":
				c.chanAddr = v
			case "plain":
				c.plainAddr = v
			case "fp":
				if c.fp, err = identity.ParseFingerprint(v); err != nil {
					return fail(fmt.Errorf("child's fingerprint: %w", err))
				}
			}
		}
		if c.chanAddr == "" || c.plainAddr == "" || c.fp.IsZero() {
			return fail(fmt.Errorf("child's line %q lacks an address or fingerprint", line))
		}
		return c, nil
	case <-time.After(30 * time.Second):
		return fail(errors.New("child did not start within 30s"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
}

// stop closes the child's stdin, which ends it, and kills it if it has not
// exited within a few seconds.
func (c *benchChild) stop(b *testing.B) {
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		b.Logf("child did not exit; killing it")
		c.cmd.Process.Kill()
		<-c.done
	}
}

// TestBenchChild is BenchmarkChannel's agent process: the agent serving
// direct mode from a fresh state directory, and a plain TLS server with
// the agent's key. It skips unless the benchmark started it.
func TestBenchChild(t *testing.T) {
	if os.Getenv(benchChildEnv) == "" {
		t.Skip("only as BenchmarkChannel's child process")
	}
	peer, err := identity.ParseFingerprint(os.Getenv(benchChildPeerEnv))
	if err != nil {
		t.Fatalf("%s: %v", benchChildPeerEnv, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), benchDeadline)
	defer cancel()
	go func() { // the parent closes stdin (or dies): stop
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	chanLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	context.AfterFunc(ctx, func() { chanLn.Close(); plainLn.Close() })

	// The real agent, unpaired: the benchmark pairs it.
	dir := t.TempDir()
	ag, err := agent.New(agent.Config{StateDir: dir, Listen: chanLn.Addr().String()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The agent's own key, for plain TLS.
	id, err := identity.LoadOrCreate(dir, "bench-agent")
	if err != nil {
		t.Fatal(err)
	}
	if id.Fingerprint() != ag.Fingerprint() {
		t.Fatalf("agent's key %s, loaded %s", ag.Fingerprint(), id.Fingerprint())
	}
	verify := identity.Pinned(peer)
	fmt.Printf("%s chan=%s plain=%s fp=%s\n", benchChildLine, chanLn.Addr(), plainLn.Addr(), id.Fingerprint())

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := ag.ServeDirect(ctx, chanLn); err != nil && ctx.Err() == nil {
			t.Errorf("agent: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		serveLoop(ctx, plainLn, func(raw net.Conn) {
			conn := tls.Server(raw, identity.ServerConfig(id, channel.ALPN, verify))
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			if err := plainServe(ctx, conn); err != nil && ctx.Err() == nil {
				t.Errorf("plain TLS: %v", err)
			}
		})
	}()
	wg.Wait()
}

// serveLoop runs serve on every connection ln accepts until ctx ends, and
// waits for them.
func serveLoop(ctx context.Context, ln net.Listener, serve func(net.Conn)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		if ctx.Err() != nil {
			raw.Close()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(raw)
		}()
	}
}

// plainServe reads a request (8 bytes of length, 4 of chunk size) and
// writes that many bytes in chunks of that size, then closes.
func plainServe(ctx context.Context, conn *tls.Conn) error {
	if err := conn.HandshakeContext(ctx); err != nil {
		return err
	}
	var req [12]byte
	if _, err := io.ReadFull(conn, req[:]); err != nil {
		return err
	}
	left := binary.BigEndian.Uint64(req[:8])
	size := int(binary.BigEndian.Uint32(req[8:]))
	if size <= 0 || size > channel.MaxMessage {
		return fmt.Errorf("chunk size %d", size)
	}
	buf := make([]byte, size)
	for left > 0 {
		n := min(left, uint64(size))
		if _, err := conn.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	return conn.CloseWrite()
}
