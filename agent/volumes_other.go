//go:build !linux && !windows

package agent

import (
	"context"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// listVolumes is not implemented on this system yet.
func listVolumes(context.Context) ([]*agentv1.Volume, error) { return nil, nil }
