package vss

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

const (
	header = "vssadmin 1.1 - Volume Shadow Copy Service administrative command-line tool\n" +
		"(C) Copyright 2001-2013 Microsoft Corp.\n\n"
	blockA = "Writer name: 'System Writer'\n" +
		"   Writer Id: {e8132975-6f93-4464-a53e-1050253ae220}\n" +
		"   Writer Instance Id: {b849a411-a377-4f5a-8a35-6a49798bf36c}\n" +
		"   State: [1] Stable\n" +
		"   Last error: No error\n"
	blockB = "Writer name: 'SqlServerWriter'\n" +
		"   Writer Id: {a65faa63-5ea8-4ebc-9dbd-a0c4db26912a}\n" +
		"   Writer Instance Id: {0e0bc896-afbe-49a6-adbb-8cb8ef65ed78}\n" +
		"   State: [8] Failed\n" +
		"   Last error: Non-retryable error\n"
)

var (
	writerA = Writer{"System Writer", "{e8132975-6f93-4464-a53e-1050253ae220}", "{b849a411-a377-4f5a-8a35-6a49798bf36c}", 1, "Stable", "No error"}
	writerB = Writer{"SqlServerWriter", "{a65faa63-5ea8-4ebc-9dbd-a0c4db26912a}", "{0e0bc896-afbe-49a6-adbb-8cb8ef65ed78}", 8, "Failed", "Non-retryable error"}
)

// mustParse parses s and fails the test on an error.
func mustParse(t *testing.T, s string) []Writer {
	t.Helper()
	ws, err := Parse(strings.NewReader(s))
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return ws
}

