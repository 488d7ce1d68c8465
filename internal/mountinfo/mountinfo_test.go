package mountinfo

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

const mountInfo = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n" +
	"96 22 0:50 / /tmp/tmp.gR0/mnt/cairn rw,relatime shared:50 - zfs tp/cairn rw,xattr,noacl\n" +
	"97 96 0:51 / /tmp/tmp.gR0/mnt/cairn/agents/a\\040b rw,relatime shared:51 - zfs tp/cairn/agents/a rw,xattr,noacl\n" +
	"98 97 0:52 / /tmp/tmp.gR0/mnt/cairn/agents/a/.zfs/snapshot/s1 ro,relatime shared:52 - zfs tp/cairn/agents/a@s1 ro\n" +
	"99 22 0:53 /sub /bind rw master:3 - zfs tp/cairn rw\n"

func TestParse(t *testing.T) {
	got := Parse([]byte(mountInfo + "garbage line\n\n"))
	want := []Mount{
		{"/", "/", "ext4", "/dev/vda1"},
		{"/", "/tmp/tmp.gR0/mnt/cairn", "zfs", "tp/cairn"},
		{"/", "/tmp/tmp.gR0/mnt/cairn/agents/a b", "zfs", "tp/cairn/agents/a"},
		{"/", "/tmp/tmp.gR0/mnt/cairn/agents/a/.zfs/snapshot/s1", "zfs", "tp/cairn/agents/a@s1"},
		{"/sub", "/bind", "zfs", "tp/cairn"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if s := Unescape(`a\011b\134c\04`); s != "a\tb\\c\\04" {
		t.Fatalf("unescape = %q", s)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", mountInfo, "1 2 3 4 5 6 - zfs", "1 2 3 4 5 6 - zfs src", `1 2 3 \ \1 \12 - - zfs \777`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range Parse(data) {
			if m.FSType == "" || m.Source == "" && utf8.Valid(data) && !strings.Contains(string(data), `\`) {
				t.Fatalf("mount %+v from %q", m, data)
			}
		}
	})
}
