// Package logtest captures slog records in tests, so that a test can wait
// for what a component logs instead of sleeping.
package logtest

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Timeout bounds every wait for something that should happen.
const Timeout = 10 * time.Second

// Record is one captured log line.
type Record struct {
	Level slog.Level
	Msg   string
	Attrs map[string]slog.Value
}

// Err returns the record's "err" attribute, if it is an error.
func (r Record) Err() error {
	v, ok := r.Attrs["err"]
	if !ok || v.Kind() != slog.KindAny {
		return nil
	}
	err, _ := v.Any().(error)
	return err
}

func (r Record) String() string {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Msg)
	keys := make([]string, 0, len(r.Attrs))
	for k := range r.Attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString(" " + k + "=" + r.Attrs[k].String())
	}
	return b.String()
}

// Sink captures log records so that tests can wait for them.
type Sink struct {
	mu      sync.Mutex
	recs    []Record
	changed chan struct{} // closed and replaced on every record
}

// NewSink makes a sink whose records are printed if t fails.
func NewSink(t testing.TB, name string) *Sink {
	s := &Sink{changed: make(chan struct{})}
	t.Cleanup(func() {
		if t.Failed() {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, r := range s.recs {
				if r.Level >= slog.LevelInfo {
					t.Logf("%s log: %s", name, r)
				}
			}
		}
	})
	return s
}

func (s *Sink) Logger() *slog.Logger { return slog.New(sinkHandler{s: s}) }

type sinkHandler struct {
	s     *Sink
	attrs []slog.Attr
}

func (h sinkHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h sinkHandler) Handle(_ context.Context, r slog.Record) error {
	rec := Record{Level: r.Level, Msg: r.Message, Attrs: make(map[string]slog.Value)}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.Resolve()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.Resolve()
		return true
	})
	h.s.mu.Lock()
	h.s.recs = append(h.s.recs, rec)
	close(h.s.changed)
	h.s.changed = make(chan struct{})
	h.s.mu.Unlock()
	return nil
}

func (h sinkHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return sinkHandler{s: h.s, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h sinkHandler) WithGroup(string) slog.Handler { return h }

// Wait returns the first record (ever logged) that match accepts, waiting
// up to Timeout for it.
func (s *Sink) Wait(t testing.TB, what string, match func(Record) bool) Record {
	t.Helper()
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	seen := 0
	for {
		s.mu.Lock()
		for ; seen < len(s.recs); seen++ {
			if r := s.recs[seen]; match(r) {
				s.mu.Unlock()
				return r
			}
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for a log record: %s", Timeout, what)
		}
	}
}

// MsgIs matches records with message msg.
func MsgIs(msg string) func(Record) bool {
	return func(r Record) bool { return r.Msg == msg }
}

// WaitFor polls cond until it holds, for at most Timeout.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", Timeout, what)
		}
		<-tick.C
	}
}