func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []Writer
	}{
		{"banner only", header, nil},
		{"banner without blank line", "vssadmin 1.1 - Volume Shadow Copy Service administrative command-line tool\n(C) Copyright 2001-2013 Microsoft Corp.\n", nil},
		{"no banner", blockA + "\n" + blockB, []Writer{writerA, writerB}},
		{"no final blank line", header + blockA + "\n" + blockB, []Writer{writerA, writerB}},
		{"blocks without blank line between", header + blockA + blockB, []Writer{writerA, writerB}},
		{"final blank line without newline", header + blockA + "  ", []Writer{writerA}},
		{"many blank lines", "\n\n" + header + "\n\n" + blockA + "\n\n\n" + blockB + "\n\n", []Writer{writerA, writerB}},
		{"waiting notice", header + "Waiting for responses. \nThese may be delayed if a shadow copy is being prepared.\n\n" + blockA, []Writer{writerA}},
		{"CRLF", strings.ReplaceAll(header+blockA+"\n", "\n", "\r\n"), []Writer{writerA}},
		{"stray CR", strings.ReplaceAll(header+blockA+"\n", "\n", "\r\r\n"), []Writer{writerA}},
		{"tabs and no indentation", header + strings.ReplaceAll(blockA, "   ", "\t") + "\n" + strings.ReplaceAll(blockB, "   ", ""), []Writer{writerA, writerB}},
		{"fields in another order", header + "Writer name: 'System Writer'\n   Last error: No error\n   State: [01] Stable\n   Writer Instance Id: {b849a411-a377-4f5a-8a35-6a49798bf36c}\n   Writer Id: {e8132975-6f93-4464-a53e-1050253ae220}\n", []Writer{writerA}},
		{"spacing inside lines", header + "Writer name:   'System Writer'  \n   Writer Id:{e8132975-6f93-4464-a53e-1050253ae220}\n   Writer Instance Id: {b849a411-a377-4f5a-8a35-6a49798bf36c}\t\n   State: [1]   Stable \n   Last error:   No error\n", []Writer{writerA}},
	} {
		ws := mustParse(t, tc.in)
		if tc.want == nil {
			tc.want = []Writer{}
		}
		if !reflect.DeepEqual(ws, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, ws, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	long := strings.Repeat("x", maxValueBytes+1)
	for _, tc := range []struct {
		name, in string
		kind     string // as errorKind
		line     int    // for a *ParseError
		writers  int    // complete writers returned
	}{
		{"empty", "", "truncated", 0, 0},
		{"blank lines only", "\r\n\n  \n", "truncated", 3, 0},
		{"cut in banner", "vssadmin 1.1 - Volume Sha", "truncated", 1, 0},
		{"cut after a name", header + "Writer name: 'System Writer'\n", "truncated", 4, 0},
		{"cut in a name", header + "Writer name: 'System Wri", "truncated", 4, 0},
		{"cut in last line", header + blockA + "\n" + strings.TrimSuffix(blockB, "\n"), "truncated", 14, 1},
		{"cut in a field", header + blockA + "\n" + blockB[:60], "truncated", 11, 1},
		{"cut between fields", header + blockA + "\n" + blockB[:strings.Index(blockB, "   State")], "truncated", 12, 1},
		{"not elevated", header + "Error: You don't have the correct permissions to run this command.\n", "tool", 0, 0},
		{"tool error after writers", header + blockA + "\n" + blockB + "Error: Unexpected failure: The RPC server is unavailable.\n\n", "tool", 0, 2},
		{"tool error inside a block", header + blockA + "\n" + blockB[:strings.Index(blockB, "   State")] + "Error: Unexpected failure, error code: 0x8004230f.\n", "tool", 0, 1},
		{"tool error cut off", header + "Error: A Volume Shadow Copy Service compo", "tool", 0, 0},
		{"missing field", header + strings.Replace(blockA, "   State: [1] Stable\n", "", 1) + "\n" + blockB, "syntax", 8, 0},
		{"duplicate field", header + blockA + "   State: [1] Stable\n", "syntax", 9, 0},
		{"field outside block", header + "   State: [1] Stable\n", "syntax", 4, 0},
		{"field after blank line", header + blockA + "\n   State: [1] Stable\n", "syntax", 10, 1},
		{"unquoted name", header + "Writer name: System Writer\n", "syntax", 4, 0},
		{"half-quoted name", header + "Writer name: 'System Writer\n", "syntax", 4, 0},
		{"empty name", header + "Writer name: ''\n", "syntax", 4, 0},
		{"lone quote name", header + "Writer name: '\n", "syntax", 4, 0},
		{"bad id", header + strings.Replace(blockA, "{e8132975-6f93-4464-a53e-1050253ae220}", "{e8132975-6f93-4464-a53e-1050253ae22g}", 1), "syntax", 5, 0},
		{"id without braces", header + strings.Replace(blockA, "{e8132975-6f93-4464-a53e-1050253ae220}", "e8132975-6f93-4464-a53e-1050253ae220", 1), "syntax", 5, 0},
		{"id with misplaced dash", header + strings.Replace(blockA, "{e8132975-6f93-4464-a53e-1050253ae220}", "{e8132975-6f934-464-a53e-1050253ae220}", 1), "syntax", 5, 0},
		{"bad instance id", header + strings.Replace(blockA, "{b849a411-a377-4f5a-8a35-6a49798bf36c}", "{}", 1), "syntax", 6, 0},
		{"state without code", header + strings.Replace(blockA, "[1] Stable", "Stable", 1), "syntax", 7, 0},
		{"state without text", header + strings.Replace(blockA, "[1] Stable", "[1]", 1), "syntax", 7, 0},
		{"state without ]", header + strings.Replace(blockA, "[1] Stable", "[1 Stable", 1), "syntax", 7, 0},
		{"state code empty", header + strings.Replace(blockA, "[1] Stable", "[] Stable", 1), "syntax", 7, 0},
		{"state code negative", header + strings.Replace(blockA, "[1] Stable", "[-1] Stable", 1), "syntax", 7, 0},
		{"state code 16", header + strings.Replace(blockA, "[1] Stable", "[16] Stable", 1), "syntax", 7, 0},
		{"state code three digits", header + strings.Replace(blockA, "[1] Stable", "[001] Stable", 1), "syntax", 7, 0},
		{"empty last error", header + strings.Replace(blockA, "No error", "", 1), "syntax", 8, 0},
		{"banner after a writer", header + blockA + "\n" + header, "syntax", 10, 1},
		{"waiting notice after a writer", header + blockA + "\nWaiting for responses.\n", "syntax", 10, 1},
		{"unknown line", header + blockA + "   Writer Class: x\n", "syntax", 9, 0},
		{"garbage", "<html><body>502 Bad Gateway</body></html>\n", "syntax", 1, 0},
		{"UTF-16 BE", "\xfe\xff\x00v\x00s", "syntax", 1, 0},
		{"name too long to format", header + "Writer name: '" + long + "'\n", "limit", 4, 0},
		{"state too long to format", header + strings.Replace(blockA, "Stable", long, 1), "limit", 7, 0},
		{"last error too long to format", header + strings.Replace(blockA, "No error", long, 1), "limit", 8, 0},
	} {
		ws, err := Parse(strings.NewReader(tc.in))
		if kind := errorKind(err); kind != tc.kind {
			t.Errorf("%s: error %v (%s), want %s", tc.name, err, kind, tc.kind)
			continue
		}
		if ws == nil || len(ws) != tc.writers {
			t.Errorf("%s: %d writers %q, want %d", tc.name, len(ws), ws, tc.writers)
		}
		for _, w := range ws {
			if w != writerA && w != writerB {
				t.Errorf("%s: partial writer %q", tc.name, w)
			}
		}
		var pe *ParseError
		if tc.kind == "tool" {
			if errors.As(err, &pe) {
				t.Errorf("%s: tool error is also a *ParseError", tc.name)
			}
			continue
		}
		if !errors.As(err, &pe) || pe.Line != tc.line {
			t.Errorf("%s: %v, want a *ParseError at line %d", tc.name, err, tc.line)
		}
	}
}

func TestToolErrorMessage(t *testing.T) {
	_, err := Parse(strings.NewReader(header + "Error: first line  \n\n  second line\n" + blockA))
	var te *ToolError
	if !errors.As(err, &te) {
		t.Fatalf("got %v", err)
	}
	want := "first line\nsecond line\nWriter name: 'System Writer'\nWriter Id: {e8132975-6f93-4464-a53e-1050253ae220}\n" +
		"Writer Instance Id: {b849a411-a377-4f5a-8a35-6a49798bf36c}\nState: [1] Stable\nLast error: No error"
	if te.Message != want {
		t.Errorf("Message %q, want %q", te.Message, want)
	}
	// Nothing after "Error:" hides it: not an over-long line, not a read
	// failure.
	for name, r := range map[string]io.Reader{
		"long line":  strings.NewReader("Error: x\n" + strings.Repeat("y", MaxLineBytes+1) + "\n"),
		"read error": io.MultiReader(strings.NewReader("Error: x\ny"), iotest.ErrReader(errors.New("boom"))),
	} {
		if _, err := Parse(r); !errors.As(err, &te) || te.Message != "x" && te.Message != "x\ny" {
			t.Errorf("%s after Error: %v", name, err)
		}
	}
	// The message is bounded, whatever follows.
	_, err = Parse(strings.NewReader("Error: x\n" + strings.Repeat(strings.Repeat("y", 1000)+"\n", 100)))
	if !errors.As(err, &te) || len(te.Message) != maxToolMessage {
		t.Errorf("message of %d bytes, want %d", len(te.Message), maxToolMessage)
	}
}

func TestParseErrorWrapping(t *testing.T) {
	_, err := Parse(strings.NewReader(header + "Writer name: 'X'\n"))
	var pe *ParseError
	if !errors.Is(err, ErrTruncated) || errors.Is(err, ErrLimit) || !errors.As(err, &pe) || pe.Err != ErrTruncated {
		t.Errorf("truncated: %#v", err)
	}
	if !strings.HasPrefix(err.Error(), "vss: line 4: ") {
		t.Errorf("message %q", err)
	}
	_, err = Parse(strings.NewReader(strings.Repeat("x", MaxLineBytes+1)))
	if !errors.Is(err, ErrLimit) || errors.Is(err, ErrTruncated) || !errors.As(err, &pe) || pe.Err != ErrLimit {
		t.Errorf("limit: %#v", err)
	}
	_, err = Parse(strings.NewReader("garbage\n"))
	if !errors.As(err, &pe) || pe.Err != nil || errors.Is(err, ErrTruncated) || errors.Is(err, ErrLimit) {
		t.Errorf("syntax: %#v", err)
	}
}

func TestLineLimit(t *testing.T) {
	// A banner line is the one line that can be of any length.
	line := func(n int) string { return "vssadmin " + strings.Repeat("x", n-len("vssadmin ")) }
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"longest", line(MaxLineBytes) + "\n", true},
		{"longest CRLF", line(MaxLineBytes) + "\r\n", true},
		{"longest last", header + blockA + strings.Repeat(" ", MaxLineBytes), true},
		{"longest UTF-16", string(utf16LE(line(MaxLineBytes) + "\r\n")), true},
		{"longer", line(MaxLineBytes+1) + "\n", false},
		{"longer CRLF", line(MaxLineBytes+1) + "\r\n", false},
		{"longer last", header + blockA + strings.Repeat(" ", MaxLineBytes+1), false},
		{"much longer", line(10*MaxLineBytes) + "\n", false},
		{"longer UTF-16", string(utf16LE(line(MaxLineBytes+1) + "\r\n")), false},
		{"longer in a block", header + "Writer name: 'a" + strings.Repeat("x", MaxLineBytes) + "'\n", false},
	} {
		for rname, r := range map[string]io.Reader{
			"whole":    strings.NewReader(tc.in),
			"one byte": iotest.OneByteReader(strings.NewReader(tc.in)),
			"half":     iotest.HalfReader(strings.NewReader(tc.in)),
		} {
			_, err := Parse(r)
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrLimit) {
				t.Errorf("%s, %s reader: %v", tc.name, rname, err)
			}
		}
	}
}

