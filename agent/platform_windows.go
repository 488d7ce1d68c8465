package agent

import (
	"context"

	"github.com/cairnbackup/cairn/agent/snapshot"
	"github.com/cairnbackup/cairn/agent/vss"
	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

func platformProvider() string { return "vss" }

// platformSnapshot: every Windows volume is snapshotted with VSS.
func (a *Agent) platformSnapshot(context.Context, string) (snapshot.Provider, error) {
	return snapshot.VSS{}, nil
}

// listWriters asks the Volume Shadow Copy service for its writers.
func listWriters(ctx context.Context) *agentv1.ListWritersResponse {
	resp := &agentv1.ListWritersResponse{SnapshotProvider: "vss"}
	ws, err := vss.List(ctx)
	if err != nil {
		resp.Error = err.Error()
	}
	resp.Writers = toProtoWriters(ws)
	return resp
}

func osDescription() string { return "Windows" }
