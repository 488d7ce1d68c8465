package vss

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Bounds on what Parse accepts. Real output is a few kilobytes: some
// 10-40 writers of about 250 bytes each.
const (
	// MaxLineBytes is the longest line Parse accepts, line ending excluded.
	// A writer name, state text or last error must also fit in such a line
	// as Format writes it (with its indentation and key), so that Format's
	// output for writers Parse returned always parses back.
	MaxLineBytes = 64 << 10
	// MaxWriters is the most writers Parse accepts in one output.
	MaxWriters = 10000
	// MaxInputBytes is the most input Parse accepts.
	MaxInputBytes = 32 << 20
	// maxToolMessage bounds ToolError.Message.
	maxToolMessage = 4 << 10
	// maxValueBytes bounds a writer name, state text or last error: the
	// longest line Format writes around one adds 20 bytes.
	maxValueBytes = MaxLineBytes - 32
)

var (
	// ErrTruncated is wrapped by the error Parse returns when the output
	// ends inside a writer's block or before anything was printed.
	ErrTruncated = errors.New("vss: output truncated")
	// ErrLimit is wrapped by the error Parse returns when the output
	// exceeds MaxLineBytes, MaxWriters or MaxInputBytes.
	ErrLimit = errors.New("vss: output exceeds parser limits")
)

// ToolError is vssadmin's own error report, the "Error: ..." text it
// prints instead of (or after) the writer list.
type ToolError struct {
	// Message is the text after "Error: ", followed by any further
	// non-blank lines (such as "Check the Application event log for more
	// information."), joined by "\n" and cut at 4 KiB.
	Message string
}

// Error implements error.
func (e *ToolError) Error() string { return "vssadmin: " + e.Message }

// NeedsElevation reports whether vssadmin refused to run because the
// agent is not running with elevated administrator rights.
func (e *ToolError) NeedsElevation() bool {
	return strings.Contains(e.Message, "correct permissions") ||
		strings.Contains(e.Message, "elevated administrator") ||
		strings.Contains(e.Message, "Access is denied")
}

// ParseError describes output Parse could not read, with the 1-based
// number of the line at fault (0 when there is no such line).
type ParseError struct {
	Line int
	Msg  string
	// Err is ErrTruncated, ErrLimit, a read error, or nil for a syntax
	// error.
	Err error
}

// Error implements error.
func (e *ParseError) Error() string {
	return fmt.Sprintf("vss: line %d: %s", e.Line, e.Msg)
}

// Unwrap returns e.Err, so errors.Is(err, ErrTruncated) works.
func (e *ParseError) Unwrap() error { return e.Err }

// Line prefixes of "vssadmin list writers".
const (
	keyName       = "Writer name:"
	keyID         = "Writer Id:"
	keyInstanceID = "Writer Instance Id:"
	keyState      = "State:"
	keyLastError  = "Last error:"
	keyError      = "Error:"
)

// fields a block needs, as bits.
const (
	haveID = 1 << iota
	haveInstanceID
	haveState
	haveLastError
	haveAll = haveID | haveInstanceID | haveState | haveLastError
)

var fieldKeys = [...]struct {
	key string
	bit int
}{
	{keyID, haveID},
	{keyInstanceID, haveInstanceID},
	{keyState, haveState},
	{keyLastError, haveLastError},
}

// Parse reads the output of "vssadmin list writers" (English) and returns
// the writers in the order listed.
//
// It accepts LF or CRLF line endings, a UTF-8 byte order mark, UTF-16LE
// with its byte order mark (what Windows PowerShell's ">" writes), any
// indentation, blank lines, and before the first writer the tool's banner
// and its "Waiting for responses." notice (printed when the writers are
// slow to answer, as during a backup). Writer names and texts are kept
// verbatim, non-UTF-8 bytes included (vssadmin writes to a pipe in the
// console's OEM code page).
//
// Errors:
//   - "Error: ..." output from the tool gives a *ToolError.
//   - Output that ends inside a writer's block (including a final line
//     without its line ending while a block is open, as when the tool is
//     killed) or that is empty gives a *ParseError wrapping ErrTruncated.
//     A cut that falls exactly between two blocks cannot be detected.
//   - Output beyond the limits gives a *ParseError wrapping ErrLimit.
//   - A failing reader gives a *ParseError wrapping the read error.
//   - Anything else unexpected gives a *ParseError with the line number.
//
// Whatever the error, the returned slice holds the writers whose blocks
// were complete before the problem (never a partial one); it is never nil.
// Output that lists no writers gives an empty slice and a nil error.
func Parse(r io.Reader) ([]Writer, error) {
	p := &parser{writers: []Writer{}}
	err := p.run(r)
	return p.writers, err
}

type block struct {
	w     Writer
	have  int
	start int // line of "Writer name:"
}

type parser struct {
	long     []byte // a line longer than readBufSize
	writers  []Writer
	cur      *block
	line     int
	started  bool // a "Writer name:" line was seen
	nonBlank bool // a non-blank line was seen
	toolErr  *ToolError
}

