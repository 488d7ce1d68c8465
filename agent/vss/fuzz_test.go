package vss

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics or hangs, that whatever it
// returns is well formed, and that Format of writers it accepted parses
// back to the same writers.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		f.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(Format(sampleWriters())))
	f.Add(utf16LE(Format(sampleWriters()[:2])))
	f.Fuzz(func(t *testing.T, in []byte) {
		ws, err := parseWithin(t, string(in), 10*time.Second)
		if ws == nil {
			t.Fatalf("nil writers (error %v)", err)
		}
		for _, w := range ws {
			if w.Name == "" || !isGUID(w.ID) || !isGUID(w.InstanceID) ||
				w.StateCode < 0 || w.StateCode >= len(StateNames) || w.State == "" || w.LastError == "" ||
				strings.ContainsAny(w.Name+w.State+w.LastError, "\n") {
				t.Fatalf("malformed writer %q (error %v)", w, err)
			}
		}
		if err != nil {
			if errorKind(err) == "other" {
				t.Fatalf("undocumented error %#v", err)
			}
			return
		}
		text := Format(ws)
		again, err := parseWithin(t, text, 10*time.Second)
		if err != nil || !reflect.DeepEqual(again, ws) {
			t.Fatalf("Parse(Format(ws)) = %q, %v;\nws = %q\nFormat:\n%s", again, err, ws, text)
		}
	})
}

// parseWithin runs Parse on s and fails the test if it takes longer than d.
func parseWithin(t *testing.T, s string, d time.Duration) ([]Writer, error) {
	t.Helper()
	type result struct {
		ws  []Writer
		err error
	}
	done := make(chan result, 1)
	go func() {
		ws, err := Parse(strings.NewReader(s))
		done <- result{ws, err}
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.ws, r.err
	case <-timer.C:
		t.Fatalf("Parse hung on %q", s)
		return nil, nil
	}
}
