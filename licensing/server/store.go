package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/cairnbackup/cairn/licensing"
)

// schemaVersion is the version of the store's layout (bucket "meta", key
// "schema"). Version 1:
//
//	meta         "schema" → "1"
//	keys         key ID → keyRecord (JSON); never the key, only its Hash
//	activations  key ID → bucket: agent fingerprint → activationRecord (JSON)
//	agents       agent fingerprint → key ID of its active activation
//	audit        big-endian sequence → AuditRecord (JSON), append-only
const schemaVersion = 1

var (
	bucketMeta        = []byte("meta")
	bucketKeys        = []byte("keys")
	bucketActivations = []byte("activations")
	bucketAgents      = []byte("agents")
	bucketAudit       = []byte("audit")
	keySchema         = []byte("schema")
)

// Errors of the store's admin operations (errors.Is).
var (
	ErrLocked          = errors.New("activation store is in use by another process")
	ErrNotFound        = errors.New("not found")
	ErrExists          = errors.New("already exists")
	ErrInvalidArgument = errors.New("invalid argument")
)

// Limits of the admin operations.
const (
	MaxSeats      = 1_000_000
	maxEditionLen = 32
	maxReasonLen  = 1024
)

// Audit actions (AuditRecord.Action).
const (
	AuditKeyCreate       = "key.create"
	AuditKeyRevoke       = "key.revoke"
	AuditActivate        = "activation.create"
	AuditDeactivate      = "activation.release"
	AuditForceRelease    = "activation.force_release"
	AuditReplace         = "activation.replace"
	AuditReleaseEndedKey = "activation.release_ended_key"
)

// Who released an activation (ActivationInfo.ReleasedBy).
const (
	ReleasedByAppliance   = "appliance" // the appliance deactivated it
	ReleasedByVendor      = "vendor"    // ForceRelease
	ReleasedByReplacement = "replaced"  // the agent was activated with another key on the same appliance
	ReleasedByKeyEnd      = "key_ended" // its key was revoked or expired and the agent was activated again
)

const (
	defaultActor            = "vendor"
	defaultLockTimeout      = time.Second
	serialSymbols           = 16
	crockford               = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	auditRecordsPerKeyLimit = 10_000
)

// Options tune Open.
type Options struct {
	Now         func() time.Time // nil: time.Now; the clock of the admin operations
	LockTimeout time.Duration    // how long to wait for another process's lock; 0: 1 s
}

// Store is the activation service's bbolt database: product keys (hashed),
// activations and the audit log. It is safe for concurrent use; every
// decision about a seat is taken and written in one write transaction.
type Store struct {
	db  *bbolt.DB
	now func() time.Time
}

// Open opens or creates the store at path (mode 0600). While another
// process has it open, Open fails with an error wrapping ErrLocked.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = defaultLockTimeout
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open activation store %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch v := meta.Get(keySchema); {
		case v == nil:
			if err := meta.Put(keySchema, []byte(strconv.Itoa(schemaVersion))); err != nil {
				return err
			}
		case string(v) != strconv.Itoa(schemaVersion):
			return fmt.Errorf("store schema version %q, this program knows %d", v, schemaVersion)
		}
		for _, b := range [][]byte{bucketKeys, bucketActivations, bucketAgents, bucketAudit} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open activation store %s: %w", path, err)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, now: now}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// keyRecord is a product key in the store: its ID and Hash, never the key.
type keyRecord struct {
	ID           string    `json:"id"`
	Hash         []byte    `json:"hash"`
	Edition      string    `json:"edition"`
	Seats        int       `json:"seats"`
	Expires      time.Time `json:"expires"`
	State        string    `json:"state"`
	Created      time.Time `json:"created"`
	Revoked      time.Time `json:"revoked,omitzero"`
	RevokeReason string    `json:"revoke_reason,omitempty"`
}

// inForce reports whether the key can hold seats at now.
func (k *keyRecord) inForce(now time.Time) bool {
	return k.State == licensing.KeyActive && now.Before(k.Expires)
}

