//go:build !windows

package agent

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/cairnbackup/cairn/agent/snapshot"
	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// platformProvider names the snapshot provider of discovered volumes: LVM
// where its tools are installed.
func platformProvider() string {
	if _, err := exec.LookPath("lvs"); err == nil {
		return "lvm"
	}
	return "none"
}

// platformSnapshot chooses the provider for a discovered volume: LVM if
// the volume is a logical volume. Anything else is refused: reading a
// mounted file system's device as is would not be consistent.
func (a *Agent) platformSnapshot(ctx context.Context, volume string) (snapshot.Provider, error) {
	if _, err := a.lvm.Lookup(ctx, volume); err != nil {
		return nil, &noSnapshotError{volume: volume, err: err}
	}
	return a.lvm, nil
}

// listWriters: there are no VSS writers off Windows.
func listWriters(context.Context) *agentv1.ListWritersResponse {
	return &agentv1.ListWritersResponse{}
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
