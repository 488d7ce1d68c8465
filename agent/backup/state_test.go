package backup

import (
	"bytes"
	"fmt"
	"testing"
)

func FuzzParseHeader(f *testing.F) {
	h := Header{VolumeID: "/srv/disk.img", JobID: "job-1", Size: 1<<20 + 5, BlockSize: 64 << 10, Blocks: 17}
	h.Manifest[0] = 7
	f.Add(h.Marshal())
	f.Add((&Header{BlockSize: 4096}).Marshal())
	f.Add([]byte(stateMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		// What parses encodes to the same bytes.
		if m := h.Marshal(); !bytes.Equal(m, b[:len(m)]) {
			t.Fatalf("%+v re-encodes to %x, parsed from %x", h, m, b)
		}
	})
}

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{VolumeID: "/dev/vg/root", JobID: "42", Size: 10 << 30, BlockSize: 4 << 20, Blocks: 2560}
	h.Manifest[31] = 1
	b := append(h.Marshal(), 1, 2, 3)
	got, err := ParseHeader(b)
	if err != nil || got != h {
		t.Fatalf("ParseHeader = %+v, %v; want %+v", got, err, h)
	}
	for _, bad := range []Header{
		{VolumeID: "v", Size: 100, BlockSize: 3000, Blocks: 1}, // block size
		{VolumeID: "v", Size: 100, BlockSize: 4096, Blocks: 2}, // block count
		{VolumeID: "v", Size: -1, BlockSize: 4096, Blocks: 0},  // size
	} {
		if _, err := ParseHeader(bad.Marshal()); err == nil {
			t.Errorf("ParseHeader accepted %+v", bad)
		}
	}
}

// The header of a state file: a 1 MiB + 5 bytes volume in 64 KiB blocks
// (17 hashes follow it).
func ExampleHeader_Marshal() {
	h := Header{VolumeID: "/srv/disk.img", JobID: "42", Size: 1<<20 + 5, BlockSize: 64 << 10, Blocks: 17}
	b := h.Marshal()
	fmt.Printf("%d bytes\n%q\n% x\n", len(b), b[:8], b[8:32])
	fmt.Printf("%q\n", b[64:len(b)-4])
	// Output:
	// 87 bytes
	// "CAIRNBH1"
	// 00 00 00 57 00 01 00 00 00 00 00 00 00 10 00 05 00 00 00 00 00 00 00 11
	// "\x00\r/srv/disk.img\x00\x0242"
}
