package vss

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"
)

// sampleWriters covers every state code and the odd values Parse keeps
// verbatim.
func sampleWriters() []Writer {
	names := []string{
		"System Writer", "SqlServerWriter", "Contoso 'Ledger' Writer (x64)",
		"Acme \"Quoted\" Writer", "'", "Ünïcødé Writer ✓", "bad \xff utf-8",
		"Writer name: 'nested'", "trailing space inside ",
	}
	var ws []Writer
	for code := range len(StateNames) {
		ws = append(ws, Writer{
			Name:       names[code%len(names)],
			ID:         fmt.Sprintf("{%08x-6f93-4464-A53E-1050253ae220}", code),
			InstanceID: fmt.Sprintf("{b849a411-a377-4f5a-8a35-6a49798bf%03x}", code),
			StateCode:  code,
			State:      StateText(code),
			LastError:  []string{LastErrorNone, LastErrorRetryable, LastErrorNonRetryable, LastErrorTimedOut, LastErrorNotResponding, "Error: not a tool error", "x]y [1] z"}[code%7],
		})
	}
	ws[3].State = "Text ] with [brackets]"
	return ws
}

// utf16LE encodes s as Windows PowerShell's ">" does: a byte order mark,
// then UTF-16LE.
func utf16LE(s string) []byte {
	b := []byte{0xff, 0xfe}
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return b
}

func TestFormatRoundTrip(t *testing.T) {
	long := strings.Repeat("x", maxValueBytes)
	for name, ws := range map[string][]Writer{
		"none":   {},
		"sample": sampleWriters(),
		"longest values": {{
			Name: long, ID: "{e8132975-6f93-4464-a53e-1050253ae220}", InstanceID: "{b849a411-a377-4f5a-8a35-6a49798bf36c}",
			StateCode: StateFailedAtBackupShutdown, State: long, LastError: long,
		}},
	} {
		text := Format(ws)
		for enc, in := range map[string]string{
			"LF":       text,
			"CRLF":     strings.ReplaceAll(text, "\n", "\r\n"),
			"UTF-8BOM": "\ufeff" + text,
		} {
			got, err := Parse(strings.NewReader(in))
			if err != nil || !reflect.DeepEqual(got, ws) {
				t.Errorf("%s, %s: Parse(Format(ws)) = %q, %v;\nwant %q", name, enc, got, err, ws)
			}
		}
		if !strings.HasPrefix(text, Banner+"\n") {
			t.Errorf("%s: Format does not start with the banner", name)
		}
	}
	// UTF-16 cannot carry invalid UTF-8: round-trip the valid writers.
	var valid []Writer
	for _, w := range sampleWriters() {
		if !strings.Contains(w.Name, "\xff") {
			valid = append(valid, w)
		}
	}
	got, err := Parse(strings.NewReader(string(utf16LE(strings.ReplaceAll(Format(valid), "\n", "\r\n")))))
	if err != nil || !reflect.DeepEqual(got, valid) {
		t.Errorf("UTF-16LE: Parse(Format(ws)) = %q, %v", got, err)
	}
}

func TestFormatDefaults(t *testing.T) {
	ws := []Writer{
		{Name: "A", ID: "{e8132975-6f93-4464-a53e-1050253ae220}", InstanceID: "{b849a411-a377-4f5a-8a35-6a49798bf36c}", StateCode: StateWaitingForThaw},
		{Name: "B", ID: "{e8132975-6f93-4464-a53e-1050253ae220}", InstanceID: "{b849a411-a377-4f5a-8a35-6a49798bf36c}", StateCode: StateFailedAtFreeze, LastError: LastErrorTimedOut},
	}
	got, err := Parse(strings.NewReader(Format(ws)))
	if err != nil {
		t.Fatal(err)
	}
	ws[0].State, ws[0].LastError = "Frozen", LastErrorNone
	ws[1].State = "Failed"
	if !reflect.DeepEqual(got, ws) {
		t.Errorf("got %q, want %q", got, ws)
	}
}

// TestFormatMatchesFixture checks Format's layout byte for byte against
// genuine output.
func TestFormatMatchesFixture(t *testing.T) {
	in, err := os.ReadFile("testdata/sql_failed_nonretryable.txt")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := Parse(strings.NewReader(string(in)))
	if err != nil {
		t.Fatal(err)
	}
	// The fixture ends with two extra blank lines; Format writes one
	// after each block.
	want := strings.TrimRight(string(in), "\r\n") + "\r\n\r\n"
	if got := strings.ReplaceAll(Format(ws), "\n", "\r\n"); got != want {
		t.Errorf("Format differs from vssadmin's layout:\n%s", got)
	}
}

func ExampleFormat() {
	fmt.Print(Format([]Writer{{
		Name:       "SqlServerWriter",
		ID:         "{a65faa63-5ea8-4ebc-9dbd-a0c4db26912a}",
		InstanceID: "{0e0bc896-afbe-49a6-adbb-8cb8ef65ed78}",
		StateCode:  StateFailedAtPrepareSnapshot,
		LastError:  LastErrorNonRetryable,
	}}))
	// Output:
	// vssadmin 1.1 - Volume Shadow Copy Service administrative command-line tool
	// (C) Copyright 2001-2013 Microsoft Corp.
	//
	// Writer name: 'SqlServerWriter'
	//    Writer Id: {a65faa63-5ea8-4ebc-9dbd-a0c4db26912a}
	//    Writer Instance Id: {0e0bc896-afbe-49a6-adbb-8cb8ef65ed78}
	//    State: [8] Failed
	//    Last error: Non-retryable error
}

func ExampleParse() {
	out := "vssadmin 1.1 - Volume Shadow Copy Service administrative command-line tool\r\n" +
		"(C) Copyright 2001-2013 Microsoft Corp.\r\n" +
		"\r\n" +
		"Writer name: 'System Writer'\r\n" +
		"   Writer Id: {e8132975-6f93-4464-a53e-1050253ae220}\r\n" +
		"   Writer Instance Id: {b849a411-a377-4f5a-8a35-6a49798bf36c}\r\n" +
		"   State: [1] Stable\r\n" +
		"   Last error: No error\r\n" +
		"\r\n" +
		"Writer name: 'Microsoft Hyper-V VSS Writer'\r\n" +
		"   Writer Id: {66841cd4-6ded-4f4b-8f17-fd23f8ddc3de}\r\n" +
		"   Writer Instance Id: {0c67a2cb-603c-4616-b7a2-2873705bdd12}\r\n" +
		"   State: [7] Failed\r\n" +
		"   Last error: Retryable error\r\n" +
		"\r\n"
	ws, err := Parse(strings.NewReader(out))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, w := range ws {
		fmt.Printf("%s: %s, %s, failed=%v healthy=%v\n", w.Name, w.StateName(), w.LastError, w.Failed(), w.Healthy())
	}
	// Output:
	// System Writer: VSS_WS_STABLE, No error, failed=false healthy=true
	// Microsoft Hyper-V VSS Writer: VSS_WS_FAILED_AT_PREPARE_BACKUP, Retryable error, failed=true healthy=false
}
