package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkBackup measures the data path as it ships (make bench-backup):
// cairn-agent and cairn-appliance as separate processes over the real
// channel, an image of benchImageSize bytes, half random and half zero
// 64 KiB blocks, on the embedded pool. In the same run, for comparison:
// restic backup --stdin of the same image into a local repository, and a
// plain sequential read of the image. It prints a table and writes it to
// bench/results.md (BENCH_RESULTS overrides the path).
//
// Goals (issue 5): full backup ≥ 2× restic and ≥ 300 MB/s; incremental
// after changing 5% in random 64 KiB extents ≤ 1.3× the plain read's wall
// time, with bytes sent ≤ 1.05× the changed bytes; agent peak RSS ≤ 64 MiB.
func BenchmarkBackup(b *testing.B) {
	size := int64(4 << 30)
	if s := os.Getenv("BENCH_IMAGE_SIZE"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < imageBlock {
			b.Fatalf("BENCH_IMAGE_SIZE=%q: want bytes", s)
		}
		size = n
	}
	restic, err := exec.LookPath("restic")
	if err != nil {
		b.Fatal("restic is missing: make bench-backup installs it (apt-get install restic)")
	}
	rounds := 3
	if s := os.Getenv("BENCH_ROUNDS"); s != "" {
		if rounds, err = strconv.Atoi(s); err != nil || rounds < 1 {
			b.Fatalf("BENCH_ROUNDS=%q: want a count", s)
		}
	}
	for range b.N {
		// Full backups: each round a new image (another seed: nothing
		// to deduplicate against), a new appliance and agent, and a new
		// restic repository; who goes first alternates. The disk, which
		// both must write half the image to, varies from run to run:
		// the medians and the median of the rounds' ratios are reported.
		var e *backupEnv
		var ours, theirs, ratios []float64 // seconds, seconds, restic/ours
		var resticRepo string
		for r := range rounds {
			if e != nil {
				e.agent.kill()
				e.app.kill()
			}
			e = newBackupEnv(b, size, 0.5, uint64(42+r))
			resticRepo = filepath.Join(b.TempDir(), "restic")
			runRestic(b, restic, resticRepo, "init")
			plainRead(b, e.image) // in the page cache for both
			syncDisks(b)
			var ourTime, resticTime time.Duration
			if r%2 == 0 {
				_, ourTime = timedBackup(e)
				resticTime = runRestic(b, restic, resticRepo, "backup", "--stdin", "--stdin-filename", "disk.img", "<", e.image)
			} else {
				resticTime = runRestic(b, restic, resticRepo, "backup", "--stdin", "--stdin-filename", "disk.img", "<", e.image)
				syncDisks(b)
				_, ourTime = timedBackup(e)
			}
			b.Logf("round %d: full backup %.2f s, restic %.2f s: %.2f×", r, ourTime.Seconds(), resticTime.Seconds(), resticTime.Seconds()/ourTime.Seconds())
			ours, theirs = append(ours, ourTime.Seconds()), append(theirs, resticTime.Seconds())
			ratios = append(ratios, resticTime.Seconds()/ourTime.Seconds())
		}
		fullTime := time.Duration(median(ours) * float64(time.Second))
		resticFull := time.Duration(median(theirs) * float64(time.Second))
		ratio := median(ratios)

		// Incrementals: each round changes another 5% and times the
		// incremental against a plain read, both from the disk (as a
		// backup of a real volume reads it: the page cache dropped
		// before each); the median of the rounds' ratios is reported,
		// and the largest sent/changed.
		var incs, reads, incRatios []float64
		var sentRatio float64
		var inc job
		var changed int64
		for r := range rounds {
			changed = changeImage(b, e.image, int(size/imageBlock/20), false, uint64(43+r))
			dropCaches(b)
			read := plainRead(b, e.image)
			dropCaches(b)
			var took time.Duration
			inc, took = timedBackup(e)
			b.Logf("round %d: 5%% incremental %.2f s, plain read %.2f s: %.2f×", r, took.Seconds(), read.Seconds(), took.Seconds()/read.Seconds())
			incs, reads = append(incs, took.Seconds()), append(reads, read.Seconds())
			incRatios = append(incRatios, took.Seconds()/read.Seconds())
			sentRatio = max(sentRatio, float64(inc.Progress.BytesSent)/float64(changed))
		}
		incCold := time.Duration(median(incs) * float64(time.Second))
		readCold := time.Duration(median(reads) * float64(time.Second))
		incRatio := median(incRatios)
		// Then both from the page cache, nothing changed.
		readWarm := plainRead(b, e.image)
		_, incWarm := timedBackup(e)
		resticInc := runRestic(b, restic, resticRepo, "backup", "--stdin", "--stdin-filename", "disk.img", "<", e.image)
		rss := peakRSS(b, e.agent.cmd.Process.Pid)

		mbps := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
		rows := [][]string{
			{fmt.Sprintf("full backup (median of %d rounds)", rounds), fmt.Sprintf("%.0f MB/s (%.1f s)", mbps(fullTime), fullTime.Seconds()),
				fmt.Sprintf("restic %.0f MB/s (%.1f s); ratio %.2f× (rounds: %s)", mbps(resticFull), resticFull.Seconds(), ratio, joinRatios(ratios)),
				"≥ 300 MB/s, ≥ 2× restic"},
			{fmt.Sprintf("incremental, 5%% changed, from disk (median of %d rounds)", rounds), fmt.Sprintf("%.2f s", incCold.Seconds()),
				fmt.Sprintf("plain read %.2f s; ratio %.2f× (rounds: %s)", readCold.Seconds(), incRatio, joinRatios(incRatios)),
				"≤ 1.3× plain read"},
			{"incremental, nothing changed, from the page cache", fmt.Sprintf("%.2f s", incWarm.Seconds()),
				fmt.Sprintf("plain read %.2f s: %.2f×; restic incremental (5%%) %.1f s", readWarm.Seconds(), incWarm.Seconds()/readWarm.Seconds(), resticInc.Seconds()),
				""},
			{"incremental bytes sent (last round)", fmt.Sprintf("%d", inc.Progress.BytesSent),
				fmt.Sprintf("changed %d; largest ratio of the rounds %.3f×", changed, sentRatio), "≤ 1.05× changed"},
			{"agent peak RSS", fmt.Sprintf("%.1f MiB", float64(rss)/(1<<20)), "", "≤ 64 MiB"},
		}
		b.ReportMetric(mbps(fullTime), "full-MB/s")
		b.ReportMetric(ratio, "x-restic")
		b.ReportMetric(incRatio, "inc/read")
		b.ReportMetric(sentRatio, "sent/changed")
		b.ReportMetric(float64(rss)/(1<<20), "agent-RSS-MiB")
		writeResults(b, size, rows)
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func joinRatios(xs []float64) string {
	var out []string
	for _, x := range xs {
		out = append(out, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(out, ", ")
}

func syncDisks(b testing.TB) {
	b.Helper()
	if err := exec.Command("sync").Run(); err != nil {
		b.Fatal(err)
	}
}

func timedBackup(e *backupEnv) (job, time.Duration) {
	start := time.Now()
	j := e.backup(30 * time.Minute)
	return j, time.Since(start)
}

// dropCaches writes dirty pages and drops the page cache (root only).
func dropCaches(b testing.TB) {
	b.Helper()
	syncDisks(b)
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		b.Fatalf("drop the page cache (the benchmark runs as root): %v", err)
	}
}

// plainRead reads the file sequentially in 1 MiB reads.
func plainRead(b testing.TB, path string) time.Duration {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, make([]byte, 1<<20)); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// runRestic runs restic with a throw-away password; "<" in args feeds the
// next argument as standard input. It returns the wall time until what
// restic wrote is on disk.
func runRestic(b testing.TB, restic, repo string, args ...string) time.Duration {
	b.Helper()
	var stdin io.Reader
	for i, a := range args {
		if a == "<" {
			f, err := os.Open(args[i+1])
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			stdin, args = f, args[:i]
			break
		}
	}
	cmd := exec.Command(restic, append([]string{"--repo", repo, "--quiet", "--no-cache"}, args...)...)
	cmd.Env = append(os.Environ(), "RESTIC_PASSWORD=cairn-bench")
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("restic %s: %v: %s", strings.Join(args, " "), err, out.String())
	}
	// A backup is done when it is on disk: the appliance's job ends after
	// fsync; restic leaves what it wrote to the page cache, so it is
	// timed until sync has written it.
	syncDisks(b)
	return time.Since(start)
}

// peakRSS is a process's peak resident set size (VmHWM) in bytes.
func peakRSS(b testing.TB, pid int) int64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// writeResults prints the table and writes it, with the machine, date and
// commit, to bench/results.md.
func writeResults(b testing.TB, size int64, rows [][]string) {
	b.Helper()
	var md strings.Builder
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	cpu := "unknown"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	fmt.Fprintf(&md, "# Backup benchmark\n\n`make bench-backup` (e2e.BenchmarkBackup): cairn-agent and cairn-appliance as two processes over the\n")
	fmt.Fprintf(&md, "mTLS channel, embedded pool, a %.1f GiB image of half random, half zero 64 KiB blocks. Times run until\n", float64(size)/(1<<30))
	fmt.Fprintf(&md, "the data is on disk (the appliance's job ends after fsync; restic is followed by sync). The image is in the\n")
	fmt.Fprintf(&md, "page cache for the full backups; for the 5%% incremental and its plain read the cache is dropped first.\n\n")
	fmt.Fprintf(&md, "- date: %s\n- commit: %s\n- machine: %d cores (%s), %s, Go %s\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), strings.TrimSpace(string(commit)), runtime.NumCPU(), cpu, memTotal(), runtime.Version())
	md.WriteString("| | result | compared | goal |\n|---|---|---|---|\n")
	for _, r := range rows {
		md.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	fmt.Print("\n" + md.String())
	path := os.Getenv("BENCH_RESULTS")
	if path == "" {
		path = "../bench/results.md"
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(md.String()), 0o644); err != nil {
		b.Fatal(err)
	}
}

func memTotal() string {
	info, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "memory unknown"
	}
	for _, l := range strings.Split(string(info), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return fmt.Sprintf("%.0f GiB memory", float64(kb)/(1<<20))
		}
	}
	return "memory unknown"
}
