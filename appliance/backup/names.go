package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ImageName is the name of a volume's image in its agent's dataset:
// "vol-" and the first 16 hex digits of the SHA-256 of the volume ID, so
// that any volume ID (a Windows GUID path, a device path) gives a safe,
// stable name component.
func ImageName(volumeID string) string {
	sum := sha256.Sum256([]byte(volumeID))
	return "vol-" + hex.EncodeToString(sum[:8])
}

// HashesName is the name of the image that holds the block hashes of
// image, read with blocks of blockSize bytes: 32 bytes per block.
func HashesName(image string, blockSize int) string {
	return image + ".hashes-" + strconv.Itoa(blockSize)
}

// snapshotPrefix starts the name of every recovery point's snapshot.
const snapshotPrefix = "rp-"

// snapshotName names the snapshot of a recovery point made at t by job.
func snapshotName(t time.Time, job uint64) string {
	return fmt.Sprintf("%s%s-%d", snapshotPrefix, t.UTC().Format("20060102T150405Z"), job)
}

// isPointSnapshot reports whether a snapshot name is one this package
// makes.
func isPointSnapshot(name string) bool { return strings.HasPrefix(name, snapshotPrefix) }
