package backup

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// TestMain brings up the loopback interface when the tests run in the
// OpenZFS VM of ../shared/zfsvm (ZFSVM=1), which boots without it: the
// tests' agents reach the gateway on 127.0.0.1.
func TestMain(m *testing.M) {
	if os.Getenv("ZFSVM") == "1" {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bring up lo in the VM: %v: %s\n", err, out)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}
