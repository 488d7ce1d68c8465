//go:build unix

package script

import (
	"os/exec"
	"syscall"
)

// killGroup runs the script in a process group of its own and kills the
// whole group when the script is canceled, so that its children die too.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
