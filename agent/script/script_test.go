package script

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, body string) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("the test scripts are shell scripts")
	}
	path := filepath.Join(t.TempDir(), "hook.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunPassesEnvironment(t *testing.T) {
	s := Script{Path: write(t, `echo "$CAIRN_PHASE $CAIRN_VOLUME_ID $CAIRN_JOB_ID"`)}
	out, err := s.Run(context.Background(), "pre", EnvVolumeID+"=/srv/a.img", EnvJobID+"=7")
	if err != nil || out != "pre /srv/a.img 7\n" {
		t.Errorf("Run = %q, %v", out, err)
	}
	if out, err := (Script{}).Run(context.Background(), "pre"); out != "" || err != nil {
		t.Errorf("empty script: %q, %v", out, err)
	}
}

func TestRunFailureCarriesOutput(t *testing.T) {
	s := Script{Path: write(t, "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; echo database busy >&2; exit 3")}
	_, err := s.Run(context.Background(), "pre")
	var e *Error
	if !errors.As(err, &e) || e.TimedOut != 0 {
		t.Fatalf("Run: %v, want a script error", err)
	}
	if !strings.Contains(err.Error(), "exit status 3") || !strings.HasSuffix(err.Error(), "database busy") ||
		len(e.Output) > MaxOutput+len("…") {
		t.Errorf("error: %d bytes of output, %.200q…", len(e.Output), err.Error())
	}
	if _, err := (Script{Path: filepath.Join(t.TempDir(), "missing")}).Run(context.Background(), "post"); !errors.As(err, &e) {
		t.Errorf("missing script: %v", err)
	}
}

func TestRunTimeoutKillsScript(t *testing.T) {
	// The script and its child would run for a minute.
	s := Script{Path: write(t, "echo started; sleep 60 & sleep 60"), Timeout: time.Second}
	start := time.Now()
	_, err := s.Run(context.Background(), "pre")
	var e *Error
	if !errors.As(err, &e) || e.TimedOut != s.Timeout || !strings.Contains(err.Error(), "timed out after 1s; output: started") {
		t.Fatalf("Run: %v, want a timeout", err)
	}
	if took := time.Since(start); took > waitDelay+5*time.Second {
		t.Errorf("Run returned after %s", took)
	}
}
