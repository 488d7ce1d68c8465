package openzfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/zfs"
)

// Every zfs command runs through runner.run: ctx-aware (the process is
// killed when ctx ends), bounded by a default timeout unless it streams,
// logged with its duration, with bounded stderr and a typed error.
//
// github.com/mistifyio/go-zfs/v3 is deliberately not used: it runs the
// binary named "zfs" from PATH through exec.Command with no context, no
// timeout and a process-global logger, so with it CreateDataset and friends
// could neither honour Config.ZFSPath and Config.CommandTimeout nor be
// canceled, and its property options come from a map in random order.

const (
	// maxStderr bounds the stderr kept from one command.
	maxStderr = 8 << 10
	// maxStdout bounds the output captured from a listing command; it is
	// far above a listing of many thousands of snapshots.
	maxStdout = 64 << 20
	// waitDelay is how long run waits for the I/O copying to and from a
	// command after the command exited or was killed.
	waitDelay = 5 * time.Second
	// stdinDelay is how long run waits, once the command has ended, for
	// the copy to its stdin to finish a read of the caller's reader.
	stdinDelay = time.Second
)

// CommandError is a zfs command that failed: it exited with a non-zero
// status, could not start, or was killed because its context ended.
type CommandError struct {
	Args     []string // the command line, program first
	Stderr   string   // what it wrote to stderr, shortened to a few KiB
	ExitCode int      // -1 if it did not exit by itself
	Err      error    // *exec.ExitError, a start error or the context's error
}

// Error returns the command line, the cause and the stderr on one line.
func (e *CommandError) Error() string {
	var b strings.Builder
	b.WriteString(strings.Join(e.Args, " "))
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if s := strings.TrimSpace(e.Stderr); s != "" {
		b.WriteString(": ")
		b.WriteString(strings.ReplaceAll(s, "\n", "; "))
	}
	return b.String()
}

// Unwrap returns the cause, so that errors.Is(err, context.Canceled) holds
// for a command killed by cancellation.
func (e *CommandError) Unwrap() error { return e.Err }

// killed reports whether the command was stopped by its context rather
// than failing by itself.
func (e *CommandError) killed() bool {
	return errors.Is(e.Err, context.Canceled) || errors.Is(e.Err, context.DeadlineExceeded)
}

// errTimeout is the cause of a command stopped by the runner's default
// timeout. It matches context.DeadlineExceeded.
type errTimeout struct{ d time.Duration }

func (e errTimeout) Error() string        { return fmt.Sprintf("command timed out after %v", e.d) }
func (e errTimeout) Is(target error) bool { return target == context.DeadlineExceeded }

// runner runs one binary (zfs).
type runner struct {
	path    string
	log     *slog.Logger
	timeout time.Duration // for commands that do not stream; 0 means none
}

// command is one invocation.
type command struct {
	args []string
	// stdin, if set, is copied to the command's standard input.
	stdin io.Reader
	// stdout, if set, receives the command's standard output; otherwise
	// it is captured (up to maxStdout) and returned by run.
	stdout io.Writer
	// stream marks a send or receive: it runs as long as ctx allows,
	// without the default timeout.
	stream bool
}

// result is what a successful command printed.
type result struct {
	stdout []byte // nil when command.stdout was set
	stderr string // bounded
}

