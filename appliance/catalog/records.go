package catalog

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Agent connection modes.
const (
	// ModeDirect: the appliance connects to the agent.
	ModeDirect = "direct"
	// ModeReverse: the agent connects to the appliance.
	ModeReverse = "reverse"
)

// Job kinds used by the appliance. Other lowercase kinds are accepted.
const (
	JobBackup  = "backup"
	JobVerify  = "verify"
	JobOffsite = "offsite"
)

// Job states.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCanceled  = "canceled"
)

// Agent is a protected machine.
type Agent struct {
	// ID names the agent everywhere, including as a ZFS dataset name
	// component: 1 to 64 characters of [a-z0-9-], not starting with '-'.
	ID          string `json:"id"`
	Hostname    string `json:"hostname"`
	Address     string `json:"address"`     // host:port the appliance dials (ModeDirect)
	Fingerprint string `json:"fingerprint"` // pinned agent certificate fingerprint
	Mode        string `json:"mode"`        // ModeDirect or ModeReverse
	Dataset     string `json:"dataset"`     // ZFS dataset holding the agent's backups
	// CreatedAt is set on the first PutAgent and kept by later ones;
	// UpdatedAt is set by every PutAgent.
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// FingerprintConfirmedAt is when the operator confirmed that
	// Fingerprint is the key of the machine they meant (compared with
	// "cairn-agent fingerprint" on it); zero until then. PutAgent clears
	// it when Fingerprint changes.
	FingerprintConfirmedAt time.Time `json:"fingerprint_confirmed_at,omitzero"`
}

// Retention says how many recovery points to keep: the newest KeepLast,
// plus the newest one in each of the last KeepHourly hours, KeepDaily days
// and so on. Zero keeps none for that rule.
type Retention struct {
	KeepLast    int `json:"keep_last"`
	KeepHourly  int `json:"keep_hourly"`
	KeepDaily   int `json:"keep_daily"`
	KeepWeekly  int `json:"keep_weekly"`
	KeepMonthly int `json:"keep_monthly"`
}

// Settings are an agent's backup policy.
type Settings struct {
	AgentID          string    `json:"agent_id"`
	BackupSchedule   string    `json:"backup_schedule"` // cron spec; not parsed here
	Retention        Retention `json:"retention"`
	OffsiteSchedule  string    `json:"offsite_schedule"` // cron spec; empty = no offsite copies
	OffsiteRetention Retention `json:"offsite_retention"`
	Volumes          []string  `json:"volumes"`    // volumes to back up; empty = all
	UpdatedAt        time.Time `json:"updated_at"` // set by PutSettings
}

// RecoveryPoint is one backup of an agent: a ZFS snapshot of its dataset.
type RecoveryPoint struct {
	AgentID string `json:"agent_id"`
	// Snapshot is the snapshot name (the part after '@'): 1 to 64
	// characters of [A-Za-z0-9_.:-], not starting with '-' or '.'.
	Snapshot  string    `json:"snapshot"`
	CreatedAt time.Time `json:"created_at"` // required; orders the listing
	Bytes     int64     `json:"bytes"`
	Volumes   []string  `json:"volumes"`
	// VerifiedAt is when the point last passed verification; zero if never.
	VerifiedAt time.Time `json:"verified_at,omitzero"`
	// JobID is the backup job that made the point; 0 if unknown.
	JobID uint64 `json:"job_id,omitempty"`
	// BlockSize is the block size of the backup (bytes); 0 if unknown.
	BlockSize int `json:"block_size,omitempty"`
	// Changed is the bytes of blocks the backup wrote.
	Changed int64 `json:"changed,omitempty"`
	// Images describes each volume's image in the snapshot, in the order
	// of Volumes.
	Images []PointImage `json:"images,omitempty"`
}

