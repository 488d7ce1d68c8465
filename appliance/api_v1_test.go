package appliance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"reflect"
	"testing"

	"github.com/cairnbackup/cairn/appliance"
	"github.com/cairnbackup/cairn/pairing"
)

// TestV1BulkPairings: a list of targets makes one pairing each; a bad
// product key is refused with its code before anything is stored.
func TestV1BulkPairings(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The Resolve step asks a closed port on loopback: it fails fast, and
	// never the machine's resolvers.
	a, err := appliance.New(ctx, appliance.Config{DataDir: t.TempDir(), DNSServers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln, nil) }()
	url := "http://" + ln.Addr().String()

	post := func(body any) (int, appliance.StartPairingsReply) {
		b, _ := json.Marshal(body)
		resp, err := http.Post(url+"/api/v1/pairings", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r appliance.StartPairingsReply
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, r
	}
	code, r := post(map[string]any{"target": "web01.corp.example, 10.0.0.5\nfs1 ,", "product_key": appliance.DemoProductKey})
	if code != http.StatusCreated || len(r.Pairings) != 3 || len(r.Errors) != 0 {
		t.Fatalf("bulk: HTTP %d %+v", code, r)
	}
	for i, want := range []string{"web01", "10-0-0-5", "fs1"} {
		if r.Pairings[i].AgentID != want || r.Pairings[i].Port != 25568 || r.Pairings[i].Mode != "direct" {
			t.Errorf("pairing %d: %+v", i, r.Pairings[i])
		}
	}
	code, r = post(map[string]any{"target": "a,b", "agent_id": "x", "product_key": appliance.DemoProductKey})
	if code != http.StatusBadRequest {
		t.Fatalf("bulk with agent_id: HTTP %d %+v", code, r)
	}
	code, r = post(map[string]any{"target": "pc9", "product_key": "BFBPF-51RGX-B1MXQ-BGGFQ-Z9PDF"})
	if code != http.StatusBadRequest || len(r.Errors) != 1 || r.Errors[0].Code != "bad_product_key" {
		t.Fatalf("bad key: HTTP %d %+v", code, r)
	}
	resp, err := http.Get(url + "/api/v1/pairings")
	if err != nil {
		t.Fatal(err)
	}
	var all []json.RawMessage
	json.NewDecoder(resp.Body).Decode(&all)
	resp.Body.Close()
	if len(all) != 3 {
		t.Fatalf("%d pairings stored, want 3", len(all))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestStartPairingsRequestDefaultsOmittedSettings(t *testing.T) {
	var req appliance.StartPairingsRequest
	if err := json.Unmarshal([]byte(`{"target": "pc1", "product_key": "K", "settings": {"volumes": ["/d.img"], "backup_schedule": "@daily"}}`), &req); err != nil {
		t.Fatal(err)
	}
	want := pairing.DefaultSettings()
	want.Volumes, want.BackupSchedule = []string{"/d.img"}, "@daily"
	if req.Settings == nil || !reflect.DeepEqual(*req.Settings, want) || req.Target != "pc1" {
		t.Fatalf("settings %+v, want %+v", req.Settings, want)
	}
	req = appliance.StartPairingsRequest{}
	if err := json.Unmarshal([]byte(`{"target": "pc1", "product_key": "K"}`), &req); err != nil || req.Settings != nil {
		t.Fatalf("without settings: %+v, %v", req.Settings, err)
	}
	if err := json.Unmarshal([]byte(`{"target": "pc1", "settings": {"volumez": []}}`), &req); err == nil {
		t.Fatal("an unknown settings field was accepted")
	}
}
