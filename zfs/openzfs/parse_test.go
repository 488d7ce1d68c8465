package openzfs

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Real output shapes of OpenZFS 2.1 (from the VM).
const (
	listDatasets = "tp/cairn\t73728\ntp/cairn/agents\t49152\ntp/cairn/agents/a\t24576\n"
	listSnaps    = "tp/cairn/agents/a@zeta\t12\t1795309477\ntp/cairn/agents/a@alpha\t14\t1795309478\n"
	holdsOut     = "tp/cairn/agents/a@s1\tofficial\tSun Nov 22 01:04 2026\ntp/cairn/agents/a@s1\tcairn-restore\tSun Nov 22 01:05 2026\n"
	getSpace     = "used\t4273152\navailable\t364636672\n"
	token        = "1-d95061416-f8-789c636064000310a500c4ec50360710e72765a52697303030419460caa7a515a796806478e0f26c48f2499525a9c540ba43880fabfe92fcf4d2cc140686d91f7fef2edafeabd800499e132c9f97989b0aa40bf49313338bf2f413d353f34a8af5131d8a0d41e64940cd81b93f35372935253f1b6c0f379278727e6e41516a7131500a0e00d9482275"
	tokenDryRun  = "resume token contents:\nnvlist version: 0\n\tobject = 0x2\n\toffset = 0xc0000\n\tbytes = 0xe1288\n\ttoguid = 0x73fab772bbfbf19b\n\ttoname = tp/cairn/agents/a@s1\n\tembedok = 1\n\tcompressok = 1\nfull\ttp/cairn/agents/a@s1\t3293416\nsize\t3293416\n"
)

func TestParseTable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		cols int
		want [][]string
		err  bool
	}{
		{"", 2, nil, false},
		{"\n", 2, nil, false},
		{"a\tb\n", 2, [][]string{{"a", "b"}}, false},
		{"a\tb", 2, [][]string{{"a", "b"}}, false},
		{"a\t-\nc\t\n", 2, [][]string{{"a", "-"}, {"c", ""}}, false},
		{"a\tb\tc\n", 2, nil, true},
		{"a\n", 2, nil, true},
	} {
		got, err := parseTable([]byte(tc.in), tc.cols)
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseTable(%q, %d) = %q, %v", tc.in, tc.cols, got, err)
		}
	}
}

func TestParseDatasetList(t *testing.T) {
	got, err := parseDatasetList([]byte(listDatasets))
	want := []datasetRow{{"tp/cairn", 73728}, {"tp/cairn/agents", 49152}, {"tp/cairn/agents/a", 24576}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"tp\tlots\n", "\t1\n", "tp\t-1\n", "tp\t99999999999999999999\n"} {
		if _, err := parseDatasetList([]byte(bad)); err == nil {
			t.Errorf("parseDatasetList(%q) accepted", bad)
		}
	}
	if got, err := parseDatasetList([]byte("tp\t-\n")); err != nil || got[0].used != 0 {
		t.Errorf("'-' used: %v %v", got, err)
	}
}

func TestParseSnapshotList(t *testing.T) {
	// Out of txg order on purpose: the parser orders by createtxg.
	in := "tp/a@late\t30\t1795309480\n" + listSnaps
	got, err := parseSnapshotList([]byte(in))
	want := []snapshotRow{
		{"tp/cairn/agents/a@zeta", 12, 1795309477},
		{"tp/cairn/agents/a@alpha", 14, 1795309478},
		{"tp/a@late", 30, 1795309480},
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, %v", got, err)
	}
	if got, err := parseSnapshotList(nil); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	for _, bad := range []string{"a@b\tx\t1\n", "a@b\t1\tx\n", "a@b\t1\n", "\t1\t1\n"} {
		if _, err := parseSnapshotList([]byte(bad)); err == nil {
			t.Errorf("parseSnapshotList(%q) accepted", bad)
		}
	}
}

func TestParseHolds(t *testing.T) {
	got, err := parseHolds([]byte(holdsOut), "tp/cairn/agents/a@s1")
	if err != nil || fmt.Sprint(got) != "[cairn-restore official]" {
		t.Fatalf("got %v, %v", got, err)
	}
	if got, err := parseHolds(nil, "x@y"); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("no holds: %#v %v", got, err)
	}
	if _, err := parseHolds([]byte(holdsOut), "tp/other@s1"); err == nil {
		t.Fatal("holds of another snapshot accepted")
	}
}