// PointImage is one volume of a recovery point: its image in the agent's
// dataset and the block hashes (the image named Hashes, 32 bytes per
// block) stored beside it in the same snapshot.
type PointImage struct {
	VolumeID string `json:"volume_id"`
	Image    string `json:"image"`
	Hashes   string `json:"hashes"`
	Size     int64  `json:"size"`
	Blocks   int64  `json:"blocks"`
	// Manifest is the volume's manifest (SHA-256 of its block hashes in
	// order), in hex.
	Manifest string `json:"manifest"`
	// Incremental is true when the agent sent only changed blocks.
	Incremental bool `json:"incremental,omitempty"`
}

// DirtyImage records that a live image of an agent's dataset may differ
// from the image in the agent's last recovery point in blocks [0, Blocks):
// a backup wrote there and has not (yet) made a recovery point. It is
// stored before those writes and deleted with the recovery point that
// includes them.
type DirtyImage struct {
	AgentID   string    `json:"agent_id"`
	Image     string    `json:"image"`
	VolumeID  string    `json:"volume_id"`
	BlockSize int       `json:"block_size"`
	Blocks    int64     `json:"blocks"`
	JobID     uint64    `json:"job_id"`
	UpdatedAt time.Time `json:"updated_at"`
}

// JobProgress is how far a running job has got. For a backup, BytesDone
// and BytesTotal are the bytes the agent has read and will read in all.
type JobProgress struct {
	BytesDone  int64 `json:"bytes_done"`
	BytesTotal int64 `json:"bytes_total"`
	// BytesSent is block data received from the agent (as sent, possibly
	// compressed); BytesWritten is block data written to images.
	BytesSent    int64 `json:"bytes_sent,omitempty"`
	BytesWritten int64 `json:"bytes_written,omitempty"`
	// Rate is bytes done per second since the job started; ETASeconds the
	// estimated time left at that rate (0 if unknown).
	Rate       int64 `json:"rate,omitempty"`
	ETASeconds int64 `json:"eta_seconds,omitempty"`
}

// Job is one unit of work run by the appliance, kept as history after it
// finishes.
type Job struct {
	ID       uint64      `json:"id"`       // assigned by PutJob when zero
	AgentID  string      `json:"agent_id"` // empty for appliance-wide jobs
	Kind     string      `json:"kind"`     // JobBackup, JobVerify, JobOffsite, ...
	State    string      `json:"state"`    // JobQueued, JobRunning, ...
	Created  time.Time   `json:"created"`  // set by PutJob when zero
	Started  time.Time   `json:"started,omitzero"`
	Finished time.Time   `json:"finished,omitzero"`
	Error    string      `json:"error,omitempty"`
	Progress JobProgress `json:"progress"`
	// Snapshot is the recovery point the job made (backup) or checked
	// (verify).
	Snapshot string `json:"snapshot,omitempty"`
	// Detail is a short account of the job for the operator.
	Detail string `json:"detail,omitempty"`
}

// AuditEvent records who did what. The audit log is append-only.
type AuditEvent struct {
	Seq    uint64    `json:"seq"`  // assigned by Tx.Audit
	Time   time.Time `json:"time"` // set by Tx.Audit when zero
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail"`
}

// Agent token sources (AgentToken.Source).
const (
	// TokenSourceOperator marks a token issued by an operator.
	TokenSourceOperator = "operator"
	// TokenSourceSetupPrefix, followed by a setup token ID, marks a token
	// obtained by exchanging that setup token (Tx.UseSetupToken).
	TokenSourceSetupPrefix = "setup:"
)

// SetupTokenIDLen is the length of a SetupToken.ID.
const SetupTokenIDLen = 12

