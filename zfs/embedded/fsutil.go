package embedded

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/cairnbackup/cairn/internal/durable"
)

var tmpSeq atomic.Uint64

// tempName returns a new unique path in the pool's tmp directory.
func (p *Pool) tempName(kind string) string {
	return filepath.Join(p.dir, "tmp", fmt.Sprintf("%s-%d-%d", kind, os.Getpid(), tmpSeq.Add(1)))
}

// writeFileDurable writes data through a temporary file so that path
// holds either the old content or all of the new, whatever happens.
func (p *Pool) writeFileDurable(path string, data []byte) error {
	if err := durable.WriteFile(p.tempName("file"), path, data, 0o600); err != nil {
		return err
	}
	p.chunks.bytesWritten.Add(int64(len(data)))
	return nil
}

var (
	syncDir       = durable.SyncDir
	renameDurable = durable.Rename
)