// activationRecord is one agent's activation of one key.
type activationRecord struct {
	AgentFingerprint string    `json:"agent_fingerprint"`
	ApplianceID      string    `json:"appliance_id"`
	Hostname         string    `json:"hostname,omitempty"`
	Activated        time.Time `json:"activated"` // when this seat was taken
	Renewed          time.Time `json:"renewed"`   // the latest signature's Issued
	Expires          time.Time `json:"expires"`   // the latest signature's Expires
	Serial           string    `json:"serial"`    // the latest signature's Serial
	Released         time.Time `json:"released,omitzero"`
	ReleasedBy       string    `json:"released_by,omitempty"`
	ReleaseReason    string    `json:"release_reason,omitempty"`
}

func (a *activationRecord) active() bool { return a.Released.IsZero() }

// KeyInfo describes a product key (never the key itself).
type KeyInfo struct {
	ID           string    `json:"id"`
	Edition      string    `json:"edition"`
	Seats        int       `json:"seats"`
	Used         int       `json:"used"` // active activations
	Expires      time.Time `json:"expires"`
	State        string    `json:"state"` // licensing.KeyActive or licensing.KeyRevoked
	Created      time.Time `json:"created"`
	Revoked      time.Time `json:"revoked,omitzero"`
	RevokeReason string    `json:"revoke_reason,omitempty"`
}

// ActivationInfo describes one agent's activation of a key, active or
// released.
type ActivationInfo struct {
	KeyID            string    `json:"key_id"`
	AgentFingerprint string    `json:"agent_fingerprint"`
	ApplianceID      string    `json:"appliance_id"`
	Hostname         string    `json:"hostname,omitempty"`
	Activated        time.Time `json:"activated"`
	Renewed          time.Time `json:"renewed"`
	Expires          time.Time `json:"expires"`
	Serial           string    `json:"serial"`
	Released         time.Time `json:"released,omitzero"`
	ReleasedBy       string    `json:"released_by,omitempty"` // appliance, vendor, replaced, key_ended
	ReleaseReason    string    `json:"release_reason,omitempty"`
}

// Active reports whether the activation holds a seat.
func (a ActivationInfo) Active() bool { return a.Released.IsZero() }

// AuditRecord is one entry of the append-only audit log: every change of a
// key or a seat.
type AuditRecord struct {
	Seq              uint64    `json:"seq"`
	Time             time.Time `json:"time"`
	Action           string    `json:"action"`
	KeyID            string    `json:"key_id"`
	AgentFingerprint string    `json:"agent_fingerprint,omitempty"`
	ApplianceID      string    `json:"appliance_id,omitempty"`
	Actor            string    `json:"actor,omitempty"`
	Reason           string    `json:"reason,omitempty"`
}

// KeyDetail is a key with its activations and audit records.
type KeyDetail struct {
	Key         KeyInfo          `json:"key"`
	Activations []ActivationInfo `json:"activations"`
	Audit       []AuditRecord    `json:"audit"`
}

// CreateKeyRequest describes a new product key.
type CreateKeyRequest struct {
	Edition string    `json:"edition"` // 1 to 32 of [a-z0-9._-], starting with a letter or digit
	Seats   int       `json:"seats"`   // 1 to MaxSeats agents at a time
	Expires time.Time `json:"expires"` // the end of the key's term (whole seconds)
	Actor   string    `json:"actor"`   // who creates it, for the audit log
	// Key, if not zero, is the key to store instead of a new random one
	// (e.g. the demo key of an embedded service). It fails with ErrExists if
	// a key with its ID is stored.
	Key licensing.Key `json:"-"`
}

// ForceReleaseRequest releases an agent's seat on the vendor's authority.
type ForceReleaseRequest struct {
	KeyID            string `json:"key_id"`
	AgentFingerprint string `json:"agent_fingerprint"`
	Actor            string `json:"actor"`
	Reason           string `json:"reason"` // required: it goes to the audit log
}

