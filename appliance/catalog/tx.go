package catalog

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"
)

// Tx is a catalog transaction, valid only inside the function passed to
// Catalog.Update or Catalog.View. In a View, write methods fail.
type Tx struct {
	tx        *bbolt.Tx
	secretKey []byte // Options.SecretKey; nil if none
}

func now() time.Time { return time.Now().UTC() }

func u64key(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// bucket returns a top-level bucket; it only fails on a file whose schema
// is not what this code expects.
func (t *Tx) bucket(name []byte) (*bbolt.Bucket, error) {
	b := t.tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("bucket %s missing from catalog", name)
	}
	return b, nil
}

// get decodes the record at key in b; ErrNotFound if there is none.
func get[T any](b *bbolt.Bucket, key []byte) (T, error) {
	var v T
	data := b.Get(key)
	if data == nil {
		return v, ErrNotFound
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("decode record %x: %w", key, err)
	}
	return v, nil
}

// getIn is get on the top-level bucket name.
func getIn[T any](t *Tx, name, key []byte) (T, error) {
	b, err := t.bucket(name)
	if err != nil {
		var zero T
		return zero, err
	}
	return get[T](b, key)
}

// list decodes the records in b, in key order, that keep accepts.
func list[T any](b *bbolt.Bucket, keep func(*T) bool) ([]T, error) {
	var out []T
	err := b.ForEach(func(k, data []byte) error {
		var v T
		if err := json.Unmarshal(data, &v); err != nil {
			return fmt.Errorf("decode record %x: %w", k, err)
		}
		if keep == nil || keep(&v) {
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

func put(b *bbolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// PutAgent creates or replaces an agent. It keeps the CreatedAt of an
// existing record (a new one gets a.CreatedAt, or now if zero) and sets
// UpdatedAt to now. A record whose Fingerprint differs from the stored
// one loses its FingerprintConfirmedAt: a confirmation is of one key.
func (t *Tx) PutAgent(a Agent) error {
	if err := t.putAgent(a); err != nil {
		return fmt.Errorf("put agent %q: %w", a.ID, err)
	}
	return nil
}

func (t *Tx) putAgent(a Agent) error {
	if err := validAgentID(a.ID); err != nil {
		return err
	}
	if a.Mode != ModeDirect && a.Mode != ModeReverse {
		return fmt.Errorf("mode %q: want %q or %q: %w", a.Mode, ModeDirect, ModeReverse, ErrInvalid)
	}
	b, err := t.bucket(bucketAgents)
	if err != nil {
		return err
	}
	old, err := get[Agent](b, []byte(a.ID))
	switch {
	case err == nil:
		a.CreatedAt = old.CreatedAt
		if a.Fingerprint != old.Fingerprint {
			a.FingerprintConfirmedAt = time.Time{}
		}
	case !errors.Is(err, ErrNotFound):
		return err
	}
	a.UpdatedAt = now()
	if a.CreatedAt.IsZero() {
		a.CreatedAt = a.UpdatedAt
	}
	return put(b, []byte(a.ID), a)
}

// Agent returns the agent with the given ID.
func (t *Tx) Agent(id string) (Agent, error) {
	a, err := getIn[Agent](t, bucketAgents, []byte(id))
	if err != nil {
		return Agent{}, fmt.Errorf("agent %q: %w", id, err)
	}
	return a, nil
}

// Agents returns all agents ordered by ID.
func (t *Tx) Agents() ([]Agent, error) {
	b, err := t.bucket(bucketAgents)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	agents, err := list[Agent](b, nil)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return agents, nil
}

// DeleteAgent deletes an agent together with its settings, recovery
// point records, agent tokens (so that they no longer authenticate),
// activation, pairings and dirty image records. Jobs and audit events that mention it are kept
// as history.
func (t *Tx) DeleteAgent(id string) error {
	if err := t.deleteAgent(id); err != nil {
		return fmt.Errorf("delete agent %q: %w", id, err)
	}
	return nil
}

func (t *Tx) deleteAgent(id string) error {
	agents, err := t.bucket(bucketAgents)
	if err != nil {
		return err
	}
	settings, err := t.bucket(bucketSettings)
	if err != nil {
		return err
	}
	points, err := t.bucket(bucketRecoveryPoints)
	if err != nil {
		return err
	}
	key := []byte(id)
	if agents.Get(key) == nil {
		return ErrNotFound
	}
	if err := agents.Delete(key); err != nil {
		return err
	}
	if err := settings.Delete(key); err != nil {
		return err
	}
	if points.Bucket(key) != nil {
		if err := points.DeleteBucket(key); err != nil {
			return err
		}
	}
	if err := t.deleteAgentTokens(id); err != nil {
		return err
	}
	if err := t.deleteActivation(id); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if err := t.deleteDirtyImagesOf(id); err != nil {
		return err
	}
	return t.deletePairingsOf(id)
}

// PutSettings creates or replaces the settings of an existing agent and
// sets UpdatedAt to now. It fails with ErrNotFound if the agent does not
// exist.
func (t *Tx) PutSettings(s Settings) error {
	if err := t.putSettings(s); err != nil {
		return fmt.Errorf("put settings of agent %q: %w", s.AgentID, err)
	}
	return nil
}

func (t *Tx) putSettings(s Settings) error {
	if err := validAgentID(s.AgentID); err != nil {
		return err
	}
	if err := validRetention("retention", s.Retention); err != nil {
		return err
	}
	if err := validRetention("offsite retention", s.OffsiteRetention); err != nil {
		return err
	}
	if _, err := t.Agent(s.AgentID); err != nil {
		return err
	}
	b, err := t.bucket(bucketSettings)
	if err != nil {
		return err
	}
	s.UpdatedAt = now()
	return put(b, []byte(s.AgentID), s)
}

// Settings returns an agent's settings, or ErrNotFound if none were
// stored.
func (t *Tx) Settings(agentID string) (Settings, error) {
	s, err := getIn[Settings](t, bucketSettings, []byte(agentID))
	if err != nil {
		return Settings{}, fmt.Errorf("settings of agent %q: %w", agentID, err)
	}
	return s, nil
}

// Recovery points live in one nested bucket per agent under
// recovery_points. Keys are the big-endian CreatedAt in Unix nanoseconds
// followed by the snapshot name, so a cursor walks them oldest first.
var (
	minPointTime = time.Unix(0, 0)
	maxPointTime = time.Unix(0, math.MaxInt64)
)

func pointKey(rp RecoveryPoint) []byte {
	return append(u64key(uint64(rp.CreatedAt.UnixNano())), rp.Snapshot...)
}

// points returns the recovery point bucket of an existing agent (else
// ErrNotFound), creating it if create is set; without create it returns
// nil if the agent has no recovery points yet.
func (t *Tx) points(agentID string, create bool) (*bbolt.Bucket, error) {
	if _, err := t.Agent(agentID); err != nil {
		return nil, err
	}
	all, err := t.bucket(bucketRecoveryPoints)
	if err != nil {
		return nil, err
	}
	if create {
		return all.CreateBucketIfNotExists([]byte(agentID))
	}
	return all.Bucket([]byte(agentID)), nil
}

// findPoint returns the key of the named snapshot in b (which may be
// nil), or nil if it is not there.
func findPoint(b *bbolt.Bucket, snapshot string) []byte {
	if b == nil {
		return nil
	}
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) > 8 && string(k[8:]) == snapshot {
			return k
		}
	}
	return nil
}

// AddRecoveryPoint records a recovery point of an existing agent. Adding a
// snapshot that is already recorded with the same CreatedAt replaces the
// record (use it to set VerifiedAt); with a different CreatedAt it fails
// with ErrInvalid.
func (t *Tx) AddRecoveryPoint(rp RecoveryPoint) error {
	if err := t.addRecoveryPoint(rp); err != nil {
		return fmt.Errorf("add recovery point %s@%s: %w", rp.AgentID, rp.Snapshot, err)
	}
	return nil
}

func (t *Tx) addRecoveryPoint(rp RecoveryPoint) error {
	if err := validAgentID(rp.AgentID); err != nil {
		return err
	}
	if err := validSnapshot(rp.Snapshot); err != nil {
		return err
	}
	if rp.CreatedAt.Before(minPointTime) || rp.CreatedAt.After(maxPointTime) {
		return fmt.Errorf("creation time %v out of range: %w", rp.CreatedAt, ErrInvalid)
	}
	if rp.Bytes < 0 {
		return fmt.Errorf("negative size: %w", ErrInvalid)
	}
	b, err := t.points(rp.AgentID, true)
	if err != nil {
		return err
	}
	key := pointKey(rp)
	if old := findPoint(b, rp.Snapshot); old != nil && !bytes.Equal(old, key) {
		return fmt.Errorf("already recorded with another creation time: %w", ErrInvalid)
	}
	return put(b, key, rp)
}

// RecoveryPoint returns one recovery point of an agent.
func (t *Tx) RecoveryPoint(agentID, snapshot string) (RecoveryPoint, error) {
	rp, err := t.recoveryPoint(agentID, snapshot)
	if err != nil {
		return RecoveryPoint{}, fmt.Errorf("recovery point %s@%s: %w", agentID, snapshot, err)
	}
	return rp, nil
}

func (t *Tx) recoveryPoint(agentID, snapshot string) (RecoveryPoint, error) {
	b, err := t.points(agentID, false)
	if err != nil {
		return RecoveryPoint{}, err
	}
	key := findPoint(b, snapshot)
	if key == nil {
		return RecoveryPoint{}, ErrNotFound
	}
	return get[RecoveryPoint](b, key)
}

// RecoveryPoints returns an existing agent's recovery points, oldest first.
func (t *Tx) RecoveryPoints(agentID string) ([]RecoveryPoint, error) {
	b, err := t.points(agentID, false)
	if err != nil {
		return nil, fmt.Errorf("list recovery points of agent %q: %w", agentID, err)
	}
	if b == nil {
		return nil, nil
	}
	rps, err := list[RecoveryPoint](b, nil)
	if err != nil {
		return nil, fmt.Errorf("list recovery points of agent %q: %w", agentID, err)
	}
	return rps, nil
}

// RecoveryPointCount returns how many recovery points an existing agent
// has, without decoding them.
func (t *Tx) RecoveryPointCount(agentID string) (int, error) {
	b, err := t.points(agentID, false)
	if err != nil {
		return 0, fmt.Errorf("count recovery points of agent %q: %w", agentID, err)
	}
	if b == nil {
		return 0, nil
	}
	return b.Stats().KeyN, nil
}

// DeleteRecoveryPoint deletes the record of one recovery point.
func (t *Tx) DeleteRecoveryPoint(agentID, snapshot string) error {
	if err := t.deleteRecoveryPoint(agentID, snapshot); err != nil {
		return fmt.Errorf("delete recovery point %s@%s: %w", agentID, snapshot, err)
	}
	return nil
}

func (t *Tx) deleteRecoveryPoint(agentID, snapshot string) error {
	b, err := t.points(agentID, false)
	if err != nil {
		return err
	}
	key := findPoint(b, snapshot)
	if key == nil {
		return ErrNotFound
	}
	return b.Delete(key)
}

// PutJob creates or updates a job. A job with ID 0 is new: PutJob assigns
// the next ID (IDs follow creation order) and sets Created to now if zero;
// its AgentID, unless empty, must name an existing agent. A job with
// another ID must already exist. If the transaction does not commit, an
// assigned ID is void.
func (t *Tx) PutJob(j *Job) error {
	if err := t.putJob(j); err != nil {
		return fmt.Errorf("put %s job %d: %w", j.Kind, j.ID, err)
	}
	return nil
}

func (t *Tx) putJob(j *Job) error {
	if j.AgentID != "" {
		if err := validAgentID(j.AgentID); err != nil {
			return err
		}
	}
	if !validJobKind(j.Kind) {
		return fmt.Errorf("kind %q: want 1 to 32 characters of [a-z-]: %w", j.Kind, ErrInvalid)
	}
	if !validJobState(j.State) {
		return fmt.Errorf("state %q: %w", j.State, ErrInvalid)
	}
	b, err := t.bucket(bucketJobs)
	if err != nil {
		return err
	}
	if j.ID != 0 {
		if b.Get(u64key(j.ID)) == nil {
			return ErrNotFound
		}
	} else {
		if j.AgentID != "" {
			if _, err := t.Agent(j.AgentID); err != nil {
				return err
			}
		}
		if j.ID, err = b.NextSequence(); err != nil {
			return err
		}
	}
	if j.Created.IsZero() {
		j.Created = now()
	}
	return put(b, u64key(j.ID), j)
}

// Job returns the job with the given ID.
func (t *Tx) Job(id uint64) (Job, error) {
	j, err := getIn[Job](t, bucketJobs, u64key(id))
	if err != nil {
		return Job{}, fmt.Errorf("job %d: %w", id, err)
	}
	return j, nil
}

// Jobs returns the jobs of one agent, or all jobs if agentID is empty,
// oldest first.
func (t *Tx) Jobs(agentID string) ([]Job, error) {
	b, err := t.bucket(bucketJobs)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	jobs, err := list(b, func(j *Job) bool { return agentID == "" || j.AgentID == agentID })
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// Audit appends an event to the audit log. It assigns e.Seq (any value
// passed is ignored) and sets e.Time to now if zero. Action is required.
func (t *Tx) Audit(e AuditEvent) error {
	if err := t.audit(e); err != nil {
		return fmt.Errorf("audit %q: %w", e.Action, err)
	}
	return nil
}

func (t *Tx) audit(e AuditEvent) error {
	if e.Action == "" {
		return fmt.Errorf("no action: %w", ErrInvalid)
	}
	b, err := t.bucket(bucketAudit)
	if err != nil {
		return err
	}
	if e.Seq, err = b.NextSequence(); err != nil {
		return err
	}
	if e.Time.IsZero() {
		e.Time = now()
	}
	return put(b, u64key(e.Seq), e)
}

// AuditLog returns, in order, up to limit events with Seq greater than
// afterSeq; limit <= 0 means no limit. Pass the last Seq seen to page on.
func (t *Tx) AuditLog(afterSeq uint64, limit int) ([]AuditEvent, error) {
	b, err := t.bucket(bucketAudit)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	if afterSeq == math.MaxUint64 {
		return nil, nil
	}
	var events []AuditEvent
	c := b.Cursor()
	for k, v := c.Seek(u64key(afterSeq + 1)); k != nil && (limit <= 0 || len(events) < limit); k, v = c.Next() {
		var e AuditEvent
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("read audit log: decode event %d: %w", binary.BigEndian.Uint64(k), err)
		}
		events = append(events, e)
	}
	return events, nil
}
