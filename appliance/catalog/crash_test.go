package catalog

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// The crash test runs its own test binary as a child that writes to a
// catalog in a loop and is killed with SIGKILL at a random commit.
const (
	crashEnv        = "CATALOG_CRASH_CHILD" // catalog path for the child
	crashPerTx      = 8                     // audit events per child transaction
	crashRounds     = 25
	crashMaxCommits = 100              // commits to wait for before each kill
	crashLineWait   = 10 * time.Second // fail if the child is silent this long
)

// TestHelperProcessCrashChild is the child side of TestCrashConsistency;
// it does nothing unless started by it.
func TestHelperProcessCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("helper process for TestCrashConsistency")
	}
	if err := crashChild(path); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// crashChild commits transactions forever. Transaction n adds crashPerTx
// audit events targeting n, job n with BytesDone n*crashPerTx, and sets the
// "crash" agent's hostname to n; after each commit it prints "commit n".
func crashChild(path string) error {
	c, err := Open(path, Options{Timeout: crashLineWait})
	if err != nil {
		return err
	}
	ctx := context.Background()
	var n int
	err = c.View(ctx, func(tx *Tx) error {
		jobs, err := tx.Jobs("")
		n = len(jobs)
		return err
	})
	if err != nil {
		return err
	}
	padding := strings.Repeat("x", 500) // several pages per transaction
	for {
		n++
		err := c.Update(ctx, func(tx *Tx) error {
			for range crashPerTx {
				if err := tx.Audit(AuditEvent{Actor: "crash-child", Action: "write", Target: strconv.Itoa(n), Detail: padding}); err != nil {
					return err
				}
			}
			if err := tx.PutJob(&Job{Kind: JobBackup, State: JobRunning, Progress: JobProgress{BytesDone: int64(n * crashPerTx)}}); err != nil {
				return err
			}
			return tx.PutAgent(Agent{ID: "crash", Hostname: strconv.Itoa(n), Mode: ModeDirect})
		})
		if err != nil {
			return err
		}
		if _, err := fmt.Printf("commit %d\n", n); err != nil {
			return err // the parent went away
		}
	}
}

func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	if err := openClose(path, nil); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	committed := 0
	for round := range crashRounds {
		kill := 1 + rng.IntN(crashMaxCommits)
		reported := runAndKill(t, path, kill)
		if reported < committed+kill {
			t.Fatalf("round %d: child reported commit %d, expected at least %d", round, reported, committed+kill)
		}
		committed = checkCrashInvariants(t, path, reported)
	}
	t.Logf("%d rounds, %d transactions survived", crashRounds, committed)
}

// runAndKill starts a child, SIGKILLs it right after it reports its kill-th
// commit, and returns the highest commit number it reported.
func runAndKill(t *testing.T, path string, kill int) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessCrashChild$")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed { // failing: do not leave the child running
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	drain := func() {
		for range lines {
		}
	}

	highest, seen := 0, 0
	for seen < kill {
		select {
		case line, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("child exited after %d commits: %s", seen, stderr.String())
			}
			n, ok := parseCommit(line)
			if !ok {
				continue
			}
			highest = max(highest, n)
			seen++
		case <-time.After(crashLineWait):
			cmd.Process.Kill()
			drain()
			cmd.Wait()
			t.Fatalf("child silent for %v after %d commits: %s", crashLineWait, seen, stderr.String())
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = true
	// Commits reported between the last read and the kill are durable too.
	for line := range lines {
		if n, ok := parseCommit(line); ok {
			highest = max(highest, n)
		}
	}
	var exit *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &exit) || exit.Exited() {
		t.Fatalf("child was not killed by the signal (%v): %s", err, stderr.String())
	}
	return highest
}

func parseCommit(line string) (int, bool) {
	s, ok := strings.CutPrefix(line, "commit ")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// checkCrashInvariants reopens the catalog after a crash and checks that
// it is consistent, holds every commit up to minCommits and no partial
// transaction. It returns the number of transactions found.
func checkCrashInvariants(t *testing.T, path string, minCommits int) int {
	t.Helper()
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer c.Close()
	if v, err := c.SchemaVersion(); err != nil || v != SchemaVersion {
		t.Fatalf("schema version after kill = %d, %v", v, err)
	}
	err = c.db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("bbolt consistency check: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var n int
	view(t, c, func(tx *Tx) error {
		jobs, err := tx.Jobs("")
		if err != nil {
			return err
		}
		events, err := tx.AuditLog(0, 0)
		if err != nil {
			return err
		}
		n = len(jobs)
		if n < minCommits {
			t.Fatalf("%d transactions survived, child reported %d", n, minCommits)
		}
		if len(events) != n*crashPerTx {
			t.Fatalf("partial transaction: %d jobs but %d audit events", n, len(events))
		}
		for i, j := range jobs {
			if j.ID != uint64(i+1) || j.Progress.BytesDone != int64((i+1)*crashPerTx) {
				t.Fatalf("job %d = %+v", i+1, j)
			}
		}
		for i, e := range events {
			if e.Seq != uint64(i+1) || e.Target != strconv.Itoa(i/crashPerTx+1) {
				t.Fatalf("audit event %d = %+v", i+1, e)
			}
		}
		a, err := tx.Agent("crash")
		if err != nil {
			return err
		}
		if a.Hostname != strconv.Itoa(n) {
			t.Fatalf("agent written by transaction %s, last job is %d", a.Hostname, n)
		}
		return nil
	})
	return n
}