// CreateKey stores a new product key and returns it: the only time the key
// is available in clear (the store keeps its hash).
func (s *Store) CreateKey(ctx context.Context, req CreateKeyRequest) (licensing.Key, KeyInfo, error) {
	if err := ctx.Err(); err != nil {
		return licensing.Key{}, KeyInfo{}, err
	}
	now := s.now().UTC()
	if err := checkEdition(req.Edition); err != nil {
		return licensing.Key{}, KeyInfo{}, err
	}
	if req.Seats < 1 || req.Seats > MaxSeats {
		return licensing.Key{}, KeyInfo{}, fmt.Errorf("create key: %w: seats %d, want 1 to %d", ErrInvalidArgument, req.Seats, MaxSeats)
	}
	expires := req.Expires.UTC().Truncate(time.Second)
	if !expires.After(now) {
		return licensing.Key{}, KeyInfo{}, fmt.Errorf("create key: %w: it would expire at %s, which is not in the future", ErrInvalidArgument, expires.Format(time.RFC3339))
	}
	actor, err := checkActor(req.Actor)
	if err != nil {
		return licensing.Key{}, KeyInfo{}, err
	}
	// A new key whose ID is taken (about 2^-50 per stored key) is drawn
	// again; a given key is refused.
	for range 3 {
		key := req.Key
		if key.IsZero() {
			if key, err = licensing.NewKey(); err != nil {
				return licensing.Key{}, KeyInfo{}, err
			}
		}
		h := key.Hash()
		rec := keyRecord{
			ID: key.ID(), Hash: h[:], Edition: req.Edition, Seats: req.Seats, Expires: expires,
			State: licensing.KeyActive, Created: now,
		}
		err = s.db.Update(func(tx *bbolt.Tx) error {
			keys := tx.Bucket(bucketKeys)
			if keys.Get([]byte(rec.ID)) != nil {
				return fmt.Errorf("create key %s: %w", rec.ID, ErrExists)
			}
			if err := putJSON(keys, []byte(rec.ID), rec); err != nil {
				return err
			}
			return appendAudit(tx, AuditRecord{Time: now, Action: AuditKeyCreate, KeyID: rec.ID, Actor: actor,
				Reason: fmt.Sprintf("edition %s, %d seats, expires %s", rec.Edition, rec.Seats, rec.Expires.Format(time.RFC3339))})
		})
		if errors.Is(err, ErrExists) && req.Key.IsZero() {
			continue
		}
		if err != nil {
			return licensing.Key{}, KeyInfo{}, err
		}
		return key, rec.info(0), nil
	}
	return licensing.Key{}, KeyInfo{}, fmt.Errorf("create key: %w", err)
}

// ListKeys returns every key, in ID order.
func (s *Store) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []KeyInfo
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(k, v []byte) error {
			var rec keyRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("key %s: %w", k, err)
			}
			used, err := usedSeats(tx, rec.ID)
			if err != nil {
				return err
			}
			out = append(out, rec.info(used))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return out, nil
}

// ShowKey returns a key with all its activations (active and released, by
// agent fingerprint) and its audit records (oldest first, at most 10000).
func (s *Store) ShowKey(ctx context.Context, keyID string) (KeyDetail, error) {
	if err := ctx.Err(); err != nil {
		return KeyDetail{}, err
	}
	id, err := checkKeyID(keyID)
	if err != nil {
		return KeyDetail{}, err
	}
	var d KeyDetail
	err = s.db.View(func(tx *bbolt.Tx) error {
		rec, err := getKey(tx, id)
		if err != nil {
			return err
		}
		acts, err := activationsOf(tx, id)
		if err != nil {
			return err
		}
		used := 0
		for _, a := range acts {
			if a.Active() {
				used++
			}
		}
		d.Key, d.Activations = rec.info(used), acts
		return tx.Bucket(bucketAudit).ForEach(func(_, v []byte) error {
			var ar AuditRecord
			if err := json.Unmarshal(v, &ar); err != nil {
				return err
			}
			if ar.KeyID == id && len(d.Audit) < auditRecordsPerKeyLimit {
				d.Audit = append(d.Audit, ar)
			}
			return nil
		})
	})
	if err != nil {
		return KeyDetail{}, fmt.Errorf("show key %s: %w", id, err)
	}
	return d, nil
}

