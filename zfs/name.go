package zfs

import (
	"fmt"
	"strings"
)

// MaxNameLen is the longest full dataset or snapshot name accepted, as in
// OpenZFS (ZFS_MAX_DATASET_NAME_LEN is 256 including the terminating NUL).
const MaxNameLen = 255

// maxComponentLen bounds one path component. OpenZFS allows longer ones as
// long as the whole name fits; Cairn keeps components short enough that an
// agent dataset plus a snapshot name always fits.
const maxComponentLen = 64

// ValidComponent reports whether s can be one component of a dataset name,
// a snapshot name, an image name or a hold tag: 1 to 64 characters from
// [A-Za-z0-9_.:-], not starting with '-' or '.'. This is stricter than
// OpenZFS (no spaces) so that a component is always safe as a file name and
// a command-line argument, and can never be "." or "..".
func ValidComponent(s string) error {
	if s == "" {
		return &NameError{Name: s, Reason: "empty"}
	}
	if len(s) > maxComponentLen {
		return &NameError{Name: s, Reason: fmt.Sprintf("longer than %d characters", maxComponentLen)}
	}
	if s[0] == '-' || s[0] == '.' {
		return &NameError{Name: s, Reason: "starts with '-' or '.'"}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_', c == '.', c == ':', c == '-':
		default:
			return &NameError{Name: s, Reason: fmt.Sprintf("character %q not allowed", c)}
		}
	}
	return nil
}

// DatasetName is the full name of a dataset, "pool/a/b". The zero value is
// not a valid name; values are only made by ParseDatasetName and Child, so a
// DatasetName held by a caller has always been validated.
type DatasetName struct {
	s string
}

// ParseDatasetName validates s as a full dataset name: components separated
// by single slashes, each passing ValidComponent.
func ParseDatasetName(s string) (DatasetName, error) {
	if len(s) > MaxNameLen {
		return DatasetName{}, &NameError{Name: s, Reason: "too long"}
	}
	if s == "" {
		return DatasetName{}, &NameError{Name: s, Reason: "empty"}
	}
	for _, c := range strings.Split(s, "/") {
		if err := ValidComponent(c); err != nil {
			return DatasetName{}, &NameError{Name: s, Reason: "component " + err.(*NameError).Reason}
		}
	}
	return DatasetName{s: s}, nil
}

// MustDatasetName is ParseDatasetName for constants in tests and examples;
// it panics on an invalid name.
func MustDatasetName(s string) DatasetName {
	d, err := ParseDatasetName(s)
	if err != nil {
		panic(err)
	}
	return d
}

// String returns the full name.
func (d DatasetName) String() string { return d.s }

// IsZero reports whether d is the zero value (no name).
func (d DatasetName) IsZero() bool { return d.s == "" }

// Child returns d/component after validating component as one safe name
// component: it can never contain a slash or be "..", so a child never
// escapes d.
func (d DatasetName) Child(component string) (DatasetName, error) {
	if d.IsZero() {
		return DatasetName{}, &NameError{Name: component, Reason: "child of an empty dataset name"}
	}
	if err := ValidComponent(component); err != nil {
		return DatasetName{}, err
	}
	s := d.s + "/" + component
	if len(s) > MaxNameLen {
		return DatasetName{}, &NameError{Name: s, Reason: "too long"}
	}
	return DatasetName{s: s}, nil
}

// Parent returns the dataset that contains d, and false for a pool's top
// dataset.
func (d DatasetName) Parent() (DatasetName, bool) {
	i := strings.LastIndexByte(d.s, '/')
	if i < 0 {
		return DatasetName{}, false
	}
	return DatasetName{s: d.s[:i]}, true
}

// Base returns the last component of d.
func (d DatasetName) Base() string {
	return d.s[strings.LastIndexByte(d.s, '/')+1:]
}

// Components returns the components of d, pool first.
func (d DatasetName) Components() []string { return strings.Split(d.s, "/") }

// Within reports whether d is root or a descendant of root.
func (d DatasetName) Within(root DatasetName) bool {
	return d.s == root.s || strings.HasPrefix(d.s, root.s+"/")
}

// Snapshot returns the name of snapshot snap of d.
func (d DatasetName) Snapshot(snap string) (SnapshotName, error) {
	if d.IsZero() {
		return SnapshotName{}, &NameError{Name: snap, Reason: "snapshot of an empty dataset name"}
	}
	if err := ValidComponent(snap); err != nil {
		return SnapshotName{}, err
	}
	if len(d.s)+1+len(snap) > MaxNameLen {
		return SnapshotName{}, &NameError{Name: d.s + "@" + snap, Reason: "too long"}
	}
	return SnapshotName{ds: d, snap: snap}, nil
}

// AgentsComponent is the child of a pool's root that holds one dataset per agent.
const AgentsComponent = "agents"

// AgentDataset returns root/agents/<agentID>. The agent id must be a single
// safe component, so it can never name anything outside root/agents.
func AgentDataset(root DatasetName, agentID string) (DatasetName, error) {
	agents, err := root.Child(AgentsComponent)
	if err != nil {
		return DatasetName{}, err
	}
	ds, err := agents.Child(agentID)
	if err != nil {
		return DatasetName{}, fmt.Errorf("agent id: %w", err)
	}
	return ds, nil
}

// SnapshotName is "dataset@snap", made by DatasetName.Snapshot or
// ParseSnapshotName.
type SnapshotName struct {
	ds   DatasetName
	snap string
}

// ParseSnapshotName validates s as "dataset@snap".
func ParseSnapshotName(s string) (SnapshotName, error) {
	ds, snap, ok := strings.Cut(s, "@")
	if !ok {
		return SnapshotName{}, &NameError{Name: s, Reason: "no '@'"}
	}
	d, err := ParseDatasetName(ds)
	if err != nil {
		return SnapshotName{}, err
	}
	return d.Snapshot(snap)
}

// Dataset returns the dataset the snapshot belongs to.
func (s SnapshotName) Dataset() DatasetName { return s.ds }

// Snap returns the part after '@'.
func (s SnapshotName) Snap() string { return s.snap }

// String returns "dataset@snap".
func (s SnapshotName) String() string { return s.ds.s + "@" + s.snap }

// IsZero reports whether s is the zero value.
func (s SnapshotName) IsZero() bool { return s.ds.IsZero() }
