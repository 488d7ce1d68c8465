package agent

import (
	"context"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cairnbackup/cairn/agent/snapshot"
	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/internal/mountinfo"
)

// listVolumes lists the mounted block-device file systems, from
// /proc/self/mountinfo: one volume per device, with all its mount points
// and the device's size (what a backup reads).
func listVolumes(context.Context) ([]*agentv1.Volume, error) {
	mounts, err := mountinfo.Read("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	byDev := make(map[string]*agentv1.Volume)
	for _, m := range mounts {
		if !strings.HasPrefix(m.Source, "/dev/") {
			continue
		}
		v := byDev[m.Source]
		if v == nil {
			v = &agentv1.Volume{Id: m.Source, Path: m.Source, Filesystem: m.FSType}
			// The device's size, which a backup reads; the file system's
			// where the device cannot be opened (not root).
			if size, err := snapshot.Size(m.Source); err == nil {
				v.SizeBytes = uint64(size)
			} else {
				var st unix.Statfs_t
				if unix.Statfs(m.MountPoint, &st) == nil {
					v.SizeBytes = st.Blocks * uint64(st.Bsize)
				}
			}
			byDev[m.Source] = v
		}
		v.MountPoints = append(v.MountPoints, m.MountPoint)
	}
	out := make([]*agentv1.Volume, 0, len(byDev))
	for _, v := range byDev {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out, nil
}