func (p *parser) errf(err error, format string, args ...any) *ParseError {
	return &ParseError{Line: p.line, Msg: fmt.Sprintf(format, args...), Err: err}
}

// readBufSize is the buffer Parse reads through; longer lines are
// gathered in parser.long.
const readBufSize = 4 << 10

func (p *parser) run(r io.Reader) error {
	err := p.read(r)
	if p.toolErr != nil {
		// What follows "Error:" is only more of its message: a failure
		// there must not hide it.
		return p.toolErr
	}
	return err
}

func (p *parser) read(r io.Reader) error {
	raw := bufio.NewReaderSize(&limitReader{r: r, n: MaxInputBytes}, readBufSize)
	lines := raw
	b, err := raw.Peek(3)
	switch {
	case bytes.HasPrefix(b, []byte("\xef\xbb\xbf")):
		_, _ = raw.Discard(3)
	case bytes.HasPrefix(b, []byte("\xff\xfe")):
		_, _ = raw.Discard(2)
		lines = bufio.NewReaderSize(&utf16LEReader{src: raw}, readBufSize)
	case err != nil && err != io.EOF:
		// Peek consumed the error: report it here or it is lost.
		return p.readErr(err)
	}
	for {
		b, rerr := p.readLine(lines)
		if rerr == errLineTooLong {
			p.line++
			return p.errf(ErrLimit, "line longer than %d bytes", MaxLineBytes)
		}
		if rerr != nil && rerr != io.EOF {
			// The line read so far was cut by the failure, not by the
			// end of the output: do not judge it.
			if len(b) > 0 {
				p.line++
			}
			return p.readErr(rerr)
		}
		if len(b) > 0 {
			p.line++
			terminated := b[len(b)-1] == '\n'
			if terminated {
				b = bytes.TrimSuffix(b[:len(b)-1], []byte("\r"))
			}
			if len(b) > MaxLineBytes {
				return p.errf(ErrLimit, "line longer than %d bytes", MaxLineBytes)
			}
			if err := p.handle(string(b), terminated); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
	}
	return p.finish()
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line with its '\n' (none at the end of the
// input), or errLineTooLong as soon as the line is known to exceed
// MaxLineBytes even without a trailing '\r'. The line is valid until the
// next call.
func (p *parser) readLine(r *bufio.Reader) ([]byte, error) {
	p.long = p.long[:0]
	for {
		b, err := r.ReadSlice('\n')
		if err != bufio.ErrBufferFull {
			if len(p.long) == 0 {
				return b, err
			}
			p.long = append(p.long, b...)
			return p.long, err
		}
		if len(p.long)+len(b) > MaxLineBytes+1 {
			return nil, errLineTooLong
		}
		p.long = append(p.long, b...)
	}
}

// readErr reports a failure of the reader (or the input limit).
func (p *parser) readErr(err error) error {
	if err == errInputTooLarge {
		return p.errf(ErrLimit, "output larger than %d bytes", MaxInputBytes)
	}
	return &ParseError{Line: p.line, Msg: "reading output: " + err.Error(), Err: err}
}

func (p *parser) finish() error {
	if p.toolErr != nil {
		return nil // run returns it
	}
	if p.cur != nil {
		if p.cur.have != haveAll {
			return p.errf(ErrTruncated, "output ends inside writer %s begun at line %d (no %s line)",
				clip(p.cur.w.Name), p.cur.start, missing(p.cur.have))
		}
		p.writers = append(p.writers, p.cur.w)
		p.cur = nil
	}
	if !p.nonBlank {
		return p.errf(ErrTruncated, "no output")
	}
	return nil
}

// handle processes one line; terminated is false only for a final line
// that has no line ending.
func (p *parser) handle(line string, terminated bool) error {
	t := trim(line)
	if p.toolErr != nil {
		if t != "" && len(p.toolErr.Message) < maxToolMessage {
			p.toolErr.Message = cut(p.toolErr.Message+"\n"+t, maxToolMessage)
		}
		return nil
	}
	if t != "" {
		p.nonBlank = true
	}
	if strings.HasPrefix(t, keyError) {
		if p.cur != nil && p.cur.have == haveAll {
			p.writers = append(p.writers, p.cur.w)
		}
		// An incomplete block is dropped: the tool gave up on it.
		p.cur = nil
		p.toolErr = &ToolError{Message: cut(trim(t[len(keyError):]), maxToolMessage)}
		return nil
	}
	if !terminated && p.cur != nil && (t != "" || p.cur.have != haveAll) {
		// The tool was cut off while printing this block.
		return p.errf(ErrTruncated, "output cut off inside writer %s begun at line %d",
			clip(p.cur.w.Name), p.cur.start)
	}
	switch {
	case t == "":
		return p.closeBlock()
	case strings.HasPrefix(t, keyName):
		if err := p.closeBlock(); err != nil {
			return err
		}
		if !terminated {
			return p.errf(ErrTruncated, "output cut off in a writer name")
		}
		if len(p.writers) >= MaxWriters {
			return p.errf(ErrLimit, "more than %d writers", MaxWriters)
		}
		v := trim(t[len(keyName):])
		if len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
			return p.errf(nil, "writer name %s is not in single quotes", clip(v))
		}
		if len(v) == 2 {
			return p.errf(nil, "empty writer name")
		}
		if len(v)-2 > maxValueBytes {
			return p.errf(ErrLimit, "writer name longer than %d bytes", maxValueBytes)
		}
		p.started = true
		p.cur = &block{w: Writer{Name: v[1 : len(v)-1]}, start: p.line}
		return nil
	case !p.started && isPreamble(t):
		if !terminated {
			return p.errf(ErrTruncated, "output cut off before the first writer")
		}
		return nil
	}
	for _, f := range fieldKeys {
		if strings.HasPrefix(t, f.key) {
			return p.field(f.key, f.bit, trim(t[len(f.key):]))
		}
	}
	return p.errf(nil, "unexpected line %s", clip(t))
}

func (p *parser) closeBlock() error {
	if p.cur == nil {
		return nil
	}
	if p.cur.have != haveAll {
		return p.errf(nil, "writer %s begun at line %d has no %s line",
			clip(p.cur.w.Name), p.cur.start, missing(p.cur.have))
	}
	p.writers = append(p.writers, p.cur.w)
	p.cur = nil
	return nil
}

func (p *parser) field(key string, bit int, v string) error {
	if p.cur == nil {
		return p.errf(nil, "%q line outside a writer block", key)
	}
	if p.cur.have&bit != 0 {
		return p.errf(nil, "second %q line for writer %s", key, clip(p.cur.w.Name))
	}
	p.cur.have |= bit
	w := &p.cur.w
	switch bit {
	case haveID, haveInstanceID:
		if !isGUID(v) {
			return p.errf(nil, "%s %s is not a {GUID}", strings.TrimSuffix(key, ":"), clip(v))
		}
		if bit == haveID {
			w.ID = v
		} else {
			w.InstanceID = v
		}
	case haveState:
		code, text, err := parseState(v)
		if err != nil {
			return p.errf(nil, "state %s: %v", clip(v), err)
		}
		if len(text) > maxValueBytes {
			return p.errf(ErrLimit, "state text longer than %d bytes", maxValueBytes)
		}
		w.StateCode, w.State = code, text
	case haveLastError:
		if v == "" {
			return p.errf(nil, "empty last error")
		}
		if len(v) > maxValueBytes {
			return p.errf(ErrLimit, "last error longer than %d bytes", maxValueBytes)
		}
		w.LastError = v
	}
	return nil
}

// parseState reads "[8] Failed".
func parseState(v string) (int, string, error) {
	if !strings.HasPrefix(v, "[") {
		return 0, "", errors.New(`want "[code] text"`)
	}
	end := strings.IndexByte(v, ']')
	if end < 0 {
		return 0, "", errors.New(`no closing "]"`)
	}
	digits := v[1:end]
	if len(digits) == 0 || len(digits) > 2 || strings.Trim(digits, "0123456789") != "" {
		return 0, "", errors.New("code is not a number from 0 to 15")
	}
	code, _ := strconv.Atoi(digits)
	if code >= len(StateNames) {
		return 0, "", fmt.Errorf("code %d is not a VSS_WRITER_STATE", code)
	}
	text := trim(v[end+1:])
	if text == "" {
		return 0, "", errors.New("no state text after the code")
	}
	return code, text, nil
}

// isPreamble reports whether t is a line vssadmin prints before the first
// writer: its banner ("vssadmin 1.1 - ...", "(C) Copyright 2001-2013
// Microsoft Corp.") or the two lines of its notice that the writers are
// slow to answer.
func isPreamble(t string) bool {
	return strings.HasPrefix(t, "vssadmin ") ||
		strings.HasPrefix(t, "(C) Copyright") ||
		strings.HasPrefix(t, "Waiting for responses.") ||
		strings.HasPrefix(t, "These may be delayed if a shadow copy is being prepared.")
}

// isGUID reports whether s is a braced GUID: {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}.
func isGUID(s string) bool {
	if len(s) != 38 || s[0] != '{' || s[37] != '}' {
		return false
	}
	for i := 1; i < 37; i++ {
		c := s[i]
		switch i {
		case 9, 14, 19, 24:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func missing(have int) string {
	for _, f := range fieldKeys {
		if have&f.bit == 0 {
			return fmt.Sprintf("%q", f.key)
		}
	}
	return "missing"
}

// trim removes ASCII white space (including a stray '\r') at both ends.
func trim(s string) string { return strings.Trim(s, " \t\r\v\f") }

// clip quotes s for an error message, keeping at most 60 bytes of it.
func clip(s string) string {
	if len(s) > 60 {
		return strconv.Quote(s[:60]) + "..."
	}
	return strconv.Quote(s)
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

var errInputTooLarge = errors.New("input too large")

// limitReader reads at most n bytes from r, then fails with
// errInputTooLarge if r has more.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		var one [1]byte
		for range 100 {
			n, err := l.r.Read(one[:])
			if n > 0 {
				return 0, errInputTooLarge
			}
			if err != nil {
				return 0, err
			}
		}
		return 0, io.ErrNoProgress
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
