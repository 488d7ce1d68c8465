//go:build !linux

package embedded

import (
	"errors"
	"os"
)

// openDirect: O_DIRECT is Linux's; elsewhere packs are written through the
// page cache.
func openDirect(string) (*os.File, error) {
	return nil, errors.ErrUnsupported
}
