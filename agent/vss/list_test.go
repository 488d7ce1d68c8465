package vss

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestFromRun(t *testing.T) {
	fixture := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile("testdata/" + name + ".txt")
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	exit := errors.New("exit status n")
	notFound := errors.New(`exec: "vssadmin.exe": file does not exist`)
	healthy := fixture("healthy_2019_dc")
	for _, tc := range []struct {
		name     string
		out      []byte
		code     int
		runErr   error
		writers  int
		wantErr  []error // each must match with errors.Is
		wantTool bool
	}{
		{"success", healthy, 0, nil, 15, nil, false},
		{"success, UTF-16", fixture("utf16le_powershell"), 0, nil, 2, nil, false},
		{"no writers", fixture("no_writers"), exitEmptyResult, exit, 0, nil, false},
		{"not elevated", fixture("permission_error"), 2, exit, 0, nil, true},
		{"unexpected error", fixture("unexpected_error"), 2, exit, 0, nil, true},
		{"killed mid-output", fixture("truncated_mid_line"), 1, exit, 1, []error{exit, ErrTruncated}, false},
		{"exit 1 with writers", healthy, 1, exit, 15, []error{exit}, false},
		{"exit 2 without output", nil, 2, exit, 0, []error{exit, ErrTruncated}, false},
		{"not started", nil, -1, notFound, 0, []error{notFound}, false},
	} {
		ws, err := fromRun(tc.out, tc.code, tc.runErr)
		if ws == nil || len(ws) != tc.writers {
			t.Errorf("%s: %d writers, want %d", tc.name, len(ws), tc.writers)
		}
		var te *ToolError
		if errors.As(err, &te) != tc.wantTool {
			t.Errorf("%s: %v, want a *ToolError: %v", tc.name, err, tc.wantTool)
		}
		for _, want := range tc.wantErr {
			if !errors.Is(err, want) {
				t.Errorf("%s: %v does not wrap %v", tc.name, err, want)
			}
		}
		if tc.wantErr == nil && !tc.wantTool && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := fromRun([]byte("garbage\n"), 0, nil); err == nil {
		t.Error("garbage accepted")
	}
	if _, err := fromRun(fixture("permission_error"), 2, exit); !strings.Contains(err.Error(), "correct permissions") {
		t.Errorf("tool error %q", err)
	}
}

func TestCapWriter(t *testing.T) {
	w := &capWriter{max: 5}
	for _, s := range []string{"ab", "cde", "fgh", ""} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if string(w.buf) != "abcde" {
		t.Errorf("kept %q", w.buf)
	}
	// Output one byte over MaxInputBytes is kept, so Parse reports the
	// limit instead of a truncation.
	w = &capWriter{max: MaxInputBytes + 1}
	line := []byte("vssadmin " + strings.Repeat("x", 1<<15-10) + "\n")
	for range MaxInputBytes/len(line) + 2 {
		w.Write(line)
	}
	if _, err := fromRun(w.buf, 0, nil); !errors.Is(err, ErrLimit) {
		t.Errorf("runaway output: %v", err)
	}
	w = &capWriter{max: MaxInputBytes + 1}
	for range MaxInputBytes / len(line) {
		w.Write(line)
	}
	if ws, err := fromRun(w.buf, 0, nil); err != nil || !reflect.DeepEqual(ws, []Writer{}) {
		t.Errorf("output at the limit: %v", err)
	}
}
