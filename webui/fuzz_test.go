package webui

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

func FuzzParsePHC(f *testing.F) {
	h, _ := hashPassword("pw", testArgon)
	for _, s := range []string{h, "", "$argon2id$v=19$m=1024,t=1,p=1$$", "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, phc string) {
		p, salt, key, err := parsePHC(phc)
		if err != nil {
			return
		}
		// What parses is bounded work for argon2 and writes back as read.
		if p.Memory > maxArgonMemory || p.Time == 0 || p.Time > maxArgonTime || p.Threads == 0 || len(key) < 16 || len(key) > 64 || len(salt) < 8 {
			t.Fatalf("%q parsed to %+v, salt %d, key %d bytes", phc, p, len(salt), len(key))
		}
		enc := base64.RawStdEncoding
		back := fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", p.Memory, p.Time, p.Threads, enc.EncodeToString(salt), enc.EncodeToString(key))
		if back != phc {
			t.Fatalf("%q parsed and written is %q", phc, back)
		}
	})
}

func FuzzSplitTargets(f *testing.F) {
	for _, s := range []string{"web01, fs1.corp.example\n10.0.0.5", "[::1]", "a..b", "-x", "x_y", strings.Repeat("a.", 130)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		list, msg := splitTargets(s)
		if msg != "" && list != nil {
			t.Fatalf("%q: both targets and a message", s)
		}
		for _, tg := range list {
			if tg == "" || strings.ContainsAny(tg, ",\r\n \t") || len(tg) > 253+2 {
				t.Fatalf("%q: accepted target %q", s, tg)
			}
		}
	})
}
