package catalog

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// AuditQuery selects audit events for AuditEvents.
type AuditQuery struct {
	// After and Before bound the sequence numbers: events with After <
	// Seq < Before. Before 0 means no upper bound.
	After, Before uint64
	// Action keeps the events whose Action is Action or starts with
	// Action followed by '.' ("agent" keeps "agent.paired" and
	// "agent.unpaired"); "" keeps all.
	Action string
	// Target keeps the events whose Target is exactly Target; "" keeps
	// all.
	Target string
	// Limit bounds the number of events returned; <= 0 means no limit.
	Limit int
	// Newest walks from the newest event down: the answer is newest
	// first, the last Limit matching events below Before. Otherwise it is
	// oldest first, the first Limit matching events above After.
	Newest bool
}

// matches reports whether e passes q's filters.
func (q AuditQuery) matches(e AuditEvent) bool {
	if q.Target != "" && e.Target != q.Target {
		return false
	}
	if q.Action != "" && e.Action != q.Action && !strings.HasPrefix(e.Action, q.Action+".") {
		return false
	}
	return true
}

// AuditEvents returns the events that q selects, in the order it asks
// for. It reads only the events it walks past, not the whole log.
func (t *Tx) AuditEvents(q AuditQuery) ([]AuditEvent, error) {
	b, err := t.bucket(bucketAudit)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	before := q.Before
	if before == 0 {
		before = math.MaxUint64
	}
	if q.After == math.MaxUint64 || before <= q.After+1 {
		return nil, nil
	}
	var events []AuditEvent
	c := b.Cursor()
	var k, v []byte
	if q.Newest {
		if k, v = c.Seek(u64key(before)); k == nil {
			k, v = c.Last()
		}
		if k != nil && binary.BigEndian.Uint64(k) >= before {
			k, v = c.Prev()
		}
	} else {
		k, v = c.Seek(u64key(q.After + 1))
	}
	for ; k != nil && (q.Limit <= 0 || len(events) < q.Limit); k, v = step(c, q.Newest) {
		seq := binary.BigEndian.Uint64(k)
		if seq <= q.After || seq >= before {
			break
		}
		var e AuditEvent
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("read audit log: decode event %d: %w", seq, err)
		}
		if q.matches(e) {
			events = append(events, e)
		}
	}
	return events, nil
}

// step moves the cursor one event on, down when newest first.
func step(c interface {
	Next() ([]byte, []byte)
	Prev() ([]byte, []byte)
}, down bool) ([]byte, []byte) {
	if down {
		return c.Prev()
	}
	return c.Next()
}
