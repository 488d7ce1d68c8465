package pairing

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// testAgent serves fixed volumes and writers over real gRPC on loopback.
type testAgent struct {
	agentv1.UnimplementedAgentServiceServer
	volumes []*agentv1.Volume
	writers *agentv1.ListWritersResponse
	volErr  error
}

func (a *testAgent) ListVolumes(context.Context, *agentv1.ListVolumesRequest) (*agentv1.ListVolumesResponse, error) {
	if a.volErr != nil {
		return nil, a.volErr
	}
	return &agentv1.ListVolumesResponse{Volumes: a.volumes}, nil
}

func (a *testAgent) ListWriters(context.Context, *agentv1.ListWritersRequest) (*agentv1.ListWritersResponse, error) {
	return a.writers, nil
}

func serve(t *testing.T, a *testAgent) agentv1.AgentServiceClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	agentv1.RegisterAgentServiceServer(srv, a)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return agentv1.NewAgentServiceClient(cc)
}

func writer(name string, code uint32, state, lastErr string) *agentv1.Writer {
	return &agentv1.Writer{Name: name, Id: "{id}", InstanceId: "{inst}", StateCode: code, State: state, LastError: lastErr}
}

func TestInspect(t *testing.T) {
	vols := []*agentv1.Volume{{Id: `\\?\Volume{1}\`, Path: `C:\`, SizeBytes: 1 << 30, Filesystem: "NTFS", MountPoints: []string{`C:\`}}}
	stable := []*agentv1.Writer{writer("System Writer", 1, "Stable", "No error"), writer("SqlServerWriter", 1, "Stable", "No error")}
	ctx := context.Background()
	for name, tc := range map[string]struct {
		agent          *testAgent
		status         Status
		code           string
		detail, remedy []string
	}{
		"stable": {
			agent:  &testAgent{volumes: vols, writers: &agentv1.ListWritersResponse{Writers: stable, SnapshotProvider: "vss"}},
			status: StatusOK, detail: []string{"1 volumes", "2 VSS writers", "all stable"},
		},
		"no vss": {
			agent:  &testAgent{volumes: vols, writers: &agentv1.ListWritersResponse{SnapshotProvider: "none"}},
			status: StatusOK, detail: []string{"snapshot provider none", "0 VSS writers"},
		},
		"failed writers": {
			agent: &testAgent{volumes: vols, writers: &agentv1.ListWritersResponse{SnapshotProvider: "vss", Writers: []*agentv1.Writer{
				writer("SqlServerWriter", 8, "Failed", "Non-retryable error"),
				writer("Microsoft Hyper-V VSS Writer", 9, "Failed", "Retryable error"),
				writer("Odd Writer", 11, "Failed", "Timed out"),
				writer("System Writer", 1, "Stable", "No error"),
			}}},
			status: StatusWarning, code: "writer_failed",
			detail: []string{"3 failed", `SqlServerWriter: [8] Failed, last error "Non-retryable error"`,
				`Microsoft Hyper-V VSS Writer: [9] Failed, last error "Retryable error"`, "application-consistent"},
			remedy: []string{"SQL Server VSS Writer (SQLWriter)", "Hyper-V Virtual Machine Management (vmms)", `the service that hosts "Odd Writer"`, "retry"},
		},
		"waiting writers": {
			agent: &testAgent{volumes: vols, writers: &agentv1.ListWritersResponse{SnapshotProvider: "vss", Writers: []*agentv1.Writer{
				writer("SqlServerWriter", 5, "Waiting for completion", "No error"),
			}}},
			status: StatusWarning, code: "writer_waiting", detail: []string{"[5] Waiting for completion"}, remedy: []string{"Volume Shadow Copy"},
		},
		"writers not listable": {
			agent:  &testAgent{volumes: vols, writers: &agentv1.ListWritersResponse{SnapshotProvider: "vss", Error: "vssadmin: You don't have the correct permissions"}},
			status: StatusWarning, code: "writers_unknown", detail: []string{"permissions"}, remedy: []string{"administrator"},
		},
		"no volumes": {
			agent:  &testAgent{writers: &agentv1.ListWritersResponse{SnapshotProvider: "vss"}},
			status: StatusFailed, code: "no_volumes",
		},
		"volumes fail": {
			agent:  &testAgent{volErr: status.Error(codes.Internal, "boom"), writers: &agentv1.ListWritersResponse{}},
			status: StatusFailed, code: "volumes_failed", detail: []string{"boom"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := Inspect(ctx, serve(t, tc.agent))
			if r.Step != StepInspect || r.Status != tc.status || r.Code != tc.code {
				t.Fatalf("got %s/%s/%q: %s", r.Step, r.Status, r.Code, r.Detail)
			}
			for _, want := range tc.detail {
				if !strings.Contains(r.Detail, want) {
					t.Errorf("detail %q lacks %q", r.Detail, want)
				}
			}
			for _, want := range tc.remedy {
				if !strings.Contains(r.Remedy, want) {
					t.Errorf("remedy %q lacks %q", r.Remedy, want)
				}
			}
			if r.Status != StatusOK && r.Remedy == "" {
				t.Error("a warning or failure without a remedy")
			}
		})
	}
}
