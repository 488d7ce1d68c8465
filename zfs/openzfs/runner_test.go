package openzfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/zfs"
)

// shRunner runs sh -c scripts through the runner, as it would run zfs.
func shRunner(t *testing.T, timeout time.Duration) (*runner, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return &runner{path: "/bin/sh", log: log, timeout: timeout}, &logs
}

func TestRunnerOutput(t *testing.T) {
	r, logs := shRunner(t, time.Minute)
	res, err := r.run(context.Background(), command{args: []string{"-c", `printf 'a\tb\n'; echo warn >&2`}})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.stdout) != "a\tb\n" || res.stderr != "warn\n" {
		t.Fatalf("stdout %q stderr %q", res.stdout, res.stderr)
	}
	if !strings.Contains(logs.String(), "zfs command") || !strings.Contains(logs.String(), "duration=") {
		t.Fatalf("command not logged: %s", logs.String())
	}
}

func TestRunnerExitCode(t *testing.T) {
	r, _ := shRunner(t, time.Minute)
	_, err := r.run(context.Background(), command{args: []string{"-c", "echo \"cannot open 'x': dataset does not exist\" >&2; exit 3"}})
	var ce *CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("error %T %v, want *CommandError", err, err)
	}
	if ce.ExitCode != 3 || !strings.Contains(ce.Stderr, "dataset does not exist") || ce.Args[0] != "/bin/sh" {
		t.Fatalf("CommandError = %+v", ce)
	}
	if ce.killed() {
		t.Fatal("a command that exited by itself counts as killed")
	}
	zerr := opError("dataset", "x", err)
	if !errors.Is(zerr, zfs.ErrNotFound) || !errors.As(zerr, &ce) {
		t.Fatalf("opError = %v: want ErrNotFound wrapping the *CommandError", zerr)
	}
	var ze *zfs.Error
	if !errors.As(zerr, &ze) || ze.Op != "dataset" || ze.Name != "x" {
		t.Fatalf("opError = %#v", zerr)
	}
}

func TestRunnerStderrBounded(t *testing.T) {
	r, _ := shRunner(t, time.Minute)
	// 1 MiB of stderr, then a failure.
	_, err := r.run(context.Background(), command{args: []string{"-c", `head -c 1048576 /dev/zero | tr '\0' x >&2; exit 1`}})
	var ce *CommandError
	if !errors.As(err, &ce) {
		t.Fatal(err)
	}
	if len(ce.Stderr) > maxStderr+100 || !strings.HasPrefix(ce.Stderr, "xxxx") || !strings.Contains(ce.Stderr, "more bytes]") {
		t.Fatalf("stderr kept %d bytes: %q...", len(ce.Stderr), ce.Stderr[:min(50, len(ce.Stderr))])
	}
}

func TestRunnerStdoutBounded(t *testing.T) {
	r, _ := shRunner(t, time.Minute)
	_, err := r.run(context.Background(), command{args: []string{"-c", `exec head -c 70000000 /dev/zero`}})
	if err == nil || !strings.Contains(err.Error(), "output longer than") {
		t.Fatalf("error %v, want output too long", err)
	}
}

func TestRunnerTimeoutKills(t *testing.T) {
	r, _ := shRunner(t, 200*time.Millisecond)
	start := time.Now()
	_, err := r.run(context.Background(), command{args: []string{"-c", "exec sleep 60"}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want deadline exceeded", err)
	}
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != -1 || !ce.killed() || !strings.Contains(err.Error(), "timed out after 200ms") {
		t.Fatalf("CommandError = %+v", ce)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("timeout took %v", d)
	}
	// The timeout does not apply to streaming commands.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.run(ctx, command{args: []string{"-c", "sleep 0.5"}, stream: true}); err != nil {
		t.Fatalf("streaming command hit the metadata timeout: %v", err)
	}
}