// AgentToken is the credential of a reverse-mode agent ("ID|SECRET" on the
// agent's side). The catalog never holds the secret, only its SHA-256.
type AgentToken struct {
	ID         uint64   `json:"id"`          // assigned by AddAgentToken (bucket sequence), starts at 1
	AgentID    string   `json:"agent_id"`    // the agent it belongs to (Agent.ID rule); required
	SecretHash [32]byte `json:"secret_hash"` // SHA-256 of the secret; required (non-zero); stored as hex
	// Fingerprint is the agent key ("SHA256:…") the token was bound to on
	// its first connection; empty until then. Once set it cannot change.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Source is TokenSourceOperator or TokenSourceSetupPrefix followed by
	// the ID of the setup token it was exchanged for. It cannot change.
	Source     string    `json:"source"`
	CreatedAt  time.Time `json:"created_at"` // set by AddAgentToken
	BoundAt    time.Time `json:"bound_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"` // once set, cannot change
	LastSeenAt time.Time `json:"last_seen_at,omitzero"`
	LastAddr   string    `json:"last_addr,omitempty"` // remote address of the last connection
}

// Revoked reports whether the token has been revoked.
func (t AgentToken) Revoked() bool { return !t.RevokedAt.IsZero() }

// SetupToken lets install scripts get agent tokens: each agent key may
// exchange it once, up to MaxUses agents, until ExpiresAt. The catalog
// never holds the secret, only its SHA-256.
type SetupToken struct {
	ID         string    `json:"id"`          // public part, SetupTokenIDLen characters of [0-9A-Za-z]; the key
	SecretHash [32]byte  `json:"secret_hash"` // SHA-256 of the secret; required (non-zero); stored as hex
	Label      string    `json:"label"`
	CreatedAt  time.Time `json:"created_at"` // set by AddSetupToken
	ExpiresAt  time.Time `json:"expires_at"` // required, after CreatedAt
	MaxUses    int       `json:"max_uses"`   // >= 1
	UsedBy     []string  `json:"used_by"`    // agent key fingerprints that exchanged it, in order
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
}

// Revoked reports whether the setup token has been revoked.
func (s SetupToken) Revoked() bool { return !s.RevokedAt.IsZero() }

// Pairing states (Pairing.State).
const (
	PairingRunning  = "running"
	PairingFailed   = "failed"
	PairingDone     = "done"
	PairingCanceled = "canceled"
)

// Pairing is one run of the pairing steps for a machine (ARCHITECTURE.md
// "Pairing, step by step"). The agent need not exist in the catalog yet.
type Pairing struct {
	ID uint64 `json:"id"` // assigned by AddPairing (bucket sequence), starts at 1
	// Target is the hostname, FQDN or IP the operator typed: required for
	// ModeDirect, empty for a reverse-mode agent. At most 255 bytes, no
	// spaces or control characters.
	Target string `json:"target"`
	// Port is the agent's port for ModeDirect, 0 for the default; 0 for
	// ModeReverse.
	Port    int    `json:"port,omitempty"`
	AgentID string `json:"agent_id"` // Agent.ID rule; required; cannot change
	Mode    string `json:"mode"`     // ModeDirect or ModeReverse; cannot change
	// KeyID is the product key's non-secret ID, empty until known. At most
	// 128 bytes, no spaces or control characters.
	KeyID string `json:"key_id,omitempty"`
	// Settings are the wizard's settings (pairing.Settings) and Steps the
	// step results so far ([]pairing.StepResult), opaque here. Each must
	// be valid JSON or empty; empty is stored, and read back, as null.
	Settings  json.RawMessage `json:"settings"`
	Steps     json.RawMessage `json:"steps"`
	State     string          `json:"state"`      // PairingRunning, PairingFailed, PairingDone or PairingCanceled
	CreatedAt time.Time       `json:"created_at"` // set by AddPairing
	UpdatedAt time.Time       `json:"updated_at"` // set by AddPairing and PutPairing
}

