package tail

import (
	"fmt"
	"strings"
	"testing"
)

func TestBuffer(t *testing.T) {
	cases := []struct {
		writes    []string
		want      string
		truncated bool
	}{
		{[]string{"ab", "cd"}, "abcd", false},
		{[]string{"abcdefgh"}, "abcdefgh", false},
		{[]string{"abcdefghij"}, "…cdefghij", true},
		{[]string{"abcde", "fghij"}, "…cdefghij", true},
		{[]string{"abc", "defghijk", "l"}, "…efghijkl", true},
		{[]string{"abcdefgh", ""}, "abcdefgh", false},
	}
	for _, c := range cases {
		b := &Buffer{Max: 8}
		for _, w := range c.writes {
			if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
				t.Fatalf("Write(%q) = %d, %v", w, n, err)
			}
		}
		if b.String() != c.want || b.Truncated() != c.truncated {
			t.Errorf("%q: %q (truncated %v), want %q", c.writes, b.String(), b.Truncated(), c.want)
		}
	}
	b := &Buffer{Max: 100}
	for i := range 1000 {
		fmt.Fprintf(b, "line %d\n", i)
	}
	if !strings.HasSuffix(b.String(), "line 999\n") || len(b.Bytes()) != 100 {
		t.Errorf("kept %d bytes: %q", len(b.Bytes()), b.String())
	}
}