// RevokeKey revokes a key: the service refuses its activations and renewals
// from now on (key_revoked), so appliances drop its agents at their next
// renewal. Revoking a revoked key changes nothing.
func (s *Store) RevokeKey(ctx context.Context, keyID, actor, reason string) (KeyInfo, error) {
	if err := ctx.Err(); err != nil {
		return KeyInfo{}, err
	}
	id, err := checkKeyID(keyID)
	if err != nil {
		return KeyInfo{}, err
	}
	if actor, err = checkActor(actor); err != nil {
		return KeyInfo{}, err
	}
	if err := checkReason(reason, false); err != nil {
		return KeyInfo{}, err
	}
	now := s.now().UTC()
	var info KeyInfo
	err = s.db.Update(func(tx *bbolt.Tx) error {
		rec, err := getKey(tx, id)
		if err != nil {
			return err
		}
		used, err := usedSeats(tx, id)
		if err != nil {
			return err
		}
		if rec.State != licensing.KeyRevoked {
			rec.State, rec.Revoked, rec.RevokeReason = licensing.KeyRevoked, now, reason
			if err := putJSON(tx.Bucket(bucketKeys), []byte(id), rec); err != nil {
				return err
			}
			if err := appendAudit(tx, AuditRecord{Time: now, Action: AuditKeyRevoke, KeyID: id, Actor: actor, Reason: reason}); err != nil {
				return err
			}
		}
		info = rec.info(used)
		return nil
	})
	if err != nil {
		return KeyInfo{}, fmt.Errorf("revoke key %s: %w", id, err)
	}
	return info, nil
}

