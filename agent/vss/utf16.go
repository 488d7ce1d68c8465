package vss

import (
	"io"
	"unicode/utf16"
	"unicode/utf8"
)

// utf16LEReader decodes UTF-16LE from src into UTF-8. Unpaired surrogates
// and a final odd byte become U+FFFD.
type utf16LEReader struct {
	src io.Reader
	in  []byte // undecoded bytes carried between reads
	out []byte // decoded bytes not yet returned
	err error
}

func (u *utf16LEReader) Read(p []byte) (int, error) {
	var buf [4096]byte
	for empty := 0; len(u.out) == 0 && u.err == nil; empty++ {
		if empty == 100 {
			return 0, io.ErrNoProgress
		}
		n, err := u.src.Read(buf[:])
		u.in = append(u.in, buf[:n]...)
		if err != nil {
			u.err = err
		}
		u.decode(u.err != nil)
	}
	if len(u.out) > 0 {
		n := copy(p, u.out)
		u.out = u.out[n:]
		return n, nil
	}
	return 0, u.err
}

// decode moves what it can from u.in to u.out; final means no more input.
func (u *utf16LEReader) decode(final bool) {
	i := 0
	for ; i+1 < len(u.in); i += 2 {
		c := rune(u.in[i]) | rune(u.in[i+1])<<8
		if 0xd800 <= c && c < 0xdc00 { // high surrogate: needs the next unit
			if i+3 >= len(u.in) && !final {
				break
			}
			if i+3 < len(u.in) {
				c2 := rune(u.in[i+2]) | rune(u.in[i+3])<<8
				if r := utf16.DecodeRune(c, c2); r != utf8.RuneError {
					u.out = utf8.AppendRune(u.out, r)
					i += 2
					continue
				}
			}
		}
		u.out = utf8.AppendRune(u.out, c) // a lone surrogate becomes U+FFFD
	}
	u.in = append(u.in[:0], u.in[i:]...)
	if final && len(u.in) > 0 {
		u.out = utf8.AppendRune(u.out, utf8.RuneError)
		u.in = u.in[:0]
	}
}
