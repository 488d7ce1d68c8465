package vss

import (
	"bytes"
	"errors"
	"fmt"
)

// exitEmptyResult is vssadmin's exit status when it listed nothing
// (VSS_CMDRET_EMPTY_RESULT): "list writers" on a machine without writers
// prints only the banner and exits with it, which is not a failure.
const exitEmptyResult = 1

// capWriter keeps the first max bytes written to it and discards the rest,
// so that a runaway tool can neither exhaust memory nor block on a full
// pipe. Used for both stdout and stderr, it gets one pipe, in order.
type capWriter struct {
	buf []byte
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - len(w.buf); room > 0 {
		w.buf = append(w.buf, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

// fromRun turns what "vssadmin list writers" printed (stdout and stderr
// together, cut at MaxInputBytes+1 bytes so Parse sees the excess) and how
// it ended into List's result. exitCode is the tool's exit status, or -1
// when runErr is not an exit status (the tool could not be started).
func fromRun(out []byte, exitCode int, runErr error) ([]Writer, error) {
	if runErr == nil {
		return Parse(bytes.NewReader(out))
	}
	if exitCode < 0 {
		return []Writer{}, fmt.Errorf("run vssadmin list writers: %w", runErr)
	}
	ws, err := Parse(bytes.NewReader(out))
	var te *ToolError
	switch {
	case errors.As(err, &te):
		return ws, te
	case err != nil:
		return ws, fmt.Errorf("vssadmin list writers: %w; its output: %w", runErr, err)
	case exitCode == exitEmptyResult && len(ws) == 0:
		return ws, nil
	}
	return ws, fmt.Errorf("vssadmin list writers: %w after listing %d writers", runErr, len(ws))
}
