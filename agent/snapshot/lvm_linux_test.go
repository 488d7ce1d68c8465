package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLVMReal makes an LVM snapshot of a logical volume on a loop device:
// it needs root, losetup, lvm2 and the kernel's device mapper. It skips
// without them unless CAIRN_TEST_LVM=1, which makes that a failure.
func TestLVMReal(t *testing.T) {
	ctx := context.Background()
	need := func(what string, err error) {
		t.Helper()
		if err == nil {
			return
		}
		if os.Getenv("CAIRN_TEST_LVM") == "1" {
			t.Fatalf("%s: %v", what, err)
		}
		t.Skipf("no LVM here (%s: %v); CAIRN_TEST_LVM=1 makes this a failure", what, err)
	}
	if os.Geteuid() != 0 {
		need("root", fmt.Errorf("running as uid %d", os.Geteuid()))
	}
	if os.Getenv("ZFSVM") == "1" {
		// In the VM of ../shared/zfsvm (make test-zfs), which loads
		// modules on demand only for what udev asks.
		for _, m := range []string{"loop", "dm_mod", "dm_snapshot"} {
			if _, err := Exec(ctx, "modprobe", m); err != nil {
				t.Logf("modprobe %s: %v", m, err)
			}
		}
	}
	_, err := Exec(ctx, "dmsetup", "version")
	need("device mapper", err)
	file := filepath.Join(t.TempDir(), "pv.img")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, 256<<20); err != nil {
		t.Fatal(err)
	}
	out, err := Exec(ctx, "losetup", "--find", "--show", file)
	need("losetup", err)
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { Exec(ctx, "losetup", "--detach", loop) })
	vg := fmt.Sprintf("cairntest%d", rand.Uint32())
	for _, cmd := range [][]string{
		{"pvcreate", "--yes", loop},
		{"vgcreate", "--yes", vg, loop},
		{"lvcreate", "--yes", "--name", "data", "--size", "32m", vg},
	} {
		_, err := Exec(ctx, cmd[0], cmd[1:]...)
		need(cmd[0], err)
	}
	t.Cleanup(func() {
		Exec(ctx, "vgremove", "--force", "--yes", vg)
		Exec(ctx, "pvremove", "--yes", loop)
	})
	l := &LVM{}
	origin := l.devicePath(vg, "data")
	want := make([]byte, 32<<20)
	for i := range want {
		want[i] = byte(i * 7 / 4096)
	}
	if err := os.WriteFile(origin, want, 0); err != nil {
		t.Fatal(err)
	}
	s, err := l.Snapshot(ctx, origin, "job 1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Size() != int64(len(want)) || !s.PointInTime() {
		t.Errorf("snapshot of %d bytes, point in time %v", s.Size(), s.PointInTime())
	}
	// The origin changes; the snapshot does not.
	if err := os.WriteFile(origin, make([]byte, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := s.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Errorf("snapshot content differs from the volume when it was made (%v)", err)
	}
	if err := s.Release(ctx); err != nil {
		t.Fatal(err)
	}
	out, err = Exec(ctx, "lvs", "--noheadings", "-o", "lv_name", vg)
	if err != nil || strings.Contains(string(out), "cairn-") {
		t.Errorf("after Release: lvs %q, %v", out, err)
	}
}
