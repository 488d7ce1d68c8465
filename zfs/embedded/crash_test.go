package embedded

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/zfs"
)

// The crash test runs the pool in a child process (this test binary, running
// TestCrashChild) and kills it with SIGKILL at random moments: after some
// snapshots, inside GC, inside a snapshot's destruction, or after a random
// delay, possibly before the pool is even open. After each kill the parent
// opens the pool and checks that every snapshot the child reported is there,
// reads what it read when it was taken, and verifies; that whatever else is
// listed verifies too; and that tmp was emptied. Then the next child carries
// on in the same pool.

const (
	crashEnvDir  = "CAIRN_EMBEDDED_CRASH_DIR"
	crashEnvSeed = "CAIRN_EMBEDDED_CRASH_SEED"
	crashEnvNext = "CAIRN_EMBEDDED_CRASH_NEXT"

	crashImage     = "vol"
	crashImageSize = 3<<20 + 12345 // the last chunk is short
	crashKeep      = 4             // snapshots the child keeps before destroying the oldest
	crashSilence   = 10 * time.Second
)

func crashDataset(root zfs.DatasetName) zfs.DatasetName {
	ds, err := zfs.AgentDataset(root, "crash")
	if err != nil {
		panic(err)
	}
	return ds
}

// crashSnapNum is N of a snapshot named rN, or -1.
func crashSnapNum(name string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(name, "r"))
	if err != nil || !strings.HasPrefix(name, "r") {
		return -1
	}
	return n
}

// TestCrashChild is the child process of TestCrash; it does nothing in a
// normal test run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("helper process of TestCrash")
	}
	seed, err := strconv.ParseUint(os.Getenv(crashEnvSeed), 10, 64)
	check(t, err, "seed")
	next, err := strconv.Atoi(os.Getenv(crashEnvNext))
	check(t, err, "next")
	if err := crashChild(dir, seed, next); err != nil {
		fmt.Printf("error %v\n", err)
		t.Fatal(err)
	}
}

// crashChild writes, syncs, snapshots, destroys old snapshots and collects
// garbage until it is killed (or runs out of its bounded iterations). Each
// line on stdout is one unbuffered write:
//
//	open               the pool is open
//	snap rN <sha256>   snapshot rN was taken; its image hashes to <sha256>
//	destroy rN         about to destroy rN
//	gc                 about to run GC
func crashChild(dir string, seed uint64, next int) error {
	ctx := context.Background()
	// A small MaxDirty makes writes store chunks between syncs, so that
	// kills land while chunks sit in tmp, not yet in place.
	p, err := Open(Config{Dir: dir, Name: testPoolName, MaxDirty: 4 * DefaultChunkSize})
	if err != nil {
		return err
	}
	defer p.Close()
	fmt.Println("open")
	ds := crashDataset(p.Root())
	if err := p.CreateDataset(ctx, ds); err != nil && !errors.Is(err, zfs.ErrExists) {
		return err
	}
	if err := p.CreateImage(ctx, ds, crashImage, crashImageSize); err != nil && !errors.Is(err, zfs.ErrExists) {
		return err
	}
	img, err := p.OpenImage(ctx, ds, crashImage)
	if err != nil {
		return err
	}
	defer img.Close()
	// The model starts from the live image as the last child left it
	// (as of its last sync).
	m := make([]byte, crashImageSize)
	if _, err := img.ReadAt(m, 0); err != nil {
		return fmt.Errorf("read live image: %w", err)
	}
	snaps, err := p.Snapshots(ctx, ds)
	if err != nil {
		return err
	}
	var kept []string
	for _, s := range snaps {
		next = max(next, crashSnapNum(s.Name.Snap())+1)
		kept = append(kept, s.Name.Snap())
	}

	cs := int(p.ChunkSize())
	// A few chunk contents that recur across rounds and children, so that
	// dedup finds chunks that are stored, or garbage about to be collected.
	palette := make([][]byte, 6)
	for i := range palette {
		palette[i] = randBytes(uint64(1000+i), cs)
	}
	rng := rand.New(rand.NewPCG(seed, uint64(next)))
	deadline := time.Now().Add(20 * time.Second)
	for iter := 0; iter < 500 && time.Now().Before(deadline); iter++ {
		for k := 0; k < 1+rng.IntN(8); k++ {
			var b []byte
			var off int64
			switch rng.IntN(4) {
			case 0: // a whole chunk seen before
				b = palette[rng.IntN(len(palette))]
				off = int64(rng.IntN(crashImageSize/cs)) * int64(cs)
			case 1: // a whole new chunk
				b = randBytes(rng.Uint64(), cs)
				off = int64(rng.IntN(crashImageSize/cs)) * int64(cs)
			default: // a partial, unaligned write, maybe across chunks
				b = randBytes(rng.Uint64(), 1+rng.IntN(100<<10))
				off = rng.Int64N(int64(crashImageSize - len(b)))
			}
			if n, err := img.WriteAt(b, off); err != nil || n != len(b) {
				return fmt.Errorf("write %d at %d: %d, %w", len(b), off, n, err)
			}
			copy(m[off:], b)
		}
		if rng.IntN(4) == 0 {
			if err := img.Sync(); err != nil {
				return err
			}
		}
		name := "r" + strconv.Itoa(next)
		next++
		if _, err := p.Snapshot(ctx, ds, name); err != nil {
			return err
		}
		fmt.Printf("snap %s %x\n", name, sha256.Sum256(m))
		kept = append(kept, name)
		for len(kept) > crashKeep {
			old := kept[0]
			kept = kept[1:]
			fmt.Printf("destroy %s\n", old)
			if err := p.DestroySnapshot(ctx, snapOfName(ds, old)); err != nil {
				return err
			}
		}
		if rng.IntN(3) == 0 {
			fmt.Println("gc")
			if _, err := p.GC(ctx); err != nil {
				return err
			}
		}
	}
	if err := img.Close(); err != nil {
		return err
	}
	return p.Close()
}

