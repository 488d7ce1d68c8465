package gateway

import (
	"sync"
	"time"
)

// failLimiter counts failed credentials per source address in fixed
// windows; an address at the limit is refused until its window ends.
type failLimiter struct {
	limit  int
	window time.Duration
	now    func() time.Time

	mu sync.Mutex
	m  map[string]*failCount
}

type failCount struct {
	start time.Time
	n     int
}

// maxTracked bounds the addresses tracked; beyond it, expired entries are
// dropped, and if none is expired the oldest window is.
const maxTracked = 10000

func newFailLimiter(limit int, window time.Duration, now func() time.Time) *failLimiter {
	return &failLimiter{limit: limit, window: window, now: now, m: make(map[string]*failCount)}
}

// blocked reports whether addr has reached the limit in its current window.
func (l *failLimiter) blocked(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.m[addr]
	if c == nil {
		return false
	}
	if l.now().Sub(c.start) >= l.window {
		delete(l.m, addr)
		return false
	}
	return c.n >= l.limit
}

// fail records a failed credential from addr.
func (l *failLimiter) fail(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	c := l.m[addr]
	if c == nil || now.Sub(c.start) >= l.window {
		if len(l.m) >= maxTracked {
			l.evict(now)
		}
		c = &failCount{start: now}
		l.m[addr] = c
	}
	c.n++
}

func (l *failLimiter) evict(now time.Time) {
	var oldest string
	var oldestStart time.Time
	for k, c := range l.m {
		if now.Sub(c.start) >= l.window {
			delete(l.m, k)
			continue
		}
		if oldest == "" || c.start.Before(oldestStart) {
			oldest, oldestStart = k, c.start
		}
	}
	if len(l.m) >= maxTracked {
		delete(l.m, oldest)
	}
}
