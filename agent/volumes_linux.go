package agent

import (
	"bufio"
	"context"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// listVolumes lists the mounted block-device file systems, from
// /proc/self/mountinfo: one volume per device, with all its mount points.
func listVolumes(context.Context) ([]*agentv1.Volume, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	byDev := make(map[string]*agentv1.Volume)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		src, fstype, mnt, ok := parseMountinfo(sc.Text())
		if !ok || !strings.HasPrefix(src, "/dev/") {
			continue
		}
		v := byDev[src]
		if v == nil {
			v = &agentv1.Volume{Id: src, Path: src, Filesystem: fstype}
			var st unix.Statfs_t
			if unix.Statfs(mnt, &st) == nil {
				v.SizeBytes = st.Blocks * uint64(st.Bsize)
			}
			byDev[src] = v
		}
		v.MountPoints = append(v.MountPoints, mnt)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out := make([]*agentv1.Volume, 0, len(byDev))
	for _, v := range byDev {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out, nil
}

// parseMountinfo returns the source, file system type and mount point of
// one line of /proc/self/mountinfo (proc(5)).
func parseMountinfo(line string) (src, fstype, mnt string, ok bool) {
	pre, post, found := strings.Cut(line, " - ")
	if !found {
		return "", "", "", false
	}
	a, b := strings.Fields(pre), strings.Fields(post)
	if len(a) < 5 || len(b) < 2 {
		return "", "", "", false
	}
	return unescapeMount(b[1]), b[0], unescapeMount(a[4]), true
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
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
