package appliance_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"testing"

	"github.com/cairnbackup/cairn/appliance"
)

func TestServeHealthz(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	a, err := appliance.New(ctx, appliance.Config{DataDir: dir})
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

	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var h appliance.Health
	err = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || h.Status != "ok" || h.Pool != "cairn" || h.PoolKind != "embedded" ||
		h.Catalog != "ok" || h.PoolAvailable <= 0 {
		t.Fatalf("healthz = %d %+v", resp.StatusCode, h)
	}

	// A second appliance on the same data is refused while this one runs.
	if _, err := appliance.New(ctx, appliance.Config{DataDir: dir}); err == nil {
		t.Fatal("a second appliance opened the same data directory")
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve after cancel: %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]appliance.Config{
		"no data dir":  {},
		"unknown pool": {DataDir: t.TempDir(), PoolKind: "nfs"},
		"zfs no root":  {DataDir: t.TempDir(), PoolKind: appliance.PoolOpenZFS},
		"zfs bad root": {DataDir: t.TempDir(), PoolKind: appliance.PoolOpenZFS, ZFSRoot: "tank/../x"},
	} {
		if a, err := appliance.New(ctx, cfg); err == nil {
			a.Close()
			t.Errorf("%s: New succeeded", name)
		} else if errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