func TestParseUserrefs(t *testing.T) {
	got, err := parseUserrefs([]byte("tp/a@s1\t0\ntp/a/b@s2\t2\n"))
	if err != nil || !reflect.DeepEqual(got, []userrefsRow{{"tp/a@s1", 0}, {"tp/a/b@s2", 2}}) {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestParseSpace(t *testing.T) {
	sp, err := parseSpace([]byte(getSpace))
	if err != nil || sp.Used != 4273152 || sp.Available != 364636672 {
		t.Fatalf("got %+v, %v", sp, err)
	}
	for _, bad := range []string{"", "used\t1\n", "used\t1\nused\t2\navailable\t3\n", "used\tx\navailable\t1\n"} {
		if _, err := parseSpace([]byte(bad)); err == nil {
			t.Errorf("parseSpace(%q) accepted", bad)
		}
	}
}

func TestParseResumeToken(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{"-", "", false},
		{"", "", false},
		{token, token, false},
		{token + "\n", token, false},
		{"1-zzz", "", true},
		{"-1-a-b-c", "", true},
		{"1-a-b", "", true},
		{"1-a-b-c d", "", true},
		{"1-A-b-c", "", true},
		{"x-a-b-c", "", true},
		{"1--b-c", "", true},
		{"1-a-b-c; rm -rf /", "", true},
	} {
		got, err := parseResumeToken(tc.in)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("parseResumeToken(%q) = %q, %v", clip(tc.in), got, err)
		}
	}
}

func TestParseTokenContents(t *testing.T) {
	kv := parseTokenContents(tokenDryRun)
	if kv["toname"] != "tp/cairn/agents/a@s1" || kv["object"] != "0x2" || len(kv) != 7 {
		t.Fatalf("got %v", kv)
	}
	// Tab-indented lines outside the nvlist are not token contents.
	if kv := parseTokenContents("\ttoname = evil@x\n"); len(kv) != 0 {
		t.Fatalf("got %v", kv)
	}
	// The first toname wins.
	if kv := parseTokenContents("nvlist version: 0\n\ttoname = a@b\n\ttoname = c@d\n"); kv["toname"] != "a@b" {
		t.Fatalf("got %v", kv)
	}
}

func TestPropertyArgsSorted(t *testing.T) {
	props := map[string]string{"readonly": "on", "compression": "lz4", "atime": "off", "cairn:agent": "a-1"}
	want := []string{"-o", "atime=off", "-o", "cairn:agent=a-1", "-o", "compression=lz4", "-o", "readonly=on"}
	for i := 0; i < 20; i++ { // map order varies between iterations
		if got := propertyArgs(props); !reflect.DeepEqual(got, want) {
			t.Fatalf("propertyArgs = %q", got)
		}
	}
	if got := propertyArgs(nil); len(got) != 0 {
		t.Fatalf("no properties: %q", got)
	}
}

// Fuzz tests: the parsers never panic, and what they accept is consistent.

func FuzzParseList(f *testing.F) {
	for _, s := range []string{"", "\n", "\t", "-\t-\t-\n", listDatasets, listSnaps, "a@b\t1\t2", "a\t1\n\n", "a\t18446744073709551615\t9223372036854775808\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		if rows, err := parseDatasetList(out); err == nil {
			for _, r := range rows {
				if r.name == "" || r.used < 0 || strings.ContainsAny(r.name, "\t\n") {
					t.Fatalf("bad row %+v", r)
				}
			}
		}
		if rows, err := parseSnapshotList(out); err == nil {
			for i := 1; i < len(rows); i++ {
				if rows[i].txg < rows[i-1].txg {
					t.Fatalf("not in txg order: %+v", rows)
				}
			}
		}
		parseUserrefs(out)
		for cols := 1; cols < 4; cols++ {
			if rows, err := parseTable(out, cols); err == nil {
				for _, r := range rows {
					if len(r) != cols {
						t.Fatalf("row %q has %d fields, want %d", r, len(r), cols)
					}
				}
			}
		}
	})
}

func FuzzParseHolds(f *testing.F) {
	for _, s := range []string{"", holdsOut, "x@y\t\t\n", "tp/cairn/agents/a@s1\tt\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		tags, err := parseHolds(out, "tp/cairn/agents/a@s1")
		if err != nil {
			return
		}
		for i, tag := range tags {
			if tag == "" || i > 0 && tags[i-1] > tag {
				t.Fatalf("tags %q", tags)
			}
		}
	})
}

func FuzzParseProps(f *testing.F) {
	for _, s := range []string{"", getSpace, "receive_resume_token\t-\n", "used\t-\navailable\t-\n", "a\tb\na\tc\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		if props, err := parseProps(out); err == nil {
			for k := range props {
				if k == "" {
					t.Fatal("empty property name accepted")
				}
			}
		}
		if sp, err := parseSpace(out); err == nil && (sp.Used < 0 || sp.Available < 0) {
			t.Fatalf("negative space %+v", sp)
		}
	})
}

func FuzzParseResumeToken(f *testing.F) {
	for _, s := range []string{"", "-", token, "1-a-b-c", "-o-x-y", "1-a-b-c\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := parseResumeToken(s)
		if err != nil || tok == "" {
			return
		}
		// An accepted token can never be taken for an option or split
		// into more arguments.
		if tok[0] == '-' || strings.ContainsAny(tok, " \t\n\x00") {
			t.Fatalf("accepted %q", tok)
		}
	})
}

func FuzzParseTokenContents(f *testing.F) {
	for _, s := range []string{"", tokenDryRun, "nvlist version: 0\n\t = x\n", "nvlist version: 0\n\ttoname = \n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for k := range parseTokenContents(s) {
			if k == "" {
				t.Fatal("empty key")
			}
		}
	})
}