// ForceRelease releases an agent's active activation of a key on the vendor's
// authority, e.g. when its appliance is gone, so that the agent can be
// activated on another appliance. It is audited with the actor and reason.
// The old appliance's next renewal is then a new activation: it succeeds if
// the agent is not active elsewhere by then and a seat is free.
func (s *Store) ForceRelease(ctx context.Context, req ForceReleaseRequest) (ActivationInfo, error) {
	if err := ctx.Err(); err != nil {
		return ActivationInfo{}, err
	}
	id, err := checkKeyID(req.KeyID)
	if err != nil {
		return ActivationInfo{}, err
	}
	if err := licensing.CheckID("agent fingerprint", req.AgentFingerprint); err != nil {
		return ActivationInfo{}, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	actor, err := checkActor(req.Actor)
	if err != nil {
		return ActivationInfo{}, err
	}
	if err := checkReason(req.Reason, true); err != nil {
		return ActivationInfo{}, err
	}
	now := s.now().UTC()
	var info ActivationInfo
	err = s.db.Update(func(tx *bbolt.Tx) error {
		if _, err := getKey(tx, id); err != nil {
			return err
		}
		act, err := getActivation(tx, id, req.AgentFingerprint)
		if err != nil {
			return err
		}
		if act == nil || !act.active() {
			return fmt.Errorf("agent %s has no active activation of key %s: %w", req.AgentFingerprint, id, ErrNotFound)
		}
		if err := release(tx, id, act, now, ReleasedByVendor, req.Reason); err != nil {
			return err
		}
		info = act.info(id)
		return appendAudit(tx, AuditRecord{Time: now, Action: AuditForceRelease, KeyID: id,
			AgentFingerprint: act.AgentFingerprint, ApplianceID: act.ApplianceID, Actor: actor, Reason: req.Reason})
	})
	if err != nil {
		return ActivationInfo{}, fmt.Errorf("force release: %w", err)
	}
	return info, nil
}

// activateParams is one activation request, checked.
type activateParams struct {
	key                        licensing.Key
	appliance, agent, hostname string
	ttl                        time.Duration
	serial                     string
}

// activate takes or renews the agent's seat, deciding and writing in one
// write transaction, and returns the activation to sign. Refusals are
// *licensing.ServiceError.
func (s *Store) activate(now time.Time, p activateParams) (licensing.Activation, error) {
	now = now.UTC().Truncate(time.Second)
	id := p.key.ID()
	var out licensing.Activation
	err := s.db.Update(func(tx *bbolt.Tx) error {
		key, err := lookupKey(tx, p.key, now)
		if err != nil {
			return err
		}
		expires := now.Add(p.ttl)
		if key.Expires.Before(expires) {
			expires = key.Expires
		}
		var replaced *activationRecord // the agent's seat on this appliance under another key
		var replacedKey string
		if prevKey := tx.Bucket(bucketAgents).Get([]byte(p.agent)); prevKey != nil {
			prevID := string(prevKey)
			prev, err := getActivation(tx, prevID, p.agent)
			if err != nil {
				return err
			}
			if prev == nil || !prev.active() {
				return fmt.Errorf("agent index points to key %s without an active activation", prevID)
			}
			prevRec, err := getKey(tx, prevID)
			if err != nil {
				return err
			}
			switch {
			case !prevRec.inForce(now):
				// The key that held the agent is revoked or over: the seat
				// binds nothing any more.
				if err := release(tx, prevID, prev, now, ReleasedByKeyEnd, "the key is "+prevRec.endedWhy()); err != nil {
					return err
				}
				if err := appendAudit(tx, AuditRecord{Time: now, Action: AuditReleaseEndedKey, KeyID: prevID,
					AgentFingerprint: p.agent, ApplianceID: prev.ApplianceID, Reason: "activation with key " + id}); err != nil {
					return err
				}
			case prev.ApplianceID != p.appliance:
				return &licensing.ServiceError{Code: licensing.CodeActiveElsewhere, Message: fmt.Sprintf(
					"agent %s is activated on another appliance; deactivate it there, or ask the vendor to release it", p.agent)}
			case prevID == id:
				// The same agent on the same appliance again: renew, same seat.
				prev.Hostname, prev.Renewed, prev.Expires, prev.Serial = p.hostname, now, expires, p.serial
				if err := putActivation(tx, id, prev); err != nil {
					return err
				}
				out = prev.activation(id, key.Edition)
				return nil
			default:
				replaced, replacedKey = prev, prevID
			}
		}
		used, err := usedSeats(tx, id)
		if err != nil {
			return err
		}
		if used >= key.Seats {
			return &licensing.ServiceError{Code: licensing.CodeNoSeats, Message: fmt.Sprintf(
				"all %d seats of key %s are taken; deactivate an agent or ask the vendor for more seats", key.Seats, id)}
		}
		if replaced != nil {
			if err := release(tx, replacedKey, replaced, now, ReleasedByReplacement, "activated with key "+id); err != nil {
				return err
			}
			if err := appendAudit(tx, AuditRecord{Time: now, Action: AuditReplace, KeyID: replacedKey,
				AgentFingerprint: p.agent, ApplianceID: p.appliance, Reason: "activated with key " + id}); err != nil {
				return err
			}
		}
		act := &activationRecord{
			AgentFingerprint: p.agent, ApplianceID: p.appliance, Hostname: p.hostname,
			Activated: now, Renewed: now, Expires: expires, Serial: p.serial,
		}
		if err := putActivation(tx, id, act); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAgents).Put([]byte(p.agent), []byte(id)); err != nil {
			return err
		}
		out = act.activation(id, key.Edition)
		return appendAudit(tx, AuditRecord{Time: now, Action: AuditActivate, KeyID: id,
			AgentFingerprint: p.agent, ApplianceID: p.appliance, Actor: "appliance " + p.appliance})
	})
	return out, err
}

// deactivate releases the agent's seat of key on appliance. It reports
// whether a seat was released; releasing one that is not held is not an
// error, releasing one held by another appliance is active_elsewhere.
func (s *Store) deactivate(now time.Time, key licensing.Key, appliance, agent string) (bool, error) {
	now = now.UTC().Truncate(time.Second)
	id := key.ID()
	released := false
	err := s.db.Update(func(tx *bbolt.Tx) error {
		if _, err := lookupKeyAnyState(tx, key); err != nil {
			return err
		}
		act, err := getActivation(tx, id, agent)
		if err != nil || act == nil || !act.active() {
			return err
		}
		if act.ApplianceID != appliance {
			return &licensing.ServiceError{Code: licensing.CodeActiveElsewhere, Message: fmt.Sprintf(
				"agent %s is activated with key %s on another appliance, which alone can deactivate it", agent, id)}
		}
		if err := release(tx, id, act, now, ReleasedByAppliance, ""); err != nil {
			return err
		}
		released = true
		return appendAudit(tx, AuditRecord{Time: now, Action: AuditDeactivate, KeyID: id,
			AgentFingerprint: agent, ApplianceID: appliance, Actor: "appliance " + appliance})
	})
	return released, err
}