// run runs c and waits for it. Any failure is a *CommandError.
//
// The caller's stdin and stdout are copied through pipes by goroutines of
// run's own rather than by os/exec, whose Wait waits for those copies
// without end: a reader that blocks (a stalled network stream) would then
// keep Receive from returning even after ctx ended. run waits for the
// copies while the command runs, and at most waitDelay once the command
// has ended or been killed; a copy still blocked then in the caller's
// Read or Write is left to finish when that call returns.
func (r *runner) run(ctx context.Context, c command) (result, error) {
	argv := append([]string{r.path}, c.args...)
	if err := ctx.Err(); err != nil {
		return result{}, &CommandError{Args: argv, ExitCode: -1, Err: context.Cause(ctx)}
	}
	if !c.stream && r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, r.timeout, errTimeout{r.timeout})
		defer cancel()
	}

	cmd := exec.CommandContext(ctx, r.path, c.args...)
	cmd.WaitDelay = waitDelay
	var out *limitedBuffer
	if c.stdout == nil {
		out = &limitedBuffer{max: maxStdout}
		cmd.Stdout = out
	}
	stderr := &headBuffer{max: maxStderr}
	cmd.Stderr = stderr

	start := time.Now()
	inW, outR, err := startPiped(cmd, c)
	if err == nil {
		var in, outCopy *copier
		if inW != nil {
			in = copyTo(inW, c.stdin, inW)
		}
		if outR != nil {
			outCopy = copyTo(c.stdout, outR, outR)
		}
		err = cmd.Wait()
		if outCopy != nil {
			// All output must reach the caller's writer, which may
			// take a while after the command ended.
			if cerr := outCopy.wait(ctx.Done()); cerr != nil && err == nil {
				err = fmt.Errorf("writing output: %w", cerr)
			}
		}
		if in != nil {
			// The command has ended: what is left of stdin is not
			// needed. The copy's error (EPIPE, or the caller's read
			// error that errReader keeps) does not matter here.
			in.waitAfter(closedChan, stdinDelay)
		}
	}
	dur := time.Since(start)

	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
			code = -1
		} else if out != nil && out.overflow {
			err = fmt.Errorf("output longer than %d bytes: %w", maxStdout, err)
		}
	}
	attrs := []slog.Attr{slog.Any("args", c.args), slog.Duration("duration", dur), slog.Int("exit", code)}
	if err != nil {
		attrs = append(attrs, slog.Any("err", err), slog.String("stderr", stderr.String()))
	}
	r.log.LogAttrs(ctx, slog.LevelDebug, "zfs command", attrs...)
	if err != nil {
		return result{}, &CommandError{Args: argv, Stderr: stderr.String(), ExitCode: code, Err: err}
	}
	res := result{stderr: stderr.String()}
	if out != nil {
		res.stdout = out.Bytes()
	}
	return res, nil
}

// startPiped starts cmd with pipes for c.stdin and c.stdout and returns
// the parent's ends: the write end of stdin and the read end of stdout
// (nil where c has no such stream).
func startPiped(cmd *exec.Cmd, c command) (inW, outR *os.File, err error) {
	var child []*os.File
	defer func() {
		for _, f := range child {
			f.Close() // the child has its own copies
		}
		if err != nil {
			if inW != nil {
				inW.Close()
			}
			if outR != nil {
				outR.Close()
			}
			inW, outR = nil, nil
		}
	}()
	if c.stdin != nil {
		var pr *os.File
		if pr, inW, err = os.Pipe(); err != nil {
			return nil, nil, err
		}
		cmd.Stdin = pr
		child = append(child, pr)
	}
	if c.stdout != nil {
		var pw *os.File
		if outR, pw, err = os.Pipe(); err != nil {
			return inW, nil, err
		}
		cmd.Stdout = pw
		child = append(child, pw)
	}
	err = cmd.Start()
	return inW, outR, err
}

// copier copies from a reader to a writer in a goroutine and closes
// whichever of the two is a pipe end of ours when done.
type copier struct {
	done  chan struct{}
	err   error
	pipe  *os.File
	close sync.Once
}

func copyTo(w io.Writer, r io.Reader, pipe *os.File) *copier {
	c := &copier{done: make(chan struct{}), pipe: pipe}
	go func() {
		_, c.err = io.Copy(w, r)
		c.closePipe()
		close(c.done)
	}()
	return c
}

func (c *copier) closePipe() { c.close.Do(func() { c.pipe.Close() }) }

// closedChan is a closed channel: waitAfter(closedChan, d) waits d.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// wait waits for the copy to end: until stop is closed, then at most
// waitDelay. If it has not ended then, it closes the pipe and gives up,
// leaving the goroutine blocked in the caller's Read or Write.
func (c *copier) wait(stop <-chan struct{}) error { return c.waitAfter(stop, waitDelay) }

// waitAfter is wait with another delay.
func (c *copier) waitAfter(stop <-chan struct{}, delay time.Duration) error {
	select {
	case <-c.done:
		return c.err
	case <-stop:
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-c.done:
		return c.err
	case <-t.C:
		c.closePipe()
		return fmt.Errorf("copy still blocked %v after the command ended", delay)
	}
}

// headBuffer keeps the first max bytes written to it and counts the rest.
// It never fails, so a chatty command is not killed for its stderr.
type headBuffer struct {
	buf     bytes.Buffer
	max     int
	dropped int64
}

