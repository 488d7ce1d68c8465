//go:build unix && !linux

package embedded

import "syscall"

// syncFS flushes the file systems. Without syncfs(2), sync(2) is the one
// call that covers every file written so far.
func syncFS(string) error {
	syscall.Sync()
	return nil
}
