package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/cairnbackup/cairn/agent/internal/tail"
)

// Bounds on what is kept of a command's output.
const (
	maxStdout = 64 << 10
	maxStderr = 4 << 10
)

// Runner runs a command and returns its standard output. A command that
// fails returns a *CommandError.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// CommandError is a command that failed, with (the end of) what it wrote
// to standard error.
type CommandError struct {
	Cmd    string
	Stderr string
	Err    error
}

func (e *CommandError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("%s: %v", e.Cmd, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Cmd, e.Err, e.Stderr)
}

func (e *CommandError) Unwrap() error { return e.Err }

// Exec runs a command with os/exec in the C locale. It is killed when ctx
// ends; the end of its standard error (4 KiB) goes into the error, and a
// standard output over 64 KiB is an error.
func Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	stdout, stderr := &tail.Buffer{Max: maxStdout + 1}, &tail.Buffer{Max: maxStderr}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(cmd.Environ(), "LC_ALL=C", "LVM_SUPPRESS_FD_WARNINGS=1")
	err := cmd.Run()
	if err == nil && len(stdout.Bytes()) > maxStdout {
		err = errors.New("output exceeds 64 KiB")
	}
	if err != nil {
		return nil, &CommandError{Cmd: strings.Join(append([]string{name}, args...), " "),
			Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return stdout.Bytes(), nil
}