func (b *headBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
		b.dropped += int64(len(p) - min(room, len(p)))
	} else {
		b.dropped += int64(len(p))
	}
	return len(p), nil
}

func (b *headBuffer) String() string {
	if b.dropped > 0 {
		return fmt.Sprintf("%s[%d more bytes]", b.buf.String(), b.dropped)
	}
	return b.buf.String()
}

// limitedBuffer captures output up to max bytes and fails after that,
// which makes the command die of a broken pipe.
// (Not an embedded bytes.Buffer: io.Copy would use its ReadFrom and
// bypass the limit.)
type limitedBuffer struct {
	buf      bytes.Buffer
	max      int
	overflow bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.buf.Len()+len(p) > b.max {
		b.overflow = true
		return 0, errors.New("output too long")
	}
	return b.buf.Write(p)
}

func (b *limitedBuffer) Bytes() []byte { return b.buf.Bytes() }

// stderrRule maps a stderr pattern of zfs to a sentinel error.
type stderrRule struct {
	re  *regexp.Regexp
	err error
}

// stderrRules is the one place where zfs's messages become sentinels. The
// first matching rule wins, so specific messages come before general ones
// ("cannot receive new filesystem stream: destination 'x' exists" is
// ErrExists, not ErrStream).
var stderrRules = []stderrRule{
	{regexp.MustCompile(`contains partially-complete state`), zfs.ErrBusy},
	{regexp.MustCompile(`does not have any resumable receive state`), zfs.ErrNotFound},
	{regexp.MustCompile(`destination '[^'\n]*' exists`), zfs.ErrExists},
	{regexp.MustCompile(`destination '[^'\n]*' does not exist`), zfs.ErrNotFound},
	{regexp.MustCompile(`dataset already exists|tag already exists|bookmark exists|already exists`), zfs.ErrExists},
	{regexp.MustCompile(`dataset does not exist|could not find any snapshots|no such tag|no such pool|parent does not exist|bookmark '[^'\n]*' does not exist|incremental source \([^)\n]*\) does not exist|is no longer the same snapshot`), zfs.ErrNotFound},
	{regexp.MustCompile(`invalid stream|checksum mismatch|incomplete stream|does not match incremental source|has been modified|failed to read from stream|unsupported stream|stream has unsupported feature|resume token is corrupt|cannot receive`), zfs.ErrStream},
	{regexp.MustCompile(`dataset is busy|pool or dataset is busy|target is busy|device or resource busy`), zfs.ErrBusy},
}

// classify returns the sentinel that a zfs command's stderr means, or nil.
func classify(stderr string) error {
	for _, r := range stderrRules {
		if r.re.MatchString(stderr) {
			return r.err
		}
	}
	return nil
}

// opError wraps err, the failure of op on name, in a *zfs.Error. A
// *CommandError that failed by itself (not by cancellation) also wraps the
// sentinel its stderr maps to, plus any extra sentinels given.
func opError(op, name string, err error, extra ...error) error {
	var ce *CommandError
	if errors.As(err, &ce) && !ce.killed() {
		var sentinels []error
		if s := classify(ce.Stderr); s != nil {
			sentinels = append(sentinels, s)
		}
		for _, s := range extra {
			if s != nil && !containsErr(sentinels, s) {
				sentinels = append(sentinels, s)
			}
		}
		if len(sentinels) > 0 {
			err = &multiError{sentinels: sentinels, cause: err}
		}
	}
	return &zfs.Error{Op: op, Name: name, Err: err}
}

// isSentinel reports whether err, a failed command, maps to target.
func isSentinel(err, target error) bool {
	return err != nil && errors.Is(opError("", "", err), target)
}

func containsErr(list []error, e error) bool {
	for _, x := range list {
		if x == e {
			return true
		}
	}
	return false
}

// multiError is one or more sentinels explaining a cause.
type multiError struct {
	sentinels []error
	cause     error
}

func (e *multiError) Error() string {
	var b strings.Builder
	for _, s := range e.sentinels {
		b.WriteString(s.Error())
		b.WriteString(": ")
	}
	b.WriteString(e.cause.Error())
	return b.String()
}

func (e *multiError) Unwrap() []error { return append(append([]error(nil), e.sentinels...), e.cause) }