// status returns the key's state and its active activations on appliance.
func (s *Store) status(key licensing.Key, appliance string) (licensing.KeyStatus, error) {
	var st licensing.KeyStatus
	err := s.db.View(func(tx *bbolt.Tx) error {
		rec, err := lookupKeyAnyState(tx, key)
		if err != nil {
			return err
		}
		acts, err := activationsOf(tx, rec.ID)
		if err != nil {
			return err
		}
		st = licensing.KeyStatus{KeyID: rec.ID, Edition: rec.Edition, State: rec.State, Seats: rec.Seats,
			Expires: rec.Expires, Activations: []licensing.AgentActivation{}}
		for _, a := range acts {
			if !a.Active() {
				continue
			}
			st.Used++
			if a.ApplianceID == appliance {
				st.Activations = append(st.Activations, licensing.AgentActivation{
					AgentFingerprint: a.AgentFingerprint, Hostname: a.Hostname, Activated: a.Activated, Expires: a.Expires})
			}
		}
		return nil
	})
	return st, err
}

// lookupKey returns the record of key if the key is in force at now, and
// the refusal otherwise.
func lookupKey(tx *bbolt.Tx, key licensing.Key, now time.Time) (*keyRecord, error) {
	rec, err := lookupKeyAnyState(tx, key)
	if err != nil {
		return nil, err
	}
	switch {
	case rec.State == licensing.KeyRevoked:
		return nil, &licensing.ServiceError{Code: licensing.CodeKeyRevoked, Message: fmt.Sprintf("key %s has been revoked", rec.ID)}
	case !now.Before(rec.Expires):
		return nil, &licensing.ServiceError{Code: licensing.CodeKeyExpired, Message: fmt.Sprintf("key %s expired at %s", rec.ID, rec.Expires.Format(time.RFC3339))}
	}
	return rec, nil
}

// lookupKeyAnyState returns the record of key, checking the key against the
// stored hash in constant time; key_invalid if there is none.
func lookupKeyAnyState(tx *bbolt.Tx, key licensing.Key) (*keyRecord, error) {
	unknown := &licensing.ServiceError{Code: licensing.CodeKeyInvalid, Message: fmt.Sprintf("there is no product key %s", key.ID())}
	rec, err := getKey(tx, key.ID())
	if errors.Is(err, ErrNotFound) {
		return nil, unknown
	}
	if err != nil {
		return nil, err
	}
	h := key.Hash()
	if subtle.ConstantTimeCompare(h[:], rec.Hash) != 1 {
		return nil, unknown
	}
	return rec, nil
}

// getKey reads the record of key ID id; ErrNotFound if there is none.
func getKey(tx *bbolt.Tx, id string) (*keyRecord, error) {
	v := tx.Bucket(bucketKeys).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("key %s: %w", id, ErrNotFound)
	}
	var rec keyRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("key %s: %w", id, err)
	}
	return &rec, nil
}

// getActivation reads the agent's activation of key ID id; nil if there is
// none.
func getActivation(tx *bbolt.Tx, id, agent string) (*activationRecord, error) {
	b := tx.Bucket(bucketActivations).Bucket([]byte(id))
	if b == nil {
		return nil, nil
	}
	v := b.Get([]byte(agent))
	if v == nil {
		return nil, nil
	}
	var a activationRecord
	if err := json.Unmarshal(v, &a); err != nil {
		return nil, fmt.Errorf("activation of key %s by agent %s: %w", id, agent, err)
	}
	return &a, nil
}

// putActivation writes the agent's activation of key ID id.
func putActivation(tx *bbolt.Tx, id string, a *activationRecord) error {
	b, err := tx.Bucket(bucketActivations).CreateBucketIfNotExists([]byte(id))
	if err != nil {
		return err
	}
	return putJSON(b, []byte(a.AgentFingerprint), a)
}

// release marks a's seat of key ID id released and drops the agent from the
// index.
func release(tx *bbolt.Tx, id string, a *activationRecord, now time.Time, by, reason string) error {
	a.Released, a.ReleasedBy, a.ReleaseReason = now, by, reason
	if err := putActivation(tx, id, a); err != nil {
		return err
	}
	agents := tx.Bucket(bucketAgents)
	if string(agents.Get([]byte(a.AgentFingerprint))) == id {
		return agents.Delete([]byte(a.AgentFingerprint))
	}
	return nil
}

