package agent

import (
	"os"

	"github.com/cairnbackup/cairn/agent/vss"
	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// writersFromFile reports the VSS writers of a saved "vssadmin list
// writers" output (Config.WritersFile), parsed like the live tool's: for
// support staff replaying a customer's output, and for tests of the
// appliance's Inspect step on machines without VSS.
func writersFromFile(path string) *agentv1.ListWritersResponse {
	resp := &agentv1.ListWritersResponse{SnapshotProvider: "vss-file"}
	f, err := os.Open(path)
	if err != nil {
		resp.Error = err.Error()
		return resp
	}
	defer f.Close()
	ws, err := vss.Parse(f)
	if err != nil {
		resp.Error = err.Error()
	}
	resp.Writers = toProtoWriters(ws)
	return resp
}

func toProtoWriters(ws []vss.Writer) []*agentv1.Writer {
	out := make([]*agentv1.Writer, 0, len(ws))
	for _, w := range ws {
		out = append(out, &agentv1.Writer{
			Name: w.Name, Id: w.ID, InstanceId: w.InstanceID,
			StateCode: uint32(w.StateCode), State: w.State, LastError: w.LastError,
		})
	}
	return out
}
