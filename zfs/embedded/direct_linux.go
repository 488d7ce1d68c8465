package embedded

import (
	"os"

	"golang.org/x/sys/unix"
)

// openDirect opens a pack for writes that bypass the page cache
// (O_DIRECT): on this machine, buffered writes cost several times the CPU
// of the copy they make. A file system that refuses O_DIRECT (EINVAL)
// gets buffered writes instead.
func openDirect(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
}
