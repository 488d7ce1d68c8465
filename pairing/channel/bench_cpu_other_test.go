//go:build !linux

package channel_test

import "time"

// cpuTimes is not available here.
func cpuTimes(int) (self, other time.Duration, ok bool) { return 0, 0, false }
