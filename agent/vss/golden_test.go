package vss

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from Parse's output")

// goldenWriter is a parsed writer with its classification, as recorded in
// a golden file.
type goldenWriter struct {
	Writer
	Failed  bool `json:"failed"`
	Waiting bool `json:"waiting"`
	Healthy bool `json:"healthy"`
}

// golden is what a testdata/<name>.golden file holds for <name>.txt.
type golden struct {
	Writers []goldenWriter `json:"writers"`
	// ErrorKind is "", "truncated", "limit", "tool" or "syntax".
	ErrorKind      string `json:"errorKind,omitempty"`
	Error          string `json:"error,omitempty"`
	NeedsElevation bool   `json:"needsElevation,omitempty"`
}

// errorKind names the documented class of a Parse error.
func errorKind(err error) string {
	var te *ToolError
	var pe *ParseError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &te):
		return "tool"
	case errors.Is(err, ErrTruncated):
		return "truncated"
	case errors.Is(err, ErrLimit):
		return "limit"
	case errors.As(err, &pe) && pe.Err == nil:
		return "syntax"
	}
	return "other"
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".txt")
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			ws, err := Parse(bytes.NewReader(in))
			g := golden{Writers: []goldenWriter{}, ErrorKind: errorKind(err)}
			for _, w := range ws {
				g.Writers = append(g.Writers, goldenWriter{w, w.Failed(), w.Waiting(), w.Healthy()})
			}
			if err != nil {
				g.Error = err.Error()
				var te *ToolError
				g.NeedsElevation = errors.As(err, &te) && te.NeedsElevation()
			}
			got, err := json.MarshalIndent(g, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := strings.TrimSuffix(file, ".txt") + ".golden"
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./agent/vss -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Parse(%s) differs from %s (run with -update after checking):\ngot:\n%s\nwant:\n%s", file, path, got, want)
			}
		})
	}
}

// TestGoldenFixtures checks that the fixtures keep covering the output
// shapes the product needs, so a rename or an -update cannot silently
// lose one.
func TestGoldenFixtures(t *testing.T) {
	parse := func(name string) ([]Writer, error) {
		t.Helper()
		in, err := os.ReadFile(filepath.Join("testdata", name+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		return Parse(bytes.NewReader(in))
	}
	find := func(ws []Writer, name string) Writer {
		t.Helper()
		for _, w := range ws {
			if w.Name == name {
				return w
			}
		}
		t.Fatalf("no writer %q in %v", name, ws)
		return Writer{}
	}
	mustParse := func(name string) []Writer {
		t.Helper()
		ws, err := parse(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return ws
	}

	for _, name := range []string{"healthy_2019_dc", "server2008r2_waiting_for_responses", "bom_crlf_odd_names", "utf16le_powershell"} {
		ws := mustParse(name)
		if len(ws) == 0 {
			t.Errorf("%s: no writers", name)
		}
		for _, w := range ws {
			if !w.Healthy() {
				t.Errorf("%s: %+v not healthy", name, w)
			}
		}
	}
	if w := find(mustParse("hyperv_failed_retryable"), "Microsoft Hyper-V VSS Writer"); !w.Failed() || w.LastError != LastErrorRetryable {
		t.Errorf("retryable: %+v", w)
	}
	if w := find(mustParse("sql_failed_nonretryable"), "SqlServerWriter"); !w.Failed() || w.LastError != LastErrorNonRetryable || w.StateCode != StateFailedAtPrepareSnapshot {
		t.Errorf("non-retryable: %+v", w)
	}
	if w := find(mustParse("exchange_waiting"), "Microsoft Exchange Writer"); !w.Waiting() || w.State != "Waiting for completion" {
		t.Errorf("waiting: %+v", w)
	}
	waiting := map[int]bool{}
	for _, w := range mustParse("waiting_states_during_backup") {
		if w.Waiting() {
			waiting[w.StateCode] = true
			if w.State != StateText(w.StateCode) {
				t.Errorf("state text %q, StateText says %q", w.State, StateText(w.StateCode))
			}
		}
	}
	if len(waiting) != 4 {
		t.Errorf("waiting states covered: %v", waiting)
	}
	ws := mustParse("timed_out_and_other_failures")
	if w := find(ws, "SqlServerWriter"); !w.Failed() || w.LastError != LastErrorTimedOut {
		t.Errorf("timed out: %+v", w)
	}
	if w := find(ws, "MSSearch Service Writer"); w.Failed() || w.Healthy() || w.Waiting() {
		t.Errorf("stable with a last error is only a warning: %+v", w)
	}
	if ws := mustParse("no_writers"); len(ws) != 0 {
		t.Errorf("no_writers: %v", ws)
	}

	var te *ToolError
	if _, err := parse("permission_error"); !errors.As(err, &te) || !te.NeedsElevation() {
		t.Errorf("permission_error: %v", err)
	}
	if _, err := parse("unexpected_error"); !errors.As(err, &te) || te.NeedsElevation() || !strings.Contains(te.Message, "\nCheck the Application event log") {
		t.Errorf("unexpected_error: %v", err)
	}
	for _, name := range []string{"truncated_between_lines", "truncated_mid_line", "bad_empty"} {
		if ws, err := parse(name); !errors.Is(err, ErrTruncated) || ws == nil {
			t.Errorf("%s: %v, %v", name, ws, err)
		}
	}
}
