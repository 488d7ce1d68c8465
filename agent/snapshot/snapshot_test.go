package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestImageReadsFileAsIs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	data := bytes.Repeat([]byte("cairn"), 100001)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Image{}.Snapshot(context.Background(), path, "job-1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Size() != int64(len(data)) || s.Device() != path || s.PointInTime() {
		t.Errorf("snapshot: size %d, device %s, point in time %v", s.Size(), s.Device(), s.PointInTime())
	}
	b := make([]byte, 7)
	if _, err := s.ReadAt(b, 5*1000+2); err != nil || string(b) != "irncair" {
		t.Errorf("ReadAt = %q, %v", b, err)
	}
	if err := s.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadAt(b, 0); err == nil {
		t.Error("read after Release")
	}
	if n, err := Size(path); n != int64(len(data)) || err != nil {
		t.Errorf("Size = %d, %v", n, err)
	}
	if _, err := (Image{}).Snapshot(context.Background(), filepath.Join(t.TempDir(), "missing"), "j"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing image: %v", err)
	}
	if _, err := (Image{}).Snapshot(context.Background(), t.TempDir(), "j"); err == nil {
		t.Error("a directory as an image")
	}
}

func TestParseLVsGolden(t *testing.T) {
	in, err := os.ReadFile("testdata/lvs.txt")
	if err != nil {
		t.Fatal(err)
	}
	lvs, err := ParseLVs(in)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.MarshalIndent(lvs, "", "  ")
	got = append(got, '\n')
	if *update {
		os.WriteFile("testdata/lvs.golden", got, 0o644)
	}
	want, _ := os.ReadFile("testdata/lvs.golden")
	if !bytes.Equal(got, want) {
		t.Errorf("ParseLVs:\n%s\nwant (testdata/lvs.golden, -update to rewrite):\n%s", got, want)
	}
}

func TestParseLVsRefuses(t *testing.T) {
	for _, in := range []string{
		"LVM2_VG_NAME='vg0' LVM2_LV_NAME='root'",
		"LVM2_VG_NAME='vg0' LVM2_LV_NAME='root' LVM2_LV_SIZE='x' LVM2_LV_ATTR='-wi-ao----' LVM2_LV_PATH=''",
		"LVM2_VG_NAME='vg0' LVM2_LV_NAME='r/../x' LVM2_LV_SIZE='1' LVM2_LV_ATTR='-wi-ao----' LVM2_LV_PATH=''",
		"LVM2_VG_NAME='vg0 LVM2_LV_NAME=",
		"  Volume group \"sda1\" not found",
	} {
		if lvs, err := ParseLVs([]byte(in)); err == nil {
			t.Errorf("ParseLVs(%q) = %+v", in, lvs)
		}
	}
}

func FuzzParseLVs(f *testing.F) {
	in, _ := os.ReadFile("testdata/lvs.txt")
	f.Add(in)
	f.Add([]byte("LVM2_VG_NAME='a'"))
	f.Fuzz(func(t *testing.T, b []byte) {
		lvs, err := ParseLVs(b)
		if err != nil {
			return
		}
		for _, lv := range lvs {
			if !validName(lv.VG) || !validName(lv.Name) || strings.Contains(lv.VG+lv.Name, "/") || lv.Size < 0 {
				t.Fatalf("accepted %+v", lv)
			}
		}
	})
}

// fakeLVM records the commands it is asked to run and answers lvs.
type fakeLVM struct {
	cmds    []string
	lvs     string
	failOn  string
	devDir  string
	created string
	// leftover: a snapshot of the job's name exists already.
	leftover bool
}

func (f *fakeLVM) run(_ context.Context, name string, args ...string) ([]byte, error) {
	cmd := strings.Join(append([]string{name}, args...), " ")
	f.cmds = append(f.cmds, cmd)
	if f.failOn != "" && name == f.failOn {
		return nil, &CommandError{Cmd: cmd, Stderr: "  Failed to find logical volume", Err: errors.New("exit status 5")}
	}
	switch name {
	case "lvs":
		if strings.Contains(cmd, "/cairn-") && !f.leftover {
			return nil, &CommandError{Cmd: cmd, Stderr: "  Failed to find logical volume", Err: errors.New("exit status 5")}
		}
		return []byte(f.lvs), nil
	case "lvcreate":
		// A snapshot device appears, as the device mapper's name only.
		dev := filepath.Join(f.devDir, "mapper", "data--vg-cairn--job_42--db.v2+x")
		os.MkdirAll(filepath.Dir(dev), 0o755)
		f.created = dev
		return nil, os.WriteFile(dev, make([]byte, 8192), 0o600)
	}
	return nil, nil
}

