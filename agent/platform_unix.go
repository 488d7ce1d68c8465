//go:build !windows

package agent

import (
	"context"
	"os"
	"runtime"
	"strings"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// snapshotProvider names the snapshot provider: none yet off Windows (LVM
// and file-system snapshots come with the backup issue).
func snapshotProvider() string { return "none" }

// listWriters: there are no VSS writers off Windows.
func listWriters(context.Context) *agentv1.ListWritersResponse {
	return &agentv1.ListWritersResponse{SnapshotProvider: snapshotProvider()}
}

// osDescription is PRETTY_NAME from os-release where there is one.
func osDescription() string {
	for _, path := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				return strings.Trim(v, `"'`)
			}
		}
	}
	return runtime.GOOS
}
