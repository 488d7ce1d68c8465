package agent

import (
	"context"
	"os"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/pairing/identity"
)

// service is the agent API served on one session; peer is the appliance
// at the other end.
type service struct {
	agentv1.UnimplementedAgentServiceServer
	a    *Agent
	peer identity.Fingerprint
}

// gate refuses everything but Hello and Pair until the agent is paired.
func (s *service) gate(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	switch info.FullMethod {
	case agentv1.AgentService_Hello_FullMethodName, agentv1.AgentService_Pair_FullMethodName:
		return h(ctx, req)
	}
	if err := s.allowed(); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *service) gateStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.allowed(); err != nil {
		return err
	}
	return h(srv, ss)
}

// allowed refuses the agent API unless this session's appliance is the
// pinned one: not before pairing, and not on a session that began while
// the agent was unpaired if another appliance has paired since.
func (s *service) allowed() error {
	pin, ok, err := s.a.state.pin()
	if err != nil || !ok {
		return status.Error(codes.FailedPrecondition, "agent is not paired")
	}
	if pin.Fingerprint != s.peer {
		return status.Error(codes.PermissionDenied, "agent is paired with another appliance")
	}
	return nil
}

func (s *service) Hello(_ context.Context, req *agentv1.HelloRequest) (*agentv1.HelloResponse, error) {
	v := uint32(agentv1.ProtocolVersion)
	if req.GetProtocolVersion() < agentv1.MinProtocolVersion {
		return nil, status.Errorf(codes.FailedPrecondition, "appliance speaks protocol %d, this agent needs at least %d",
			req.GetProtocolVersion(), agentv1.MinProtocolVersion)
	}
	v = min(v, req.GetProtocolVersion())
	host, _ := os.Hostname()
	var agentID string // told only to the pinned appliance
	if pin, ok, _ := s.a.state.pin(); ok && pin.Fingerprint == s.peer {
		agentID = pin.AgentID
	}
	provider := s.a.snapshotProvider()
	return &agentv1.HelloResponse{
		AgentId:          agentID,
		Fingerprint:      s.a.id.Fingerprint().String(),
		Hostname:         host,
		Os:               runtime.GOOS,
		Arch:             runtime.GOARCH,
		OsDescription:    osDescription(),
		AgentVersion:     s.a.cfg.Version,
		ProtocolVersion:  v,
		SnapshotProvider: provider,
	}, nil
}

func (s *service) Pair(_ context.Context, req *agentv1.PairRequest) (*agentv1.PairResponse, error) {
	want, err := identity.ParseFingerprint(req.GetApplianceFingerprint())
	if err != nil || want != s.peer {
		return nil, status.Error(codes.InvalidArgument, "appliance fingerprint does not match this session's")
	}
	s.a.state.mu.Lock()
	defer s.a.state.mu.Unlock()
	pin, ok, err := s.a.state.pin()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if ok && pin.Fingerprint != s.peer {
		// TLS already refuses other appliances; this is a race with unpair.
		return nil, status.Error(codes.PermissionDenied, "agent is paired with another appliance")
	}
	already := ok
	pin = Pin{Fingerprint: s.peer, Name: req.GetApplianceName(), AgentID: req.GetAgentId(), PairedAt: pin.PairedAt}
	if pin.PairedAt.IsZero() {
		pin.PairedAt = time.Now().UTC()
	}
	if err := s.a.state.setPin(pin); err != nil {
		return nil, status.Error(codes.Internal, "store pin: "+err.Error())
	}
	if !already {
		s.a.log.Info("paired with appliance", "appliance", pin.Name, "fingerprint", s.peer.String(),
			"short", s.peer.Short(), "agent_id", pin.AgentID)
	}
	return &agentv1.PairResponse{AlreadyPaired: already}, nil
}

func (s *service) Ping(_ context.Context, req *agentv1.PingRequest) (*agentv1.PingResponse, error) {
	return &agentv1.PingResponse{SentUnixNano: req.GetSentUnixNano(), AgentUnixNano: time.Now().UnixNano()}, nil
}

func (s *service) ListVolumes(ctx context.Context, _ *agentv1.ListVolumesRequest) (*agentv1.ListVolumesResponse, error) {
	vols, err := s.a.volumes(ctx)
	if err != nil {
		return nil, status.Error(codes.Internal, "list volumes: "+err.Error())
	}
	return &agentv1.ListVolumesResponse{Volumes: vols}, nil
}

func (s *service) ListWriters(ctx context.Context, _ *agentv1.ListWritersRequest) (*agentv1.ListWritersResponse, error) {
	if s.a.cfg.WritersFile != "" {
		return writersFromFile(s.a.cfg.WritersFile), nil
	}
	resp := listWriters(ctx)
	resp.SnapshotProvider = s.a.snapshotProvider()
	return resp, nil
}

// speedChunk is the largest SpeedTest message, and the size it sends by
// default: 1 MiB less 1 KiB, so that the encoded message (a few bytes more)
// fits gRPC's largest pooled buffer (1 MiB) on both sides; a whole MiB of
// data costs about 10% more CPU in total (measured with BenchmarkChannel).
const speedChunk = 1<<20 - 1<<10

// maxSpeedTest bounds one SpeedTest.
const maxSpeedTest = 64 << 30

// SpeedTest sends the requested bytes (zeros) in messages of the requested
// size. A full message is encoded once (grpc.PreparedMsg) and sent again
// and again, so that SpeedTest measures the channel rather than the
// encoding of the same zeros (a copy, into a buffer the pool clears, per
// message); only a shorter last message is encoded on its own.
func (s *service) SpeedTest(req *agentv1.SpeedTestRequest, stream grpc.ServerStreamingServer[agentv1.SpeedTestData]) error {
	if req.GetBytes() > maxSpeedTest {
		return status.Errorf(codes.InvalidArgument, "at most %d bytes", uint64(maxSpeedTest))
	}
	size := uint64(req.GetMessageSize())
	if size == 0 || size > speedChunk {
		size = speedChunk
	}
	buf := make([]byte, size)
	var full grpc.PreparedMsg
	if req.GetBytes() >= size {
		if err := full.Encode(stream, &agentv1.SpeedTestData{Data: buf}); err != nil {
			return err
		}
	}
	for left := req.GetBytes(); left > 0; {
		var m any = &full
		if left < size {
			m = &agentv1.SpeedTestData{Data: buf[:left]}
		}
		if err := stream.SendMsg(m); err != nil {
			return err
		}
		left -= min(left, size)
	}
	return nil
}
