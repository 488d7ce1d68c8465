package channel_test

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuTimes returns the CPU time (user and system) used so far by this
// process and by the process pid, for the benchmark's figures per transfer.
func cpuTimes(pid int) (self, other time.Duration, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, false
	}
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command may hold spaces and parentheses: fields start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, false
	}
	// Fields 14 and 15 of stat (utime, stime), in clock ticks of USER_HZ
	// (100 on Linux).
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return self, time.Duration(ut+st) * (time.Second / 100), true
}