// Activation is an agent's license activation as signed by the activation
// service; the appliance verifies it offline. The catalog does not check
// the signature. The agent need not exist in the catalog yet.
type Activation struct {
	AgentID     string          `json:"agent_id"`     // the key of the record; Agent.ID rule
	KeyID       string          `json:"key_id"`       // required; the rule of Pairing.KeyID
	Signed      json.RawMessage `json:"signed"`       // the signed activation, opaque here; required, valid JSON
	Expires     time.Time       `json:"expires"`      // required
	ValidatedAt time.Time       `json:"validated_at"` // last successful check with the service
	// LastError is the last failed check, for the grace period, and
	// LastErrorAt its time: both set or both empty.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// hexHash is a SHA-256 hash that encodes as 64 hex digits in JSON.
type hexHash [32]byte

func (h hexHash) MarshalText() ([]byte, error) {
	return hex.AppendEncode(nil, h[:]), nil
}

func (h *hexHash) UnmarshalText(text []byte) error {
	if hex.DecodedLen(len(text)) != len(h) {
		return fmt.Errorf("hash %q: want %d hex digits", text, 2*len(h))
	}
	_, err := hex.Decode(h[:], text)
	return err
}

// The JSON methods below store SecretHash as hex: an outer field with the
// same JSON name hides the embedded one.

type agentTokenFields AgentToken // without the methods

// MarshalJSON encodes the token with SecretHash as a hex string.
func (t AgentToken) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		agentTokenFields
		SecretHash hexHash `json:"secret_hash"`
	}{agentTokenFields(t), hexHash(t.SecretHash)})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (t *AgentToken) UnmarshalJSON(data []byte) error {
	v := struct {
		*agentTokenFields
		SecretHash hexHash `json:"secret_hash"`
	}{agentTokenFields: (*agentTokenFields)(t)}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	t.SecretHash = v.SecretHash
	return nil
}

type setupTokenFields SetupToken // without the methods

// MarshalJSON encodes the setup token with SecretHash as a hex string.
func (s SetupToken) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		setupTokenFields
		SecretHash hexHash `json:"secret_hash"`
	}{setupTokenFields(s), hexHash(s.SecretHash)})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (s *SetupToken) UnmarshalJSON(data []byte) error {
	v := struct {
		*setupTokenFields
		SecretHash hexHash `json:"secret_hash"`
	}{setupTokenFields: (*setupTokenFields)(s)}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	s.SecretHash = v.SecretHash
	return nil
}

// validAgentID checks the agent ID rule documented on Agent.ID.
func validAgentID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("agent ID %q: must be 1 to 64 characters: %w", id, ErrInvalid)
	}
	if id[0] == '-' {
		return fmt.Errorf("agent ID %q: must not start with '-': %w", id, ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("agent ID %q: character %q not allowed: %w", id, c, ErrInvalid)
		}
	}
	return nil
}

// validSnapshot checks the snapshot name rule documented on
// RecoveryPoint.Snapshot (the same rule as zfs.ValidComponent).
func validSnapshot(name string) error {
	if name == "" || len(name) > 64 || name[0] == '-' || name[0] == '.' {
		return fmt.Errorf("snapshot name %q: must be 1 to 64 characters, not starting with '-' or '.': %w", name, ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return fmt.Errorf("snapshot name %q: character %q not allowed: %w", name, c, ErrInvalid)
		}
	}
	return nil
}

func validRetention(what string, r Retention) error {
	if r.KeepLast < 0 || r.KeepHourly < 0 || r.KeepDaily < 0 || r.KeepWeekly < 0 || r.KeepMonthly < 0 {
		return fmt.Errorf("%s: negative count: %w", what, ErrInvalid)
	}
	return nil
}

func validJobState(s string) bool {
	switch s {
	case JobQueued, JobRunning, JobSucceeded, JobFailed, JobCanceled:
		return true
	}
	return false
}

// validJobKind accepts 1 to 32 characters of [a-z-].
func validJobKind(k string) bool {
	if k == "" || len(k) > 32 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; !(c >= 'a' && c <= 'z' || c == '-') {
			return false
		}
	}
	return true
}

