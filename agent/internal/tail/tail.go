// Package tail keeps the end of a command's output, bounded, for errors
// and logs.
package tail

import "bytes"

// Buffer is an io.Writer that keeps the last Max bytes written to it.
type Buffer struct {
	Max       int
	buf       []byte
	truncated bool
}

func (t *Buffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.Max {
		t.truncated = t.truncated || len(t.buf) > 0 || len(p) > t.Max
		t.buf = append(t.buf[:0], p[len(p)-t.Max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.Max; over > 0 {
		t.buf = t.buf[:copy(t.buf, t.buf[over:])]
		t.truncated = true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// Bytes is what was kept.
func (t *Buffer) Bytes() []byte { return t.buf }

// Truncated reports whether earlier output was dropped.
func (t *Buffer) Truncated() bool { return t.truncated }

// String is what was kept, as valid UTF-8, after "…" if earlier output was
// dropped.
func (t *Buffer) String() string {
	s := string(bytes.ToValidUTF8(t.buf, []byte("\uFFFD")))
	if t.truncated {
		return "…" + s
	}
	return s
}
