package embedded

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
)

var tmpSeq atomic.Uint64

// tempName returns a new unique path in the pool's tmp directory.
func (p *Pool) tempName(kind string) string {
	return filepath.Join(p.dir, "tmp", fmt.Sprintf("%s-%d-%d", kind, os.Getpid(), tmpSeq.Add(1)))
}

// writeFileDurable writes data to a temporary file, makes it durable and
// renames it to path, so that path holds either the old content or all of
// the new, whatever happens.
func (p *Pool) writeFileDurable(path string, data []byte) error {
	tmp := p.tempName("file")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	p.chunks.bytesWritten.Add(int64(len(data)))
	return syncDir(filepath.Dir(path))
}

// syncDir makes the entries of a directory (creations, renames) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// renameDurable renames a file or directory and makes both directories
// involved durable.
func renameDurable(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(to)); err != nil {
		return err
	}
	return syncDir(filepath.Dir(from))
}
