//go:build windows

package vss

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// waitDelay bounds how long List waits for vssadmin's output to close
// once the tool has exited or been killed.
const waitDelay = 5 * time.Second

// List runs "vssadmin list writers" and returns the writers it prints.
//
// The tool needs an elevated administrator: without one it fails with a
// *ToolError whose NeedsElevation is true, as it does for any "Error:" it
// prints. It can take tens of seconds while a shadow copy is being
// prepared, so give ctx a deadline; when ctx ends the tool is killed and
// List returns an error wrapping ctx's. Output is read up to
// MaxInputBytes, then Parse's errors apply (see Parse). A machine without
// writers gives an empty slice and no error.
func List(ctx context.Context) ([]Writer, error) {
	out := &capWriter{max: MaxInputBytes + 1}
	cmd := exec.CommandContext(ctx, vssadminPath(), "list", "writers")
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = waitDelay
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		return []Writer{}, fmt.Errorf("vssadmin list writers: %w", context.Cause(ctx))
	}
	code := -1
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	return fromRun(out.buf, code, err)
}

// vssadminPath is the tool in the system directory, never one found on
// PATH.
func vssadminPath() string {
	root := os.Getenv("SystemRoot")
	if root == "" {
		root = `C:\Windows`
	}
	return filepath.Join(root, "System32", "vssadmin.exe")
}