func TestLVMCommands(t *testing.T) {
	const (
		lookup  = "lvs --noheadings --nameprefixes --units b --nosuffix -o vg_name,lv_name,lv_size,lv_attr,lv_path -- /dev/mapper/data--vg-db.v2+x"
		exists  = "lvs --noheadings --nameprefixes --units b --nosuffix -o vg_name,lv_name,lv_size,lv_attr,lv_path -- data-vg/cairn-job_42-db.v2+x"
		create  = "lvcreate --snapshot --name cairn-job_42-db.v2+x --size 859832320b --yes data-vg/db.v2+x"
		release = "lvremove --force --yes data-vg/cairn-job_42-db.v2+x"
	)
	for _, leftover := range []bool{false, true} {
		f := &fakeLVM{devDir: t.TempDir(), leftover: leftover,
			lvs: "  LVM2_VG_NAME='data-vg' LVM2_LV_NAME='db.v2+x' LVM2_LV_SIZE='4294967296' LVM2_LV_ATTR='owi-aos---' LVM2_LV_PATH='/dev/data-vg/db.v2+x'\n"}
		l := &LVM{Run: f.run, DevDir: f.devDir}
		s, err := l.Snapshot(context.Background(), "/dev/mapper/data--vg-db.v2+x", "job/42")
		if err != nil {
			t.Fatal(err)
		}
		if s.Size() != 8192 || s.Device() != f.created || !s.PointInTime() {
			t.Errorf("snapshot: size %d, device %s, point in time %v", s.Size(), s.Device(), s.PointInTime())
		}
		if err := s.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
		want := []string{lookup, exists, create, release}
		if leftover { // the snapshot a dead agent left is removed first
			want = []string{lookup, exists, release, create, release}
		}
		if strings.Join(f.cmds, "\n") != strings.Join(want, "\n") {
			t.Errorf("leftover %v: commands:\n%s\nwant:\n%s", leftover, strings.Join(f.cmds, "\n"), strings.Join(want, "\n"))
		}
	}
}

func TestLVMRefuses(t *testing.T) {
	f := &fakeLVM{devDir: t.TempDir(), failOn: "lvs"}
	l := &LVM{Run: f.run, DevDir: f.devDir}
	_, err := l.Snapshot(context.Background(), "/dev/sda1", "j")
	if !errors.Is(err, ErrNotLV) || !strings.Contains(err.Error(), "Failed to find logical volume") {
		t.Errorf("snapshot of a plain device: %v, want ErrNotLV with lvs's words", err)
	}
	f = &fakeLVM{devDir: t.TempDir(),
		lvs: "LVM2_VG_NAME='vg' LVM2_LV_NAME='snap' LVM2_LV_SIZE='1' LVM2_LV_ATTR='swi-a-s---' LVM2_LV_PATH=''\n"}
	l = &LVM{Run: f.run, DevDir: f.devDir}
	if _, err := l.Snapshot(context.Background(), "/dev/vg/snap", "j"); err == nil || len(f.cmds) != 1 {
		t.Errorf("snapshot of a snapshot: %v, commands %q", err, f.cmds)
	}
	// lvcreate fails: nothing to remove, the error says why.
	f = &fakeLVM{devDir: t.TempDir(), failOn: "lvcreate",
		lvs: "LVM2_VG_NAME='vg' LVM2_LV_NAME='root' LVM2_LV_SIZE='1048576' LVM2_LV_ATTR='-wi-ao----' LVM2_LV_PATH=''\n"}
	l = &LVM{Run: f.run, DevDir: f.devDir}
	if _, err := l.Snapshot(context.Background(), "/dev/vg/root", "j"); err == nil || !strings.Contains(err.Error(), "lvcreate") || len(f.cmds) != 3 {
		t.Errorf("failed lvcreate: %v, commands %q", err, f.cmds)
	}
}

func TestExecBoundsOutput(t *testing.T) {
	if _, err := Exec(context.Background(), "sh", "-c", "head -c 100000 /dev/zero >&2; exit 3"); err == nil {
		t.Fatal("a failing command succeeded")
	} else {
		var ce *CommandError
		if !errors.As(err, &ce) || len(ce.Stderr) > maxStderr+len("…") {
			t.Errorf("error %T with %d bytes of stderr", err, len(ce.Stderr))
		}
	}
	if _, err := Exec(context.Background(), "sh", "-c", "head -c 100000 /dev/zero"); err == nil {
		t.Error("100000 bytes of output accepted")
	}
	out, err := Exec(context.Background(), "sh", "-c", "echo $LC_ALL")
	if err != nil || string(out) != "C\n" {
		t.Errorf("Exec = %q, %v", out, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Exec(ctx, "sleep", "10"); err == nil {
		t.Error("a canceled command succeeded")
	}
}