// activationsOf returns every activation of key ID id, by agent fingerprint.
func activationsOf(tx *bbolt.Tx, id string) ([]ActivationInfo, error) {
	b := tx.Bucket(bucketActivations).Bucket([]byte(id))
	if b == nil {
		return nil, nil
	}
	var out []ActivationInfo
	err := b.ForEach(func(_, v []byte) error {
		var a activationRecord
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		out = append(out, a.info(id))
		return nil
	})
	return out, err
}

// usedSeats counts the active activations of key ID id.
func usedSeats(tx *bbolt.Tx, id string) (int, error) {
	acts, err := activationsOf(tx, id)
	n := 0
	for _, a := range acts {
		if a.Active() {
			n++
		}
	}
	return n, err
}

// appendAudit appends r to the audit log with the next sequence number.
func appendAudit(tx *bbolt.Tx, r AuditRecord) error {
	b := tx.Bucket(bucketAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	r.Seq = seq
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return putJSON(b, k[:], r)
}

func putJSON(b *bbolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}

func (k *keyRecord) info(used int) KeyInfo {
	return KeyInfo{ID: k.ID, Edition: k.Edition, Seats: k.Seats, Used: used, Expires: k.Expires, State: k.State,
		Created: k.Created, Revoked: k.Revoked, RevokeReason: k.RevokeReason}
}

// endedWhy says why a key that is not in force ended.
func (k *keyRecord) endedWhy() string {
	if k.State == licensing.KeyRevoked {
		return "revoked"
	}
	return "expired"
}

func (a *activationRecord) info(keyID string) ActivationInfo {
	return ActivationInfo{KeyID: keyID, AgentFingerprint: a.AgentFingerprint, ApplianceID: a.ApplianceID, Hostname: a.Hostname,
		Activated: a.Activated, Renewed: a.Renewed, Expires: a.Expires, Serial: a.Serial,
		Released: a.Released, ReleasedBy: a.ReleasedBy, ReleaseReason: a.ReleaseReason}
}

// activation returns what the service signs for a.
func (a *activationRecord) activation(keyID, edition string) licensing.Activation {
	return licensing.Activation{KeyID: keyID, AgentFingerprint: a.AgentFingerprint, ApplianceID: a.ApplianceID,
		Hostname: a.Hostname, Edition: edition, Issued: a.Renewed, Expires: a.Expires, Serial: a.Serial}
}

func checkKeyID(s string) (string, error) {
	id, err := licensing.ParseKeyID(s)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	return id, nil
}

func checkEdition(e string) error {
	if e == "" || len(e) > maxEditionLen {
		return fmt.Errorf("%w: edition must be 1 to %d characters", ErrInvalidArgument, maxEditionLen)
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		alnum := 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '-' && c != '_' && c != '.') {
			return fmt.Errorf("%w: edition must be of [a-z0-9._-], starting with a letter or digit", ErrInvalidArgument)
		}
	}
	return nil
}

func checkActor(a string) (string, error) {
	if a == "" {
		return defaultActor, nil
	}
	if err := licensing.CheckHostname(a); err != nil || len(a) > licensing.MaxIDLen {
		return "", fmt.Errorf("%w: actor must be up to %d printable characters", ErrInvalidArgument, licensing.MaxIDLen)
	}
	return a, nil
}

func checkReason(r string, required bool) error {
	if required && r == "" {
		return fmt.Errorf("%w: a reason is required (it goes to the audit log)", ErrInvalidArgument)
	}
	if err := licensing.CheckHostname(r); err != nil || len(r) > maxReasonLen {
		return fmt.Errorf("%w: reason must be up to %d printable characters", ErrInvalidArgument, maxReasonLen)
	}
	return nil
}

// newSerial returns a random activation serial: 16 Crockford base32 symbols
// (80 bits).
func newSerial() (string, error) {
	var b [serialSymbols]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = crockford[b[i]&31]
	}
	return string(b[:]), nil
}
