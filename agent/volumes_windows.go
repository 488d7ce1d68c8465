package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf16"

	"golang.org/x/sys/windows"

	"github.com/cairnbackup/cairn/agent/snapshot"
	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// maxVolumes bounds the enumeration.
const maxVolumes = 1024

// listVolumes lists the fixed volumes with a file system: the id is the
// volume GUID path (\\?\Volume{GUID}\), which VSS snapshots; the size is
// the volume device's; the mount points are its drive letters and folders.
func listVolumes(context.Context) ([]*agentv1.Volume, error) {
	buf := make([]uint16, windows.MAX_PATH+1)
	h, err := windows.FindFirstVolume(&buf[0], uint32(len(buf)))
	if err != nil {
		return nil, fmt.Errorf("FindFirstVolume: %w", err)
	}
	defer windows.FindVolumeClose(h)
	var out []*agentv1.Volume
	for range maxVolumes {
		name := windows.UTF16ToString(buf)
		if v := volume(name); v != nil {
			out = append(out, v)
		}
		if err := windows.FindNextVolume(h, &buf[0], uint32(len(buf))); err != nil {
			if errors.Is(err, windows.ERROR_NO_MORE_FILES) {
				break
			}
			return nil, fmt.Errorf("FindNextVolume: %w", err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out, nil
}

// volume describes one volume, or is nil for one that is not a fixed
// volume with a file system.
func volume(name string) *agentv1.Volume {
	p, err := windows.UTF16PtrFromString(name)
	if err != nil || windows.GetDriveType(p) != windows.DRIVE_FIXED {
		return nil
	}
	fs := make([]uint16, windows.MAX_PATH+1)
	if windows.GetVolumeInformation(p, nil, 0, nil, nil, nil, &fs[0], uint32(len(fs))) != nil {
		return nil // not mounted, or no file system
	}
	v := &agentv1.Volume{Id: name, Path: strings.TrimSuffix(name, `\`), Filesystem: windows.UTF16ToString(fs)}
	// The volume device's size, which a backup reads (its shadow copy has
	// the same); the file system's if the device cannot be opened.
	if size, err := snapshot.Size(v.Path); err == nil {
		v.SizeBytes = uint64(size)
	} else {
		var free, total, totalFree uint64
		if windows.GetDiskFreeSpaceEx(p, &free, &total, &totalFree) == nil {
			v.SizeBytes = total
		}
	}
	paths := make([]uint16, 4096)
	var n uint32
	if windows.GetVolumePathNamesForVolumeName(p, &paths[0], uint32(len(paths)), &n) == nil {
		// A list of NUL-terminated strings, ended by an empty one.
		for rest := paths[:min(int(n), len(paths))]; len(rest) > 0 && rest[0] != 0; {
			m := windows.UTF16ToString(rest)
			v.MountPoints = append(v.MountPoints, m)
			rest = rest[min(len(rest), len(utf16.Encode([]rune(m)))+1):]
		}
	}
	return v
}
