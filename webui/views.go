package webui

import (
	"encoding/json"
	"time"

	"github.com/cairnbackup/cairn/pairing"
)

// The API's JSON as the pages read it (docs/api.md). Only the fields the
// pages show are here; the UI never imports the appliance.

type agentView struct {
	ID          string `json:"id"`
	Hostname    string `json:"hostname"`
	Address     string `json:"address"`
	Fingerprint string `json:"fingerprint"`
	Mode        string `json:"mode"`
	Dataset     string `json:"dataset"`
	Connected   bool   `json:"connected"`
	Session     *struct {
		Mode           string        `json:"mode"`
		RemoteAddr     string        `json:"remote_addr"`
		Hostname       string        `json:"hostname"`
		OS             string        `json:"os"`
		AgentVersion   string        `json:"agent_version"`
		ConnectedSince time.Time     `json:"connected_since"`
		LastSeen       time.Time     `json:"last_seen"`
		RTT            time.Duration `json:"rtt_ns"`
		LastDuplicate  *duplicate    `json:"last_duplicate"`
	} `json:"session"`
	Settings *pairing.Settings `json:"settings"`
	License  *struct {
		State   string    `json:"state"`
		Reason  string    `json:"reason"`
		Expires time.Time `json:"expires"`
	} `json:"license"`
	FingerprintConfirmedAt *time.Time     `json:"fingerprint_confirmed_at"`
	LastBackup             *backupSummary `json:"last_backup"`
	RunningBackup          *backupSummary `json:"running_backup"`
	NextBackup             *time.Time     `json:"next_backup"`
	RecoveryPoints         int            `json:"recovery_points"`
	UsedBytes              *int64         `json:"used_bytes"`
}

// Unconfirmed reports whether the agent's key is pinned but the operator
// has not confirmed it.
func (a agentView) Unconfirmed() bool { return a.Fingerprint != "" && a.FingerprintConfirmedAt == nil }

// backupSummary is a backup job as the agents listing shows it.
type backupSummary struct {
	JobID      uint64    `json:"job_id"`
	State      string    `json:"state"`
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished"`
	Bytes      int64     `json:"bytes"`
	BytesDone  int64     `json:"bytes_done"`
	BytesTotal int64     `json:"bytes_total"`
	Error      string    `json:"error"`
}

// Percent is how far a running backup has read, 0 to 100.
func (b backupSummary) Percent() int { return percent(b.BytesDone, b.BytesTotal) }

// storageView is GET /api/v1/storage.
type storageView struct {
	Pool           string `json:"pool"`
	Kind           string `json:"kind"`
	UsedBytes      int64  `json:"used_bytes"`
	AvailableBytes int64  `json:"available_bytes"`
	TotalBytes     int64  `json:"total_bytes"`
}

// Percent is the share of the pool in use, 0 to 100.
func (s storageView) Percent() int { return percent(s.UsedBytes, s.TotalBytes) }

// percent is part of whole, 0 to 100 (0 for no whole).
func percent(part, whole int64) int {
	if whole <= 0 {
		return 0
	}
	return int(max(0, min(100, part*100/whole)))
}

// setupTokenView is a setup token in GET /api/setup-tokens.
type setupTokenView struct {
	ID        string    `json:"id"`
	Label     string    `json:"label"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	MaxUses   int       `json:"max_uses"`
	Uses      int       `json:"uses"`
	RevokedAt time.Time `json:"revoked_at"`
	State     string    `json:"state"`
}

type duplicate struct {
	At         time.Time `json:"at"`
	RemoteAddr string    `json:"remote_addr"`
	Count      int       `json:"count"`
}

type stepView struct {
	Step     string          `json:"step"`
	Status   string          `json:"status"`
	Detail   string          `json:"detail"`
	Remedy   string          `json:"remedy"`
	Code     string          `json:"code"`
	Data     json.RawMessage `json:"data"`
	Started  time.Time       `json:"started"`
	Finished time.Time       `json:"finished"`
	Attempts int             `json:"attempts"`
}

type pairingView struct {
	ID        uint64           `json:"id"`
	Target    string           `json:"target"`
	Port      int              `json:"port"`
	AgentID   string           `json:"agent_id"`
	Mode      string           `json:"mode"`
	State     string           `json:"state"`
	Settings  pairing.Settings `json:"settings"`
	Steps     []stepView       `json:"steps"`
	CreatedAt time.Time        `json:"created_at"`
	UpdatedAt time.Time        `json:"updated_at"`
	// FingerprintConfirmedAt is when the operator confirmed the agent's
	// key; nil until then.
	FingerprintConfirmedAt *time.Time `json:"fingerprint_confirmed_at"`
}

// step returns the named step, or nil.
func (p pairingView) step(name string) *stepView {
	for i := range p.Steps {
		if p.Steps[i].Step == name {
			return &p.Steps[i]
		}
	}
	return nil
}

// connectData is the Connect step's data: the agent's identity.
type connectData struct {
	Address      string `json:"address"`
	Fingerprint  string `json:"fingerprint"`
	Short        string `json:"short"`
	Hostname     string `json:"hostname"`
	OS           string `json:"os"`
	AgentVersion string `json:"agent_version"`
}

type volumeView struct {
	ID          string   `json:"id"`
	Path        string   `json:"path"`
	SizeBytes   uint64   `json:"size_bytes"`
	Filesystem  string   `json:"filesystem"`
	MountPoints []string `json:"mount_points"`
}

type writerView struct {
	Name      string `json:"name"`
	ID        string `json:"id"`
	State     string `json:"state"`
	LastError string `json:"last_error"`
}

// inspectData is the Inspect step's data.
type inspectData struct {
	Volumes          []volumeView `json:"volumes"`
	Writers          []writerView `json:"writers"`
	SnapshotProvider string       `json:"snapshot_provider"`
}

// pairingPage is the live view of one pairing.
type pairingPage struct {
	Pairing pairingView
	Running bool
	Connect *connectData
	Inspect *inspectData
}

func newPairingPage(p pairingView) pairingPage {
	pp := pairingPage{Pairing: p, Running: p.State == "running"}
	if s := p.step(pairing.StepConnect); s != nil && len(s.Data) > 0 {
		var d connectData
		if json.Unmarshal(s.Data, &d) == nil && d.Fingerprint != "" {
			pp.Connect = &d
		}
	}
	if s := p.step(pairing.StepInspect); s != nil && len(s.Data) > 0 {
		var d inspectData
		if json.Unmarshal(s.Data, &d) == nil {
			pp.Inspect = &d
		}
	}
	return pp
}

type tokenView struct {
	ID          uint64    `json:"id"`
	AgentID     string    `json:"agent_id"`
	Fingerprint string    `json:"fingerprint"`
	Source      string    `json:"source"`
	CreatedAt   time.Time `json:"created_at"`
	BoundAt     time.Time `json:"bound_at"`
	RevokedAt   time.Time `json:"revoked_at"`
	LastSeenAt  time.Time `json:"last_seen_at"`
	LastAddr    string    `json:"last_addr"`
}

type auditView struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail"`
}
