// Package agentv1 is the agent API (api/agent/v1/agent.proto): the gRPC
// service cairn-agent serves to the appliance over the channel.
package agentv1

//go:generate sh -c "cd ../../.. && go run github.com/bufbuild/buf/cmd/buf@v1.75.0 generate"

// ProtocolVersion is the version of the channel and agent API this build
// speaks (2: Backup and ConfirmBackup). It rises by one with every change a peer must know about; peers
// use the lower of their two versions (see docs/protocol.md).
const ProtocolVersion = 2

// MinProtocolVersion is the oldest version this build still speaks.
const MinProtocolVersion = 1