func TestWriterLimit(t *testing.T) {
	ws := make([]Writer, MaxWriters+1)
	for i := range ws {
		ws[i] = writerA
	}
	got, err := Parse(strings.NewReader(Format(ws[:MaxWriters])))
	if err != nil || len(got) != MaxWriters {
		t.Fatalf("%d writers: %d, %v", MaxWriters, len(got), err)
	}
	got, err = Parse(strings.NewReader(Format(ws)))
	var pe *ParseError
	if !errors.Is(err, ErrLimit) || len(got) != MaxWriters || !errors.As(err, &pe) || pe.Line != 3+6*MaxWriters+1 {
		t.Fatalf("%d writers: %d, %v", MaxWriters+1, len(got), err)
	}
}

// patternReader yields head, then unit over and over, up to n bytes in
// all, then EOF.
type patternReader struct {
	head, unit string
	n, off     int
}

func (r *patternReader) Read(p []byte) (int, error) {
	i := 0
	for i < len(p) && r.off < r.n {
		src := r.head[min(r.off, len(r.head)):]
		if src == "" {
			src = r.unit[(r.off-len(r.head))%len(r.unit):]
		}
		m := copy(p[i:min(len(p), i+r.n-r.off)], src)
		i, r.off = i+m, r.off+m
	}
	if i == 0 {
		return 0, io.EOF
	}
	return i, nil
}