func snapOfName(ds zfs.DatasetName, snap string) zfs.SnapshotName {
	s, err := ds.Snapshot(snap)
	if err != nil {
		panic(err)
	}
	return s
}

// crashPlan says when the parent kills a child.
type crashPlan struct {
	snaps  int           // once this many snapshots were reported (0: never)
	on     string        // at the first line starting with this ("": never)
	delay  time.Duration // this long after the start (0: never)
	jitter time.Duration // after the trigger, wait up to this long before killing
}

func (c crashPlan) String() string {
	var parts []string
	if c.snaps > 0 {
		parts = append(parts, fmt.Sprintf("after %d snapshots", c.snaps))
	}
	if c.on != "" {
		parts = append(parts, "at "+strconv.Quote(c.on))
	}
	if c.delay > 0 {
		parts = append(parts, "after "+c.delay.String())
	}
	if c.jitter > 0 {
		parts = append(parts, "jitter "+c.jitter.String())
	}
	return strings.Join(parts, ", ")
}

// crashState is what the parent knows of the pool across children.
type crashState struct {
	reported   map[string][32]byte // snapshots reported taken, with their image hash
	destroying map[string]bool     // snapshots the child started to destroy
	next       int                 // the next snapshot number
}

// runCrashChild runs one child on dir, kills it as planned and returns the
// lines it wrote.
func runCrashChild(t *testing.T, dir string, seed uint64, next int, plan crashPlan, rng *rand.Rand) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		crashEnvDir+"="+dir,
		crashEnvSeed+"="+strconv.FormatUint(seed, 10),
		crashEnvNext+"="+strconv.Itoa(next))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	check(t, err, "stdout pipe")
	check(t, cmd.Start(), "start child")

	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	killed := false
	kill := func() {
		if !killed {
			killed = true
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Errorf("kill child: %v", err)
			}
		}
	}
	var killAt <-chan time.Time
	if plan.delay > 0 {
		tm := time.NewTimer(plan.delay)
		defer tm.Stop()
		killAt = tm.C
	}
	triggered := false
	trigger := func() {
		if triggered {
			return
		}
		triggered = true
		if plan.jitter <= 0 {
			kill()
			return
		}
		killAt = time.After(time.Duration(rng.Int64N(int64(plan.jitter))))
	}
	watchdog := time.NewTimer(crashSilence)
	defer watchdog.Stop()
	var out []string
	snaps := 0
	failed := ""
read:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				break read
			}
			out = append(out, l)
			if killed {
				continue // written before the kill: still counts
			}
			watchdog.Reset(crashSilence)
			if strings.HasPrefix(l, "snap ") {
				snaps++
			}
			if (plan.snaps > 0 && snaps >= plan.snaps) || (plan.on != "" && strings.HasPrefix(l, plan.on)) {
				trigger()
			}
		case <-killAt:
			kill()
		case <-watchdog.C:
			if killed {
				failed = "child still writing 10 s after SIGKILL"
				break read
			}
			failed = "child said nothing for 10 s"
			kill()
			watchdog.Reset(crashSilence)
		}
	}
	werr := cmd.Wait()
	if failed != "" {
		t.Fatalf("%s (plan %v); lines %q; stderr:\n%s", failed, plan, out, stderr.String())
	}
	if s := stderr.String(); strings.Contains(s, "DATA RACE") || strings.Contains(s, "panic:") || strings.Contains(s, "fatal error") {
		t.Fatalf("child failed (plan %v):\n%s", plan, s)
	}
	if !killed && werr != nil {
		t.Fatalf("child exited on its own: %v; lines %q; stderr:\n%s", werr, out, stderr.String())
	}
	for _, l := range out {
		if strings.HasPrefix(l, "error ") {
			t.Fatalf("child: %s", l)
		}
	}
	return out
}

