package agent

import (
	"math"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	// Attempt n waits within [d/2, d], d = min(max, min·2ⁿ).
	bounds := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for round := range 50 {
		for n, ms := range bounds {
			d := ms * time.Millisecond
			if got := b.next(); got < d/2 || got > d {
				t.Fatalf("round %d, attempt %d: %s, want within [%s, %s]", round, n, got, d/2, d)
			}
		}
		b.reset()
	}

	// Jitter: the waits at the cap spread over [max/2, max].
	for range 10 {
		b.next()
	}
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 200 {
		d := b.next()
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo > 600*time.Millisecond || hi < 900*time.Millisecond {
		t.Errorf("200 waits at the cap spread over [%s, %s]; want most of [500ms, 1s]", lo, hi)
	}
}

func TestBackoffLongRun(t *testing.T) {
	// However many attempts fail, the wait stays at the cap: the doubling
	// must not overflow into short (or negative) waits.
	for _, b := range []backoff{
		{min: time.Second, max: time.Minute},
		{min: 10 * time.Second, max: time.Hour},
		{min: 1<<34 + 1, max: time.Hour}, // min·2³⁰ wraps to about 1 s
		{min: time.Hour, max: 24 * time.Hour},
		{min: 2 * time.Minute, max: time.Minute}, // min above max: max
	} {
		for n := range 100 {
			// d = min(max, min·2ⁿ), computed without overflow.
			d := b.max
			if float64(b.min)*math.Pow(2, float64(n)) < float64(b.max) {
				d = b.min << n
			}
			if got := b.next(); got < d/2 || got > d {
				t.Fatalf("min %s, max %s, attempt %d: %s, want within [%s, %s]", b.min, b.max, n, got, d/2, d)
			}
		}
	}
}