func TestInputLimit(t *testing.T) {
	// Banner lines of 32 KiB, so that all of it is valid and a line ends
	// exactly at MaxInputBytes.
	banner := "vssadmin " + strings.Repeat("x", 1<<15-len("vssadmin \n")) + "\n"
	// Writers with long last errors: a cut falls inside a block.
	writer := strings.Replace(blockA, "No error", strings.Repeat("x", 60000), 1) + "\n"
	for _, tc := range []struct {
		name       string
		head, unit string
		n          int
		wantLimit  bool
	}{
		{"at the limit", "", banner, MaxInputBytes, false},
		// A cut inside a line is the limit's doing, not a truncation.
		{"beyond, cut in a line", "\n", banner, MaxInputBytes + 1, true},
		{"beyond, cut at a line end", "", banner, MaxInputBytes + len(banner), true},
		{"beyond, cut in a writer", "", writer, 2 * MaxInputBytes, true},
	} {
		r := &patternReader{head: tc.head, unit: tc.unit, n: tc.n}
		_, err := Parse(r)
		if tc.wantLimit != errors.Is(err, ErrLimit) || !tc.wantLimit && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if r.off > MaxInputBytes+1 {
			t.Errorf("%s: read %d bytes", tc.name, r.off)
		}
	}
}

