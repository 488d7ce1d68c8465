package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LV is a logical volume as lvs reports it.
type LV struct {
	VG, Name string
	Size     int64
	Attr     string
	Path     string
}

// ErrNotLV is returned by LVM.Lookup for a device that is not a logical
// volume (or when LVM cannot tell).
var ErrNotLV = errors.New("not an LVM logical volume")

// LVM makes copy-on-write snapshots of logical volumes with lvcreate, reads
// them at /dev/<vg>/<snapshot>, and removes them with lvremove.
type LVM struct {
	// Run runs lvs, lvcreate and lvremove; nil means Exec.
	Run Runner
	// CowPercent is the snapshot's copy-on-write space in percent of the
	// origin's size (at least 64 MiB); 0 means 20. A snapshot whose space
	// runs out while it is read becomes invalid and the backup fails.
	CowPercent int
	// DevDir is where device nodes are; "" means /dev.
	DevDir string
}

var _ Provider = (*LVM)(nil)

// Name is "lvm".
func (*LVM) Name() string { return "lvm" }

func (l *LVM) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	if l.Run != nil {
		return l.Run(ctx, name, args...)
	}
	return Exec(ctx, name, args...)
}

// lvsFields are the fields Lookup asks lvs for, in ParseLVs's names.
const lvsFields = "vg_name,lv_name,lv_size,lv_attr,lv_path"

// Lookup asks lvs about device. A device lvs does not know is ErrNotLV,
// wrapped with lvs's words.
func (l *LVM) Lookup(ctx context.Context, device string) (LV, error) {
	out, err := l.run(ctx, "lvs", "--noheadings", "--nameprefixes", "--units", "b", "--nosuffix",
		"-o", lvsFields, "--", device)
	if err != nil {
		return LV{}, fmt.Errorf("%s: %w (%v)", device, ErrNotLV, err)
	}
	lvs, err := ParseLVs(out)
	if err != nil {
		return LV{}, fmt.Errorf("lvs %s: %w", device, err)
	}
	if len(lvs) != 1 {
		return LV{}, fmt.Errorf("%s: %w (lvs lists %d volumes)", device, ErrNotLV, len(lvs))
	}
	return lvs[0], nil
}

// allFields has the bit of each field of lvsFields.
var allFields = func() int {
	bits := 0
	for _, f := range strings.Split(lvsFields, ",") {
		bits |= 1 << strings.Index(lvsFields, f)
	}
	return bits
}()

// ParseLVs parses the output of lvs --noheadings --nameprefixes with the
// fields vg_name, lv_name, lv_size (--units b --nosuffix), lv_attr and
// lv_path: one line per volume of KEY='value' pairs.
func ParseLVs(out []byte) ([]LV, error) {
	var lvs []LV
	for n, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var lv LV
		seen := 0 // a bit per field: 1 << its offset in lvsFields
		for rest := line; rest != ""; {
			key, after, ok := strings.Cut(rest, "='")
			if !ok {
				return nil, fmt.Errorf("line %d: want KEY='value', got %q", n+1, rest)
			}
			value, after, ok := strings.Cut(after, "'")
			if !ok {
				return nil, fmt.Errorf("line %d: unterminated value of %s", n+1, key)
			}
			rest = strings.TrimLeft(after, " \t")
			at := strings.Index(lvsFields, strings.ToLower(strings.TrimPrefix(key, "LVM2_")))
			if at < 0 {
				continue // a field of a newer lvs
			}
			bit := 1 << at
			if seen&bit != 0 {
				return nil, fmt.Errorf("line %d: %s twice", n+1, key)
			}
			switch key {
			case "LVM2_VG_NAME":
				lv.VG = value
			case "LVM2_LV_NAME":
				lv.Name = value
			case "LVM2_LV_SIZE":
				size, err := strconv.ParseInt(value, 10, 64)
				if err != nil || size < 0 {
					return nil, fmt.Errorf("line %d: size %q", n+1, value)
				}
				lv.Size = size
			case "LVM2_LV_ATTR":
				lv.Attr = value
			case "LVM2_LV_PATH":
				lv.Path = value
			default:
				return nil, fmt.Errorf("line %d: unexpected field %s", n+1, key)
			}
			seen |= bit
		}
		if seen != allFields || !validName(lv.VG) || !validName(lv.Name) {
			return nil, fmt.Errorf("line %d: incomplete or invalid: %q", n+1, line)
		}
		lvs = append(lvs, lv)
	}
	return lvs, nil
}

// validName: LVM names are made of letters, digits and "+_.-", and do not
// start with "-".
func validName(s string) bool {
	if s == "" || len(s) > 127 || s[0] == '-' || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		if !nameChar(c) {
			return false
		}
	}
	return true
}

func nameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("+_.-", c) >= 0
}

// SnapshotName is the name of the snapshot of lv for a job:
// cairn-<job>-<lv>, with characters LVM does not allow replaced by "_".
func SnapshotName(job, lv string) string {
	clean := func(s string, n int) string {
		b := []byte(s)
		for i, c := range b {
			if !nameChar(c) {
				b[i] = '_'
			}
		}
		return string(b[:min(len(b), n)])
	}
	return "cairn-" + clean(job, 40) + "-" + clean(lv, 64)
}

// cowSize is the copy-on-write space of a snapshot of size bytes.
func (l *LVM) cowSize(size int64) int64 {
	pct := int64(l.CowPercent)
	if pct <= 0 {
		pct = 20
	}
	const mib = 1 << 20
	cow := max(size/100*pct, 64*mib)
	return (cow + mib - 1) / mib * mib
}

// Snapshot makes a snapshot of the logical volume at device (a path lvs
// accepts: /dev/<vg>/<lv>, /dev/mapper/<vg>-<lv>).
func (l *LVM) Snapshot(ctx context.Context, device, job string) (Snap, error) {
	lv, err := l.Lookup(ctx, device)
	if err != nil {
		return nil, err
	}
	if len(lv.Attr) > 0 && strings.IndexByte("sS", lv.Attr[0]) >= 0 {
		return nil, fmt.Errorf("%s is itself a snapshot", device)
	}
	name := SnapshotName(job, lv.Name)
	remove := func(ctx context.Context) error {
		if _, err := l.run(ctx, "lvremove", "--force", "--yes", lv.VG+"/"+name); err != nil {
			return fmt.Errorf("remove snapshot %s/%s: %w", lv.VG, name, err)
		}
		return nil
	}
	// A snapshot of this name is left by an agent that died while reading
	// it (only one backup runs at a time): remove it.
	if _, err := l.Lookup(ctx, lv.VG+"/"+name); err == nil {
		if err := remove(ctx); err != nil {
			return nil, err
		}
	}
	if _, err := l.run(ctx, "lvcreate", "--snapshot", "--name", name, "--size", strconv.FormatInt(l.cowSize(lv.Size), 10)+"b",
		"--yes", lv.VG+"/"+lv.Name); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", device, err)
	}
	dev := l.devicePath(lv.VG, name)
	s, err := openFile(dev, true, remove)
	if err != nil {
		return nil, errors.Join(err, remove(context.WithoutCancel(ctx)))
	}
	return s, nil
}

// devicePath is /dev/<vg>/<lv>, or the device mapper's name where udev did
// not make that link (containers).
func (l *LVM) devicePath(vg, lv string) string {
	dev := l.DevDir
	if dev == "" {
		dev = "/dev"
	}
	p := filepath.Join(dev, vg, lv)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	dm := strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
	return filepath.Join(dev, "mapper", dm)
}
