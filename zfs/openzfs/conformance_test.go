package openzfs

import (
	"testing"

	"github.com/cairnbackup/cairn/zfs"
	"github.com/cairnbackup/cairn/zfs/zfstest"
)

// TestConformance runs the zfs.Pool conformance suite on real OpenZFS: a
// fresh zpool on a sparse file for every pool the suite asks for.
func TestConformance(t *testing.T) {
	requireZFS(t)
	zfstest.Run(t, func(t *testing.T) zfs.Pool { return newTestPool(t).Pool })
}
