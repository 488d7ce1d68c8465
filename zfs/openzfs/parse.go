package openzfs

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Parsers of zfs command output. They never panic: any input is either
// parsed or refused with an error (see the fuzz tests).

// parseTable splits the output of a zfs command run with -H into rows of
// exactly cols tab-separated fields. Empty output is no rows.
func parseTable(out []byte, cols int) ([][]string, error) {
	s := strings.TrimSuffix(string(out), "\n")
	if s == "" {
		return nil, nil
	}
	lines := strings.Split(s, "\n")
	rows := make([][]string, 0, len(lines))
	for i, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) != cols {
			return nil, fmt.Errorf("line %d: %d fields, want %d: %q", i+1, len(f), cols, clip(l))
		}
		rows = append(rows, f)
	}
	return rows, nil
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// parseUint parses a numeric property printed with -p; "-" (no value) is 0.
func parseUint(s string) (uint64, error) {
	if s == "-" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// parseInt64 is parseUint for values that must fit an int64.
func parseInt64(s string) (int64, error) {
	v, err := parseUint(s)
	if err != nil {
		return 0, err
	}
	if v > 1<<63-1 {
		return 0, fmt.Errorf("%s out of range", s)
	}
	return int64(v), nil
}

// datasetRow is one line of zfs list -H -p -o name,used.
type datasetRow struct {
	name string
	used int64
}

// parseDatasetList parses zfs list -H -p -o name,used.
func parseDatasetList(out []byte) ([]datasetRow, error) {
	rows, err := parseTable(out, 2)
	if err != nil {
		return nil, err
	}
	res := make([]datasetRow, 0, len(rows))
	for _, r := range rows {
		if r[0] == "" {
			return nil, errors.New("empty name")
		}
		used, err := parseInt64(r[1])
		if err != nil {
			return nil, fmt.Errorf("%s: used: %w", r[0], err)
		}
		res = append(res, datasetRow{name: r[0], used: used})
	}
	return res, nil
}

// snapshotRow is one line of zfs list -H -p -o name,createtxg,creation for
// snapshots or bookmarks.
type snapshotRow struct {
	name    string // full name: ds@snap or ds#bookmark
	txg     uint64
	created int64 // unix seconds
}

// parseSnapshotList parses zfs list -H -p -o name,createtxg,creation and
// returns the rows ordered by createtxg (creation order; zfs list -s
// createtxg already does, this makes it independent of the flags).
func parseSnapshotList(out []byte) ([]snapshotRow, error) {
	rows, err := parseTable(out, 3)
	if err != nil {
		return nil, err
	}
	res := make([]snapshotRow, 0, len(rows))
	for _, r := range rows {
		if r[0] == "" {
			return nil, errors.New("empty name")
		}
		txg, err := parseUint(r[1])
		if err != nil {
			return nil, fmt.Errorf("%s: createtxg: %w", r[0], err)
		}
		created, err := parseInt64(r[2])
		if err != nil {
			return nil, fmt.Errorf("%s: creation: %w", r[0], err)
		}
		res = append(res, snapshotRow{name: r[0], txg: txg, created: created})
	}
	sort.SliceStable(res, func(i, j int) bool { return res[i].txg < res[j].txg })
	return res, nil
}

// userrefsRow is one line of zfs list -H -p -o name,userrefs.
type userrefsRow struct {
	name  string
	holds uint64
}

// parseUserrefs parses zfs list -H -p -o name,userrefs (the number of
// holds on each snapshot).
func parseUserrefs(out []byte) ([]userrefsRow, error) {
	rows, err := parseTable(out, 2)
	if err != nil {
		return nil, err
	}
	res := make([]userrefsRow, 0, len(rows))
	for _, r := range rows {
		n, err := parseUint(r[1])
		if err != nil {
			return nil, fmt.Errorf("%s: userrefs: %w", r[0], err)
		}
		res = append(res, userrefsRow{name: r[0], holds: n})
	}
	return res, nil
}

// parseHolds parses zfs holds -H: "snapshot<TAB>tag<TAB>timestamp" lines,
// and returns the tags held on snap, sorted.
func parseHolds(out []byte, snap string) ([]string, error) {
	rows, err := parseTable(out, 3)
	if err != nil {
		return nil, err
	}
	tags := []string{}
	for _, r := range rows {
		if r[0] != snap {
			return nil, fmt.Errorf("hold on %q, want %q", clip(r[0]), snap)
		}
		if r[1] == "" {
			return nil, errors.New("empty tag")
		}
		tags = append(tags, r[1])
	}
	sort.Strings(tags)
	return tags, nil
}

// parseProps parses zfs get -H -p -o property,value into a map. Values may
// be empty but not contain tabs; each property appears once.
func parseProps(out []byte) (map[string]string, error) {
	rows, err := parseTable(out, 2)
	if err != nil {
		return nil, err
	}
	props := make(map[string]string, len(rows))
	for _, r := range rows {
		if r[0] == "" {
			return nil, errors.New("empty property name")
		}
		if _, dup := props[r[0]]; dup {
			return nil, fmt.Errorf("property %q twice", clip(r[0]))
		}
		props[r[0]] = r[1]
	}
	return props, nil
}

// needProps returns the values of the named properties from parseProps'
// map, or an error naming one that is missing.
func needProps(props map[string]string, names ...string) ([]string, error) {
	vals := make([]string, len(names))
	for i, n := range names {
		v, ok := props[n]
		if !ok {
			return nil, fmt.Errorf("zfs get printed no %s", n)
		}
		vals[i] = v
	}
	return vals, nil
}

// parseResumeToken checks the value of receive_resume_token: "-" or "" is
// no token; otherwise it must look like a token made by OpenZFS,
// "<version>-<hex checksum>-<hex length>-<hex payload>". This keeps
// anything that could be read as an option or hold other arguments away
// from zfs send -t.
func parseResumeToken(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "-" {
		return "", nil
	}
	if len(s) > 1<<16 {
		return "", errors.New("resume token too long")
	}
	parts := strings.Split(s, "-")
	if len(parts) != 4 {
		return "", fmt.Errorf("resume token %q: want 4 fields separated by '-'", clip(s))
	}
	for i, p := range parts {
		if p == "" {
			return "", fmt.Errorf("resume token %q: empty field", clip(s))
		}
		for j := 0; j < len(p); j++ {
			c := p[j]
			ok := c >= '0' && c <= '9' || i > 0 && c >= 'a' && c <= 'f'
			if !ok {
				return "", fmt.Errorf("resume token %q: bad character %q", clip(s), c)
			}
		}
	}
	return s, nil
}

// parseTokenContents reads the "resume token contents" that zfs send -n -v
// -t prints: lines "\tkey = value" after "nvlist version: 0". It returns
// those pairs; other lines are ignored.
func parseTokenContents(out string) map[string]string {
	kv := make(map[string]string)
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "nvlist version:"):
			in = true
		case in && strings.HasPrefix(l, "\t"):
			k, v, ok := strings.Cut(strings.TrimPrefix(l, "\t"), " = ")
			if ok && k != "" {
				if _, dup := kv[k]; !dup {
					kv[k] = v
				}
			}
		default:
			in = false
		}
	}
	return kv
}

// propertyArgs returns "-o", "k=v" pairs for props, sorted by property
// name so that the command line is the same every time.
func propertyArgs(props map[string]string) []string {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]string, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, "-o", k+"="+props[k])
	}
	return args
}