func TestReadError(t *testing.T) {
	boom := errors.New("pipe broke")
	for name, r := range map[string]io.Reader{
		"at once":    iotest.ErrReader(boom),
		"in a line":  io.MultiReader(strings.NewReader(header+blockA[:50]), iotest.ErrReader(boom)),
		"at a block": io.MultiReader(strings.NewReader(header+blockA), iotest.ErrReader(boom)),
		"in UTF-16":  io.MultiReader(bytes.NewReader(utf16LE(header + blockA)[:201]), iotest.ErrReader(boom)),
		"with data":  iotest.DataErrReader(io.MultiReader(strings.NewReader(header+blockA[:50]), iotest.ErrReader(boom))),
	} {
		ws, err := Parse(r)
		var pe *ParseError
		if !errors.Is(err, boom) || errors.Is(err, ErrTruncated) || !errors.As(err, &pe) || ws == nil {
			t.Errorf("%s: %v, %v", name, ws, err)
		}
	}
	// A reader that fails once, at the first read, then reports EOF: the
	// failure must not be lost.
	_, err := Parse(&failOnce{err: boom})
	if !errors.Is(err, boom) {
		t.Errorf("fail once: %v", err)
	}
}

type failOnce struct {
	err  error
	done bool
}

func (f *failOnce) Read([]byte) (int, error) {
	if f.done {
		return 0, io.EOF
	}
	f.done = true
	return 0, f.err
}

// TestReaders parses every fixture through readers that return little at a
// time, which must not change the result.
func TestReaders(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	for _, file := range files {
		in, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		want, wantErr := Parse(bytes.NewReader(in))
		for name, r := range map[string]io.Reader{
			"one byte": iotest.OneByteReader(bytes.NewReader(in)),
			"half":     iotest.HalfReader(bytes.NewReader(in)),
			"data err": iotest.DataErrReader(bytes.NewReader(in)),
		} {
			got, err := Parse(r)
			if !reflect.DeepEqual(got, want) || errorKind(err) != errorKind(wantErr) || err != nil && err.Error() != wantErr.Error() {
				t.Errorf("%s, %s reader: %q, %v; want %q, %v", file, name, got, err, want, wantErr)
			}
		}
	}
}

func TestUTF16(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte // after the header and "Writer name: '"
		want string
	}{
		{"BMP", []byte("\xe9\x00\x13\x27"), "é✓"},
		{"surrogate pair", []byte("\x3d\xd8\x00\xde"), "😀"},
		{"lone high surrogate", []byte("\x3d\xd8A\x00"), "\ufffdA"},
		{"two high surrogates", []byte("\x3d\xd8\x3d\xd8\x00\xde"), "\ufffd😀"},
		{"lone low surrogate", []byte("\x00\xdeA\x00"), "\ufffdA"},
		{"NUL", []byte("\x00\x00"), "\x00"},
	} {
		in := append(utf16LE(header+"Writer name: '"), tc.in...)
		in = append(in, utf16LE("'\r\n" + blockA[len("Writer name: 'System Writer'\n"):])[2:]...)
		ws, err := Parse(iotest.OneByteReader(bytes.NewReader(in)))
		if err != nil || len(ws) != 1 || ws[0].Name != tc.want {
			t.Errorf("%s: %q, %v; want name %q", tc.name, ws, err, tc.want)
		}
	}
	// A dangling high surrogate or odd byte at the end becomes U+FFFD: a
	// final line without its line ending, inside a block.
	for name, tail := range map[string]string{"high surrogate": "\x3d\xd8", "odd byte": "A"} {
		in := append(utf16LE(header+blockA), tail...)
		ws, err := Parse(bytes.NewReader(in))
		if !errors.Is(err, ErrTruncated) || len(ws) != 0 {
			t.Errorf("%s at the end: %q, %v", name, ws, err)
		}
		in = append(utf16LE(header+blockA+"\n"), tail...)
		if _, err := Parse(bytes.NewReader(in)); err == nil || !strings.Contains(err.Error(), "\ufffd") {
			t.Errorf("%s after a block: %v", name, err)
		}
	}
}
