package openzfs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cairnbackup/cairn/zfs"
)

// requireZFS gates every test that needs real OpenZFS: it skips without
// /dev/zfs, unless CAIRN_TEST_ZFS=1 says that ZFS must be there (CI and
// make test-zfs), in which case it fails. Detect ZFS by /dev/zfs, not by
// the zfs command: that may be installed without the kernel module.
func requireZFS(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/zfs"); err != nil {
		if os.Getenv("CAIRN_TEST_ZFS") == "1" {
			t.Fatal("CAIRN_TEST_ZFS=1 but /dev/zfs is missing")
		}
		t.Skip("needs /dev/zfs: run make test-zfs")
	}
}

var poolSeq atomic.Int64

// testPool is a fresh ZFS pool on a sparse file in t.TempDir, destroyed
// when t ends.
type testPool struct {
	*Pool
	zpool string // the ZFS pool's name
	dir   string
}

// newTestPool creates a zpool and opens a Pool with Root <zpool>/cairn.
func newTestPool(t *testing.T) *testPool {
	t.Helper()
	requireZFS(t)
	dir := t.TempDir()
	name := fmt.Sprintf("cairn%d_%d", os.Getpid(), poolSeq.Add(1))
	vdev := filepath.Join(dir, "vdev")
	sh(t, "truncate", "-s", "512M", vdev)
	sh(t, "zpool", "create", "-m", filepath.Join(dir, "mnt"), name, vdev)
	t.Cleanup(func() {
		if out, err := exec.Command("zpool", "destroy", "-f", name).CombinedOutput(); err != nil {
			t.Errorf("zpool destroy %s: %v: %s", name, err, out)
		}
	})
	p, err := Open(context.Background(), Config{Root: zfs.MustDatasetName(name + "/cairn"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &testPool{Pool: p, zpool: name, dir: dir}
}

// sh runs a command for test setup.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testLogger logs through t.Log: every zfs command shows in the output of
// a failed test.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
