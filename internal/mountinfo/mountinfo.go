// Package mountinfo parses Linux's /proc/self/mountinfo (proc(5)).
package mountinfo

import (
	"os"
	"strings"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	Root       string // the directory of the file system that is mounted
	MountPoint string
	FSType     string
	Source     string
}

// Read parses the mount table at path, usually /proc/self/mountinfo.
func Read(path string) ([]Mount, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data), nil
}

// Parse parses mountinfo text: "id parent major:minor root mountpoint
// options [optional fields...] - fstype source superoptions". Paths escape
// space, tab, newline and backslash as octal. Lines that do not have that
// shape are skipped.
func Parse(data []byte) []Mount {
	var res []Mount
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(f) {
			continue
		}
		res = append(res, Mount{
			Root:       Unescape(f[3]),
			MountPoint: Unescape(f[4]),
			FSType:     f[sep+1],
			Source:     Unescape(f[sep+2]),
		})
	}
	return res
}

// Unescape undoes the octal escapes (\040 and so on) of mountinfo.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