func TestRunnerCancel(t *testing.T) {
	r, _ := shRunner(t, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan error, 1)
	go func() {
		// The command reads stdin that never ends and writes to a
		// writer: cancellation must still end it.
		_, err := r.run(ctx, command{args: []string{"-c", "echo started; exec cat"}, stdin: pr, stdout: &signalWriter{ch: make(chan struct{}), cancel: cancel}, stream: true})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		var ce *CommandError
		if !errors.As(err, &ce) || !ce.killed() {
			t.Fatalf("error %#v", err)
		}
		if errors.Is(opError("send", "x", err), zfs.ErrStream) {
			t.Fatal("a canceled command was classified by its stderr")
		}
	case <-time.After(time.Minute):
		t.Fatal("canceled command did not end")
	}

	// An already canceled context runs nothing.
	_, err := r.run(ctx, command{args: []string{"-c", "exit 0"}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v with canceled context", err)
	}
}

func TestRunnerStuckReader(t *testing.T) {
	// A reader that never returns must not keep run from returning once
	// the command ends.
	r, _ := shRunner(t, time.Minute)
	pr, pw := io.Pipe()
	defer pw.Close()
	start := time.Now()
	_, err := r.run(context.Background(), command{args: []string{"-c", "exit 2"}, stdin: pr, stream: true})
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 2 {
		t.Fatalf("error %v", err)
	}
	if d := time.Since(start); d > waitDelay+20*time.Second {
		t.Fatalf("run took %v", d)
	}
}

func TestRunnerWriterError(t *testing.T) {
	// A failing writer ends the command (broken pipe) instead of letting
	// it fill the pipe and hang.
	r, _ := shRunner(t, time.Minute)
	werr := errors.New("disk full")
	_, err := r.run(context.Background(), command{args: []string{"-c", "exec cat /dev/zero"}, stdout: failWriter{werr}, stream: true})
	if err == nil {
		t.Fatal("no error")
	}
}

type failWriter struct{ err error }

func (w failWriter) Write(p []byte) (int, error) { return 0, w.err }

func TestRunnerStreamsStdout(t *testing.T) {
	r, _ := shRunner(t, time.Minute)
	var buf bytes.Buffer
	res, err := r.run(context.Background(), command{args: []string{"-c", "head -c 3000000 /dev/zero"}, stdout: &buf, stream: true})
	if err != nil || buf.Len() != 3000000 || res.stdout != nil {
		t.Fatalf("got %d bytes, %v", buf.Len(), err)
	}
	in := bytes.NewReader(bytes.Repeat([]byte("y"), 2000000))
	buf.Reset()
	if _, err := r.run(context.Background(), command{args: []string{"-c", "cat"}, stdin: in, stdout: &buf, stream: true}); err != nil || buf.Len() != 2000000 {
		t.Fatalf("cat: %d bytes, %v", buf.Len(), err)
	}
}

// signalWriter cancels when the command first writes, so that the test
// knows the command is running without sleeping.
type signalWriter struct {
	ch     chan struct{}
	cancel context.CancelFunc
}

func (w *signalWriter) Write(p []byte) (int, error) {
	select {
	case <-w.ch:
	default:
		close(w.ch)
		w.cancel()
	}
	return len(p), nil
}

func TestRunnerStdinSucceedsWithUnreadInput(t *testing.T) {
	// zfs receive stops reading at the end of its stream; input after it
	// is no failure.
	r, _ := shRunner(t, time.Minute)
	in := strings.NewReader(strings.Repeat("x", 1<<20))
	if _, err := r.run(context.Background(), command{args: []string{"-c", "head -c 10 >/dev/null"}, stdin: in, stream: true}); err != nil {
		t.Fatal(err)
	}
}

func TestRunnerStartFailure(t *testing.T) {
	r := &runner{path: "/nonexistent/zfs", log: slog.New(slog.DiscardHandler), timeout: time.Minute}
	_, err := r.run(context.Background(), command{args: []string{"list"}})
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != -1 {
		t.Fatalf("error %#v", err)
	}
}

func TestClassify(t *testing.T) {
	// Messages as OpenZFS 2.1 prints them.
	for _, tc := range []struct {
		stderr string
		want   error
	}{
		{"cannot create 'tp/cairn/agents/a': dataset already exists\n", zfs.ErrExists},
		{"cannot create snapshot 'tp/a@s1': dataset already exists\n", zfs.ErrExists},
		{"cannot hold snapshot 'tp/a@s1': tag already exists on this dataset\n", zfs.ErrExists},
		{"cannot create bookmark 'tp/a#b1': bookmark exists\n", zfs.ErrExists},
		{"cannot receive new filesystem stream: destination 'tp/cairn/agents' exists\nmust specify -F to overwrite it\n", zfs.ErrExists},
		{"cannot open 'tp/cairn/agents/nope': dataset does not exist\n", zfs.ErrNotFound},
		{"cannot create 'tp/cairn/x/y': parent does not exist\n", zfs.ErrNotFound},
		{"could not find any snapshots to destroy; check snapshot names.\n", zfs.ErrNotFound},
		{"cannot release hold from snapshot 'tp/a@s1': no such tag on this dataset\n", zfs.ErrNotFound},
		{"cannot open 'nope': no such pool\n", zfs.ErrNotFound},
		{"cannot open 'tp/a#nope': no such pool or dataset\n", zfs.ErrNotFound},
		{"bookmark 'tp/a#nope' does not exist.\n", zfs.ErrNotFound},
		{"'tp/cairn/q' does not have any resumable receive state to abort\n", zfs.ErrNotFound},
		{"warning: cannot send 'tp/a@s2': incremental source (tp/a#nope) does not exist\n", zfs.ErrNotFound},
		{"cannot resume send: 'tp/a@s1' is no longer the same snapshot used in the initial send\n", zfs.ErrNotFound},
		{"cannot open 'tp/cairn/nop': dataset does not exist\ncannot receive new filesystem stream: unable to restore to destination\n", zfs.ErrNotFound},
		{"cannot receive incremental stream: destination 'tp/cairn/nope' does not exist\n", zfs.ErrNotFound},
		{"cannot receive: invalid stream (bad magic number)\n", zfs.ErrStream},
		{"cannot receive: failed to read from stream\n", zfs.ErrStream},
		{"cannot receive new filesystem stream: incomplete stream\n", zfs.ErrStream},
		{"cannot receive new filesystem stream: checksum mismatch or incomplete stream.\nPartially received snapshot is saved.\n", zfs.ErrStream},
		{"cannot receive incremental stream: most recent snapshot of tp/r does not\nmatch incremental source\n", zfs.ErrStream},
		{"cannot receive incremental stream: destination tp/cairn/r has been modified\nsince most recent snapshot\n", zfs.ErrStream},
		{"cannot resume send: resume token is corrupt (invalid format)\n", zfs.ErrStream},
		{"cannot receive incremental stream: destination tp/cairn/q contains partially-complete state from \"zfs receive -s\".\n", zfs.ErrBusy},
		{"cannot destroy snapshot tp/a@s1: dataset is busy\n", zfs.ErrBusy},
		{"cannot unmount '/mnt/cairn/agents': pool or dataset is busy\n", zfs.ErrBusy},
		{"cannot destroy 'tp/a': permission denied\n", nil},
		{"", nil},
	} {
		if got := classify(tc.stderr); got != tc.want {
			t.Errorf("classify(%q) = %v, want %v", tc.stderr, got, tc.want)
		}
	}
}

func TestOpErrorExtraSentinels(t *testing.T) {
	ce := &CommandError{Args: []string{"zfs", "receive"}, Stderr: "cannot receive incremental stream: destination 'p/x' does not exist\n", ExitCode: 1, Err: errors.New("exit status 1")}
	err := opError("receive", "p/x", ce, zfs.ErrStream)
	if !errors.Is(err, zfs.ErrNotFound) || !errors.Is(err, zfs.ErrStream) {
		t.Fatalf("%v: want ErrNotFound and ErrStream", err)
	}
	if !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("message %q lost stderr", err)
	}
	// Not a command failure: passed through.
	if err := opError("x", "y", context.Canceled); !errors.Is(err, context.Canceled) || errors.Is(err, zfs.ErrStream) {
		t.Fatalf("%v", err)
	}
}