// validSetupTokenID checks the rule documented on SetupToken.ID.
func validSetupTokenID(id string) error {
	if len(id) != SetupTokenIDLen {
		return fmt.Errorf("setup token ID %q: must be %d characters: %w", id, SetupTokenIDLen, ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return fmt.Errorf("setup token ID %q: character %q not allowed: %w", id, c, ErrInvalid)
		}
	}
	return nil
}

// validTokenSource checks the rule documented on AgentToken.Source.
func validTokenSource(src string) error {
	if src == TokenSourceOperator {
		return nil
	}
	if id, ok := strings.CutPrefix(src, TokenSourceSetupPrefix); ok && validSetupTokenID(id) == nil {
		return nil
	}
	return fmt.Errorf("token source %q: want %q or %q followed by a setup token ID: %w", src, TokenSourceOperator, TokenSourceSetupPrefix, ErrInvalid)
}

func validPairingState(s string) bool {
	switch s {
	case PairingRunning, PairingFailed, PairingDone, PairingCanceled:
		return true
	}
	return false
}

// validToken checks that s has at most max bytes and no spaces or control
// characters (what an operator types as a host name, or a key ID).
func validToken(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s %q: longer than %d bytes: %w", what, s, max, ErrInvalid)
	}
	for _, r := range s {
		if r <= ' ' || unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError {
			return fmt.Errorf("%s %q: character %q not allowed: %w", what, s, r, ErrInvalid)
		}
	}
	return nil
}

// validRawJSON accepts empty (stored as null) or valid JSON.
func validRawJSON(what string, raw json.RawMessage) error {
	if len(raw) != 0 && !json.Valid(raw) {
		return fmt.Errorf("%s: not valid JSON: %w", what, ErrInvalid)
	}
	return nil
}

// validPairing checks the rules documented on Pairing, but not ID.
func validPairing(p Pairing) error {
	if err := validAgentID(p.AgentID); err != nil {
		return err
	}
	switch p.Mode {
	case ModeDirect:
		if p.Target == "" {
			return fmt.Errorf("no target for a %s pairing: %w", p.Mode, ErrInvalid)
		}
		if p.Port < 0 || p.Port > 65535 {
			return fmt.Errorf("port %d out of range: %w", p.Port, ErrInvalid)
		}
	case ModeReverse:
		if p.Target != "" || p.Port != 0 {
			return fmt.Errorf("target %q port %d given for a %s pairing: %w", p.Target, p.Port, p.Mode, ErrInvalid)
		}
	default:
		return fmt.Errorf("mode %q: want %q or %q: %w", p.Mode, ModeDirect, ModeReverse, ErrInvalid)
	}
	if err := validToken("target", p.Target, 255); err != nil {
		return err
	}
	if err := validToken("key ID", p.KeyID, 128); err != nil {
		return err
	}
	if !validPairingState(p.State) {
		return fmt.Errorf("state %q: want %q, %q, %q or %q: %w", p.State, PairingRunning, PairingFailed, PairingDone, PairingCanceled, ErrInvalid)
	}
	if err := validRawJSON("settings", p.Settings); err != nil {
		return err
	}
	return validRawJSON("steps", p.Steps)
}

// validActivation checks the rules documented on Activation.
func validActivation(a Activation) error {
	if err := validAgentID(a.AgentID); err != nil {
		return err
	}
	if a.KeyID == "" {
		return fmt.Errorf("no key ID: %w", ErrInvalid)
	}
	if err := validToken("key ID", a.KeyID, 128); err != nil {
		return err
	}
	if len(a.Signed) == 0 {
		return fmt.Errorf("no signed activation: %w", ErrInvalid)
	}
	if err := validRawJSON("signed activation", a.Signed); err != nil {
		return err
	}
	if a.Expires.IsZero() {
		return fmt.Errorf("no expiry: %w", ErrInvalid)
	}
	if (a.LastError == "") != a.LastErrorAt.IsZero() {
		return fmt.Errorf("last error %q at %v: set both or neither: %w", a.LastError, a.LastErrorAt, ErrInvalid)
	}
	return nil
}
