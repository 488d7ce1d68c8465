package appliance

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/gateway"
)

// AgentInfo is one agent in GET /api/agents and GET /api/v1/agents: the
// catalog record and, when connected, its session; its settings, license,
// backups and storage.
type AgentInfo struct {
	catalog.Agent
	// FingerprintConfirmedAt is when the operator confirmed the agent's
	// key; null until then (it hides the catalog field, which is left
	// out when zero).
	FingerprintConfirmedAt *time.Time        `json:"fingerprint_confirmed_at"`
	Connected              bool              `json:"connected"`
	Session                *gateway.Status   `json:"session,omitempty"`
	Settings               *catalog.Settings `json:"settings,omitempty"`
	License                *LicenseInfo      `json:"license,omitempty"`
	// LastBackup is the newest backup job that has ended; null if none.
	LastBackup *BackupSummary `json:"last_backup"`
	// RunningBackup is the backup job queued or running now; null if
	// none.
	RunningBackup *BackupSummary `json:"running_backup"`
	// NextBackup is when the scheduler starts the next backup; null if it
	// starts none (no dataset, no schedule).
	NextBackup *time.Time `json:"next_backup"`
	// RecoveryPoints is how many recovery points the agent has.
	RecoveryPoints int `json:"recovery_points"`
	// UsedBytes is the space the agent's dataset takes in the pool (data
	// and snapshots); null if it has no dataset or the pool cannot tell.
	UsedBytes *int64 `json:"used_bytes"`
}

// BackupSummary is a backup job as the agents listing shows it.
type BackupSummary struct {
	JobID    uint64    `json:"job_id"`
	State    string    `json:"state"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// Bytes is the block data the backup wrote (for an incremental, what
	// changed); BytesDone and BytesTotal what the agent has read and
	// reads in all.
	Bytes      int64  `json:"bytes"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	Error      string `json:"error,omitempty"`
	Snapshot   string `json:"snapshot,omitempty"`
}

func summarize(j catalog.Job) *BackupSummary {
	return &BackupSummary{JobID: j.ID, State: j.State, Started: j.Started, Finished: j.Finished, Bytes: j.Progress.BytesWritten,
		BytesDone: j.Progress.BytesDone, BytesTotal: j.Progress.BytesTotal, Error: j.Error, Snapshot: j.Snapshot}
}

func jobEnded(state string) bool { return state != catalog.JobQueued && state != catalog.JobRunning }

func (a *Appliance) apiAgents(w http.ResponseWriter, r *http.Request) {
	live := make(map[string]gateway.Status)
	for _, st := range a.gw.Connected() {
		live[st.AgentID] = st
	}
	var out []AgentInfo
	active := make(map[string]uint64) // agent → its queued or running backup job
	if err := a.catalog.View(r.Context(), func(tx *catalog.Tx) error {
		agents, err := tx.Agents()
		if err != nil {
			return err
		}
		jobs, err := tx.Jobs("")
		if err != nil {
			return err
		}
		last := make(map[string]catalog.Job)
		for _, j := range jobs { // oldest first: the last one seen wins
			switch {
			case j.Kind != catalog.JobBackup:
			case jobEnded(j.State):
				last[j.AgentID] = j
			default:
				active[j.AgentID] = j.ID
			}
		}
		now := time.Now()
		out = make([]AgentInfo, 0, len(agents))
		for _, ag := range agents {
			info := AgentInfo{Agent: ag}
			if t := ag.FingerprintConfirmedAt; !t.IsZero() {
				info.FingerprintConfirmedAt = &t
			}
			if st, ok := live[ag.ID]; ok {
				info.Connected, info.Session = true, &st
			}
			if s, err := tx.Settings(ag.ID); err == nil {
				info.Settings = &s
				if next, ok := a.backups.NextBackup(ag, s); ok {
					info.NextBackup = &next
				}
			}
			if act, err := tx.Activation(ag.ID); err == nil {
				v := a.pairer.Verdict(act, ag.Fingerprint, now)
				info.License = &LicenseInfo{KeyID: act.KeyID, Expires: act.Expires, ValidatedAt: act.ValidatedAt,
					State: v.State.String(), Reason: v.Reason, GraceUntil: v.GraceUntil}
			}
			if j, ok := last[ag.ID]; ok {
				info.LastBackup = summarize(j)
			}
			if info.RecoveryPoints, err = tx.RecoveryPointCount(ag.ID); err != nil {
				return err
			}
			out = append(out, info)
		}
		return nil
	}); err != nil {
		writeErr(w, err)
		return
	}
	// Outside the catalog transaction: the live jobs and the pool.
	used := a.datasetUsage(r.Context())
	for i := range out {
		info := &out[i]
		if id, ok := active[info.ID]; ok {
			if j, err := a.backups.Job(r.Context(), id); err == nil && !jobEnded(j.State) {
				info.RunningBackup = summarize(j)
			}
		}
		if n, ok := used[info.Dataset]; ok && info.Dataset != "" {
			info.UsedBytes = &n
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// datasetUsage returns the Used bytes of each dataset of the pool by
// name; empty if the pool cannot tell (logged).
func (a *Appliance) datasetUsage(ctx context.Context) map[string]int64 {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ds, err := a.pool.Datasets(ctx)
	if err != nil {
		a.log.Warn("agents listing: dataset usage", "err", err)
		return nil
	}
	used := make(map[string]int64, len(ds))
	for _, d := range ds {
		used[d.Name.String()] = d.Used
	}
	return used
}

// StorageInfo is the body of GET /api/v1/storage: the pool's space in
// bytes. TotalBytes is UsedBytes + AvailableBytes.
type StorageInfo struct {
	Pool           string `json:"pool"`
	Kind           string `json:"kind"`
	UsedBytes      int64  `json:"used_bytes"`
	AvailableBytes int64  `json:"available_bytes"`
	TotalBytes     int64  `json:"total_bytes"`
}

func (a *Appliance) v1Storage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	sp, err := a.pool.Space(ctx)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, V1Error{Code: "storage_unavailable", Message: "pool space: " + err.Error(),
			Remedy: "check the pool's health (zpool status, or the data directory's file system)"})
		return
	}
	writeJSON(w, http.StatusOK, StorageInfo{Pool: a.pool.Root().String(), Kind: a.cfg.PoolKind,
		UsedBytes: sp.Used, AvailableBytes: sp.Available, TotalBytes: sp.Used + sp.Available})
}