// apply records what a child reported.
func (st *crashState) apply(t *testing.T, lines []string) {
	t.Helper()
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && f[0] == "snap":
			var sum [32]byte
			if b, err := hex.DecodeString(f[2]); err != nil || len(b) != len(sum) {
				t.Fatalf("bad line %q: %v", l, err)
			} else {
				copy(sum[:], b)
			}
			if _, ok := st.reported[f[1]]; ok {
				t.Fatalf("snapshot %s reported twice", f[1])
			}
			st.reported[f[1]] = sum
			st.next = max(st.next, crashSnapNum(f[1])+1)
		case len(f) == 2 && f[0] == "destroy":
			st.destroying[f[1]] = true
		}
	}
}

// checkCrashed opens the pool after a kill and checks it; with gc, it runs
// GC and checks again.
func checkCrashed(t *testing.T, dir string, st *crashState, gc bool) {
	t.Helper()
	ctx := context.Background()
	p, err := Open(Config{Dir: dir, Name: testPoolName})
	if err != nil {
		t.Fatalf("open after kill: %v", err)
	}
	defer func() { check(t, p.Close(), "close") }()
	ents, err := os.ReadDir(filepath.Join(dir, "tmp"))
	check(t, err, "read tmp")
	if len(ents) != 0 {
		t.Fatalf("tmp holds %d entries after open, first %s", len(ents), ents[0].Name())
	}
	ds := crashDataset(p.Root())
	for pass := 0; pass < 2; pass++ {
		snaps, err := p.Snapshots(ctx, ds)
		if errors.Is(err, zfs.ErrNotFound) && len(st.reported) == 0 {
			return // killed before the dataset was created
		}
		check(t, err, "list snapshots")
		listed := make(map[string]bool)
		for _, s := range snaps {
			name := s.Name.Snap()
			listed[name] = true
			st.next = max(st.next, crashSnapNum(name)+1)
			rep := verifyClean(t, p, s.Name)
			if rep.Images != 1 || rep.Bytes != crashImageSize {
				t.Fatalf("verify %s: %+v", s.Name, rep)
			}
			if want, ok := st.reported[name]; ok {
				if got := snapSum(t, p, s.Name, crashImage); got != want {
					t.Fatalf("snapshot %s reads differently from when it was taken", s.Name)
				}
			}
		}
		for name := range st.reported {
			if !listed[name] && !st.destroying[name] {
				t.Fatalf("snapshot %s was reported taken and is gone", name)
			}
		}
		// The live image reads whole, as of its last sync.
		img, err := p.OpenImage(ctx, ds, crashImage)
		if errors.Is(err, zfs.ErrNotFound) && len(snaps) == 0 {
			return // killed between creating the dataset and the image
		}
		check(t, err, "open live image")
		imageSum(t, img, crashImageSize)
		check(t, img.Close(), "close live image")
		if !gc || pass == 1 {
			return
		}
		if _, err := p.GC(ctx); err != nil {
			t.Fatalf("gc after kill: %v", err)
		}
	}
}

func TestCrash(t *testing.T) {
	if os.Getenv(crashEnvDir) != "" {
		t.Skip("in the child")
	}
	const rounds = 30
	const minRounds = 20
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	st := &crashState{reported: make(map[string][32]byte), destroying: make(map[string]bool)}
	start := time.Now()
	deadline := start.Add(45 * time.Second)
	done := 0
	for round := 0; round < rounds && time.Now().Before(deadline); round++ {
		var plan crashPlan
		switch round % 5 {
		case 0:
			plan = crashPlan{snaps: 1 + rng.IntN(3)}
		case 1: // anywhere, from before the pool is open
			plan = crashPlan{delay: time.Duration(rng.Int64N(int64(700 * time.Millisecond)))}
		case 2: // inside GC
			plan = crashPlan{on: "gc", jitter: 20 * time.Millisecond, delay: 3 * time.Second}
		case 3: // inside a snapshot's destruction
			plan = crashPlan{on: "destroy", jitter: 2 * time.Millisecond, delay: 3 * time.Second}
		case 4: // inside the writes after a snapshot
			plan = crashPlan{snaps: 1 + rng.IntN(2), jitter: 50 * time.Millisecond}
		}
		lines := runCrashChild(t, dir, rng.Uint64(), st.next, plan, rng)
		st.apply(t, lines)
		checkCrashed(t, dir, st, round%4 == 3)
		done++
	}
	if done < minRounds {
		t.Fatalf("only %d kill rounds in %v; want %d", done, time.Since(start), minRounds)
	}
	// After all that, a child still takes a snapshot.
	before := len(st.reported)
	lines := runCrashChild(t, dir, rng.Uint64(), st.next, crashPlan{snaps: 1}, rng)
	st.apply(t, lines)
	if len(st.reported) == before {
		t.Fatalf("the last child reported no snapshot: %q", lines)
	}
	checkCrashed(t, dir, st, true)
	t.Logf("%d rounds, %d snapshots reported, %d destroyed, in %v", done, len(st.reported), len(st.destroying), time.Since(start))
}
