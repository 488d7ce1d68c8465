package gateway

import (
	"fmt"
	"testing"
	"time"
)

func TestFailLimiter(t *testing.T) {
	clock := newFakeClock()
	l := newFailLimiter(3, time.Minute, clock.Now)
	const a, b = "192.0.2.1", "192.0.2.2"

	if l.blocked(a) {
		t.Fatal("blocked before any failure")
	}
	l.fail(a)
	l.fail(a)
	if l.blocked(a) {
		t.Fatal("blocked after 2 of 3 failures")
	}
	clock.Advance(30 * time.Second)
	l.fail(a) // the third, in the same window
	if !l.blocked(a) {
		t.Fatal("not blocked after 3 failures within the window")
	}
	if l.blocked(b) {
		t.Fatal("another address is blocked too")
	}
	// Fixed window: from the first failure, not the last.
	clock.Advance(30*time.Second - time.Nanosecond)
	if !l.blocked(a) {
		t.Fatal("unblocked before the window ended")
	}
	clock.Advance(time.Nanosecond)
	if l.blocked(a) {
		t.Fatal("still blocked once the window ended")
	}
	// A new window starts from zero.
	l.fail(a)
	l.fail(a)
	if l.blocked(a) {
		t.Fatal("blocked after 2 failures in a new window")
	}
	l.fail(a)
	if !l.blocked(a) {
		t.Fatal("not blocked after 3 failures in a new window")
	}
	// A failure after the window ended starts a new one even if blocked
	// was not asked in between.
	clock.Advance(time.Minute)
	l.fail(a)
	if l.blocked(a) {
		t.Fatal("old window's failures counted in a new one")
	}
}

func TestFailLimiterBounded(t *testing.T) {
	clock := newFakeClock()
	l := newFailLimiter(1, time.Minute, clock.Now)
	addr := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }
	// maxTracked addresses fail, each a little later than the one before.
	for i := range maxTracked {
		l.fail(addr(i))
		clock.Advance(time.Millisecond)
	}
	if len(l.m) != maxTracked {
		t.Fatalf("tracking %d addresses, want %d", len(l.m), maxTracked)
	}
	// One more: the oldest window is dropped, the newest address counts.
	l.fail("198.51.100.1")
	if len(l.m) > maxTracked {
		t.Fatalf("tracking %d addresses, more than %d", len(l.m), maxTracked)
	}
	if !l.blocked("198.51.100.1") {
		t.Error("newest address not blocked")
	}
	if l.blocked(addr(0)) {
		t.Error("oldest address still tracked")
	}
	if !l.blocked(addr(1)) || !l.blocked(addr(maxTracked-1)) {
		t.Error("an address other than the oldest was dropped")
	}
	// Once windows expire, they are dropped first: nothing recent is lost.
	clock.Advance(time.Minute - time.Duration(maxTracked/2)*time.Millisecond)
	l.fail("198.51.100.2")
	if len(l.m) > maxTracked/2+2 {
		t.Errorf("tracking %d addresses after half of the windows expired, want at most %d", len(l.m), maxTracked/2+2)
	}
	if !l.blocked("198.51.100.1") || !l.blocked("198.51.100.2") || !l.blocked(addr(maxTracked-1)) {
		t.Error("a live window was dropped while expired ones were there")
	}
}