// Audit log queries (GET /api/audit).
const (
	auditMaxLimit = 1000
	auditMaxKind  = 64
)

// auditQuery reads the query of GET /api/audit: after, before, limit,
// kind, agent, order. Unknown parameters and bad values are refused.
func auditQuery(v url.Values) (catalog.AuditQuery, error) {
	q := catalog.AuditQuery{Limit: auditMaxLimit}
	bad := func(format string, args ...any) (catalog.AuditQuery, error) {
		return catalog.AuditQuery{}, fmt.Errorf("%w: "+format, append([]any{errBadRequest}, args...)...)
	}
	for name, vals := range v {
		if len(vals) != 1 {
			return bad("%s: give it once", name)
		}
		val := vals[0]
		switch name {
		case "after", "before":
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return bad("%s: want an event's sequence number", name)
			}
			if name == "after" {
				q.After = n
			} else if q.Before = n; n == 0 {
				return bad("before: want a sequence number from 1")
			}
		case "limit":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > auditMaxLimit {
				return bad("limit: want a number from 1 to %d", auditMaxLimit)
			}
			q.Limit = n
		case "kind":
			if !validKind(val) {
				return bad("kind: want an action or its prefix, up to %d characters of a-z, 0-9, '_', '-' and '.' (e.g. agent.paired, setup_token)", auditMaxKind)
			}
			q.Action = val
		case "agent":
			if !validAgentID(val) {
				return bad("agent: want an agent ID (a-z, 0-9, '-')")
			}
			q.Target = val
		case "order":
			switch val {
			case "oldest":
			case "newest":
				q.Newest = true
			default:
				return bad(`order: want "oldest" (default) or "newest"`)
			}
		default:
			return bad("unknown parameter %q (want after, before, limit, kind, agent, order)", name)
		}
	}
	return q, nil
}

func validKind(s string) bool {
	if s == "" || len(s) > auditMaxKind || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// validAgentID is the catalog's agent ID rule (catalog.Agent.ID).
func validAgentID(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func (a *Appliance) apiAudit(w http.ResponseWriter, r *http.Request) {
	q, err := auditQuery(r.URL.Query())
	if err != nil {
		writeErr(w, err)
		return
	}
	var events []catalog.AuditEvent
	if err := a.catalog.View(r.Context(), func(tx *catalog.Tx) error {
		var err error
		events, err = tx.AuditEvents(q)
		return err
	}); err != nil {
		writeErr(w, err)
		return
	}
	if events == nil {
		events = []catalog.AuditEvent{}
	}
	writeJSON(w, http.StatusOK, events)
}

// SetupTokenInfo is a setup token as GET /api/setup-tokens shows it:
// never its secret or the secret's hash.
type SetupTokenInfo struct {
	ID        string    `json:"id"`
	Label     string    `json:"label"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	MaxUses   int       `json:"max_uses"`
	Uses      int       `json:"uses"`
	// UsedBy are the key fingerprints of the agents that used it.
	UsedBy    []string  `json:"used_by"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// State is "active", "revoked", "expired" or "used_up" (the first
	// that applies, in the order revoked, expired, used up).
	State string `json:"state"`
}

func setupTokenInfo(s catalog.SetupToken, now time.Time) SetupTokenInfo {
	info := SetupTokenInfo{ID: s.ID, Label: s.Label, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt, MaxUses: s.MaxUses,
		Uses: len(s.UsedBy), UsedBy: s.UsedBy, RevokedAt: s.RevokedAt, State: "active"}
	if info.UsedBy == nil {
		info.UsedBy = []string{}
	}
	switch {
	case s.Revoked():
		info.State = "revoked"
	case !now.Before(s.ExpiresAt):
		info.State = "expired"
	case len(s.UsedBy) >= s.MaxUses:
		info.State = "used_up"
	}
	return info
}

// apiSetupTokens lists the setup tokens, newest first.
func (a *Appliance) apiSetupTokens(w http.ResponseWriter, r *http.Request) {
	var out []SetupTokenInfo
	if err := a.catalog.View(r.Context(), func(tx *catalog.Tx) error {
		ts, err := tx.SetupTokens()
		now := time.Now()
		out = make([]SetupTokenInfo, 0, len(ts))
		for i := len(ts) - 1; i >= 0; i-- {
			out = append(out, setupTokenInfo(ts[i], now))
		}
		return err
	}); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// apiRevokeSetupToken revokes a setup token by its ID (the public part):
// 200 and the token. The ID is checked before it is used, so that a whole
// token pasted by mistake is never echoed in an answer or a log.
func (a *Appliance) apiRevokeSetupToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validSetupTokenID(id) {
		writeErr(w, fmt.Errorf("%w: setup token ID: want the %d-character ID the list shows, not the token", errBadRequest, catalog.SetupTokenIDLen))
		return
	}
	st, err := a.gw.RevokeSetupToken(r.Context(), id, actorOf(r))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, setupTokenInfo(st, time.Now()))
}

func validSetupTokenID(s string) bool {
	if len(s) != catalog.SetupTokenIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
