//go:build !unix

package script

import "os/exec"

// killGroup: the script alone is killed when it is canceled.
func killGroup(*exec.Cmd) {}
