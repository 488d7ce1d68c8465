// Package script runs the operator's pre and post scripts of a backup,
// bounded in time and in the output kept.
package script

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/agent/internal/tail"
)

// DefaultTimeout bounds a script when its Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// MaxOutput is how much of a script's output (standard output and error
// together, the end of it) is kept for its error and the log.
const MaxOutput = 4 << 10

// waitDelay is how long Run waits for the output to close after the
// script was killed (a child may hold it).
const waitDelay = 2 * time.Second

// Environment variables a script gets, besides the agent's environment.
const (
	EnvPhase    = "CAIRN_PHASE"     // "pre" or "post"
	EnvVolumeID = "CAIRN_VOLUME_ID" // the volume's id (ListVolumes)
	EnvJobID    = "CAIRN_JOB_ID"    // the appliance's job id
	EnvResult   = "CAIRN_RESULT"    // post only: "ok" or "failed" (the snapshot was not made)
)

// Script is an executable run with no arguments.
type Script struct {
	Path    string
	Timeout time.Duration
}

// Error is a script that failed: exited non-zero, timed out, or could not
// be started. Output is the end of what it wrote.
type Error struct {
	Path     string
	Phase    string
	Output   string
	TimedOut time.Duration // the timeout, if it ran out
	Err      error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s script %s ", e.Phase, e.Path)
	if e.TimedOut > 0 {
		fmt.Fprintf(&b, "timed out after %s", e.TimedOut)
	} else {
		fmt.Fprintf(&b, "failed: %v", e.Err)
	}
	if out := strings.TrimSpace(e.Output); out != "" {
		fmt.Fprintf(&b, "; output: %s", out)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Run runs the script with env ("KEY=value") added to the agent's
// environment, and returns the end of its output. It fails with an *Error
// if the script exits non-zero or runs out of time (it is killed, with its
// process group where there is one); an empty Path does nothing.
func (s Script) Run(ctx context.Context, phase string, env ...string) (string, error) {
	if s.Path == "" {
		return "", nil
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := &tail.Buffer{Max: MaxOutput}
	cmd := exec.CommandContext(tctx, s.Path)
	cmd.Env = append(cmd.Environ(), append([]string{EnvPhase + "=" + phase}, env...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = waitDelay
	killGroup(cmd)
	err := cmd.Run()
	if err == nil {
		return out.String(), nil
	}
	e := &Error{Path: s.Path, Phase: phase, Output: out.String(), Err: err}
	if errors.Is(tctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		e.TimedOut = timeout
	} else if ctx.Err() != nil {
		e.Err = ctx.Err()
	}
	return e.Output, e
}
