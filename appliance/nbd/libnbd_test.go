package nbd

// Tests with real clients: nbdinfo and nbdcopy from libnbd (Debian's
// libnbd-bin), which run in user space and need no kernel module.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairnbackup/cairn/internal/logtest"
)

// libnbdTool returns the path of a libnbd-bin program; a missing one fails
// the test, as the package's tests need it.
func libnbdTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (%v): it is in Debian's libnbd-bin, which `make deps` installs", name, err)
	}
	return p
}

// run runs a program, bounded by waitTimeout, and returns its standard
// output; it fails the test if the program fails.
func run(t *testing.T, prog string, args ...string) []byte {
	t.Helper()
	out, err := runErr(t, prog, args...)
	if err != nil {
		t.Fatalf("%s %q: %v", filepath.Base(prog), args, err)
	}
	return out
}

func runErr(t *testing.T, prog string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w; stderr: %s", err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// nbdinfoExport is what nbdinfo --json says of an export.
type nbdinfoExport struct {
	Name         string `json:"export-name"`
	Description  string `json:"description"`
	Size         int64  `json:"export-size"`
	ReadOnly     bool   `json:"is_read_only"`
	CanMultiConn bool   `json:"can_multi_conn"`
	CanFlush     bool   `json:"can_flush"`
	CanTrim      bool   `json:"can_trim"`
	CanZero      bool   `json:"can_zero"`
	BlockMin     int64  `json:"block_size_minimum"`
	BlockPref    int64  `json:"block_size_preferred"`
	BlockMax     int64  `json:"block_size_maximum"`
}

type nbdinfoOutput struct {
	Protocol   string          `json:"protocol"`
	Structured bool            `json:"structured"`
	Exports    []nbdinfoExport `json:"exports"`
}

func nbdinfo(t *testing.T, args ...string) nbdinfoOutput {
	t.Helper()
	out := run(t, libnbdTool(t, "nbdinfo"), append([]string{"--json"}, args...)...)
	var info nbdinfoOutput
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("nbdinfo output: %v\n%s", err, out)
	}
	return info
}

func TestNbdinfo(t *testing.T) {
	const size = 16<<20 + 12345
	ts := startServer(t, Config{}, export("disk", testImage(size)))
	info := nbdinfo(t, "nbd://"+ts.addr+"/disk")
	if info.Protocol != "newstyle-fixed" || info.Structured {
		t.Errorf("protocol %q, structured %v; want newstyle-fixed, simple replies", info.Protocol, info.Structured)
	}
	if len(info.Exports) != 1 {
		t.Fatalf("%d exports, want 1", len(info.Exports))
	}
	want := nbdinfoExport{
		Name: "disk", Description: "test volume disk", Size: size, ReadOnly: true, CanMultiConn: true,
		BlockMin: 1, BlockPref: 4096, BlockMax: 32 << 20,
	}
	if got := info.Exports[0]; got != want {
		t.Errorf("nbdinfo:\n got %+v\nwant %+v", got, want)
	}
}

func TestNbdinfoList(t *testing.T) {
	ts := startServer(t, Config{}, export("c-drive", testImage(1<<20)), Export{Name: "d-drive", Size: 512, Data: bytes.NewReader(make([]byte, 512))})
	info := nbdinfo(t, "--list", "nbd://"+ts.addr)
	if len(info.Exports) != 2 {
		t.Fatalf("%d exports listed, want 2", len(info.Exports))
	}
	for i, want := range []struct {
		name, desc string
		size       int64
	}{{"c-drive", "test volume c-drive", 1 << 20}, {"d-drive", "", 512}} {
		got := info.Exports[i]
		if got.Name != want.name || got.Description != want.desc || got.Size != want.size || !got.ReadOnly {
			t.Errorf("export %d: %+v, want %q %q size %d read-only", i, got, want.name, want.desc, want.size)
		}
	}
}

func TestNbdinfoUnknownExport(t *testing.T) {
	ts := startServer(t, Config{}, export("disk", testImage(4096)))
	out, err := runErr(t, libnbdTool(t, "nbdinfo"), "nbd://"+ts.addr+"/nope")
	if err == nil {
		t.Fatalf("nbdinfo of an unknown export succeeded:\n%s", out)
	}
	if !bytes.Contains([]byte(err.Error()), []byte("nope")) {
		t.Errorf("nbdinfo's error does not name the export: %v", err)
	}
}

// TestNbdcopy copies the image with several nbdcopy clients at once, each
// of which opens several connections (the export can multi-conn), and
// checks every copy's SHA-256.
func TestNbdcopy(t *testing.T) {
	nbdcopy := libnbdTool(t, "nbdcopy")
	const size = 32<<20 + 12345
	img := testImage(size)
	want := sha256.Sum256(img)
	ts := startServer(t, Config{}, export("disk", img))
	dir := t.TempDir()
	const clients = 3
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := filepath.Join(dir, fmt.Sprintf("copy%d.img", i))
			_, errs[i] = runErr(t, nbdcopy, "--connections=4", "--threads=4", "nbd://"+ts.addr+"/disk", out)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("nbdcopy %d: %v", i, err)
		}
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("copy%d.img", i)))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != size || sha256.Sum256(got) != want {
			t.Errorf("copy %d: %d bytes, SHA-256 %x; want %d bytes, %x", i, len(got), sha256.Sum256(got), size, want)
		}
	}
	// Each nbdcopy used its 4 connections (nbdcopy uses no more than its
	// threads): the export offers multi-conn.
	attached := 0
	ts.logs.Wait(t, fmt.Sprintf("%d attachments", clients*4), func(r logtest.Record) bool {
		if r.Msg == "nbd client attached" {
			attached++
		}
		return attached == clients*4
	})
}
