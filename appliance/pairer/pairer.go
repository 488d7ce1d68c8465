// Package pairer runs pairings on the appliance: the six steps of package
// pairing (Resolve, Connect, License, Inspect, Dataset, Settings) against
// the appliance's gateway, activation client, pool and catalog. A pairing
// is stored after every step, so it resumes after a restart; a failed step
// is retried on its own; pairing an agent again changes nothing and takes no
// seat. docs/pairing.md describes the flow.
package pairer

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/gateway"
	"github.com/cairnbackup/cairn/licensing"
	"github.com/cairnbackup/cairn/pairing"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/resolve"
	"github.com/cairnbackup/cairn/zfs"
)

// DefaultAgentPort is the port of a direct-mode agent's listener.
const DefaultAgentPort = 25568

// stepTimeout bounds one run of one step.
const stepTimeout = 2 * time.Minute

// Activator activates product keys (licensing.Client).
type Activator interface {
	Activate(ctx context.Context, req licensing.ActivateRequest) (licensing.Activation, licensing.Signed, error)
	Deactivate(ctx context.Context, req licensing.DeactivateRequest) error
}

// Config is what a Pairer works with.
type Config struct {
	Catalog   *catalog.Catalog
	Gateway   *gateway.Gateway
	Pool      zfs.Pool
	Activator Activator
	// ApplianceID names this appliance to the activation service (its key
	// fingerprint).
	ApplianceID string
	// PublicKey is the activation service's key, which verifies stored
	// activations offline.
	PublicKey ed25519.PublicKey
	// DNS is the resolver configuration of the Resolve step.
	DNS    resolve.Config
	Logger *slog.Logger
}

// Pairer runs pairings.
type Pairer struct {
	cfg Config
	log *slog.Logger

	mu          sync.Mutex
	running     map[uint64]bool
	again       map[uint64]bool      // launched again while running
	lastAttempt map[string]time.Time // last renewal attempt per agent, this process
	wg          sync.WaitGroup
	ctx         context.Context // ends at Close
	cancel      context.CancelFunc

	// Test hooks, set before the first Start: hookStep runs as a step
	// starts (its "running" state stored), hookRunDone when a run of a
	// pairing's steps has returned.
	hookStep    func(ctx context.Context, id uint64, step string)
	hookRunDone func(id uint64)
}

// New makes a Pairer.
func New(cfg Config) (*Pairer, error) {
	if cfg.Catalog == nil || cfg.Gateway == nil || cfg.Pool == nil || cfg.Activator == nil {
		return nil, errors.New("pairer: catalog, gateway, pool and activator are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pairer{cfg: cfg, log: cfg.Logger, running: make(map[uint64]bool), again: make(map[uint64]bool), lastAttempt: make(map[string]time.Time),
		ctx: ctx, cancel: cancel}, nil
}

// Close stops running pairings (they resume at the next start) and waits.
func (p *Pairer) Close() {
	p.mu.Lock() // no launch between the cancel and the Wait
	p.cancel()
	p.mu.Unlock()
	p.wg.Wait()
}

// Request asks for one pairing.
type Request struct {
	// Target is the host name, FQDN or IP address of a direct-mode agent;
	// empty for a reverse-mode agent, which is named by AgentID.
	Target string `json:"target"`
	Port   int    `json:"port,omitempty"`
	// AgentID names the agent; for a direct-mode agent it defaults to one
	// derived from Target.
	AgentID string `json:"agent_id,omitempty"`
	// ProductKey is the agent's product key.
	ProductKey string            `json:"product_key"`
	Settings   *pairing.Settings `json:"settings,omitempty"` // nil: pairing.DefaultSettings
	// Actor names who asked, for the audit log; "" is "api".
	Actor string `json:"-"`
}

// Pairing is a pairing as the API shows it.
type Pairing struct {
	ID        uint64               `json:"id"`
	Target    string               `json:"target,omitempty"`
	Port      int                  `json:"port,omitempty"`
	AgentID   string               `json:"agent_id"`
	Mode      string               `json:"mode"`
	KeyID     string               `json:"key_id"`
	State     string               `json:"state"`
	Settings  pairing.Settings     `json:"settings"`
	Steps     []pairing.StepResult `json:"steps"`
	CreatedAt time.Time            `json:"created_at"`
	UpdatedAt time.Time            `json:"updated_at"`
	// FingerprintConfirmedAt is when the operator confirmed the agent's
	// key (catalog.Agent.FingerprintConfirmedAt); absent until then.
	FingerprintConfirmedAt *time.Time `json:"fingerprint_confirmed_at,omitempty"`
}

// RequestError is a request the Pairer refuses before storing anything.
type RequestError struct {
	Code, Msg string
}

func (e *RequestError) Error() string { return e.Msg }

func keySecret(id uint64) string { return "pairing/" + strconv.FormatUint(id, 10) + "/product-key" }

// AgentKeySecret names the sealed product key of a licensed agent.
func AgentKeySecret(agentID string) string { return "agent/" + agentID + "/product-key" }

// Start checks a request, stores the pairing and runs its steps in the
// background. A request for an agent that has a pairing running returns
// that one.
func (p *Pairer) Start(ctx context.Context, req Request) (Pairing, error) {
	key, err := licensing.ParseKey(req.ProductKey)
	if err != nil {
		return Pairing{}, &RequestError{Code: "bad_product_key", Msg: "product key: " + err.Error()}
	}
	settings := pairing.DefaultSettings()
	if req.Settings != nil {
		settings = *req.Settings
	}
	if err := settings.Validate(nil); err != nil {
		return Pairing{}, &RequestError{Code: "bad_settings", Msg: strings.ReplaceAll(err.Error(), "\n", "; ")}
	}
	rec := catalog.Pairing{Target: strings.TrimSpace(req.Target), Port: req.Port, AgentID: req.AgentID, KeyID: key.ID(), State: catalog.PairingRunning}
	switch {
	case rec.Target == "" && rec.AgentID == "":
		return Pairing{}, &RequestError{Code: "bad_target", Msg: "name a target (host name, FQDN or IP) or, for an agent connected with its token, its agent_id"}
	case rec.Target == "":
		rec.Mode = catalog.ModeReverse
		if rec.Port != 0 {
			return Pairing{}, &RequestError{Code: "bad_port", Msg: "a reverse-mode agent has no port"}
		}
	default:
		rec.Mode = catalog.ModeDirect
		if rec.Port == 0 {
			rec.Port = DefaultAgentPort
		}
		if rec.Port < 1 || rec.Port > 65535 {
			return Pairing{}, &RequestError{Code: "bad_port", Msg: fmt.Sprintf("port %d is not from 1 to 65535", rec.Port)}
		}
		if rec.AgentID == "" {
			rec.AgentID = AgentIDFromHost(rec.Target)
		}
	}
	steps := make([]pairing.StepResult, len(pairing.Steps))
	for i, name := range pairing.Steps {
		steps[i] = pairing.StepResult{Step: name, Status: pairing.StatusPending}
	}
	rec.Settings, _ = json.Marshal(settings)
	rec.Steps, _ = json.Marshal(steps)
	var existing *catalog.Pairing
	err = p.cfg.Catalog.Update(ctx, func(tx *catalog.Tx) error {
		prev, err := tx.PairingsOf(rec.AgentID)
		if err != nil {
			return err
		}
		for i := range prev {
			if prev[i].State == catalog.PairingRunning {
				existing = &prev[i]
				return nil
			}
		}
		if a, err := tx.Agent(rec.AgentID); err == nil && a.Mode != rec.Mode {
			return &RequestError{Code: "mode_mismatch", Msg: fmt.Sprintf("agent %q is a %s-mode agent", rec.AgentID, a.Mode)}
		}
		id, err := tx.AddPairing(rec)
		if err != nil {
			return err
		}
		rec.ID = id
		if err := tx.PutSecret(keySecret(id), []byte(key.Reveal())); err != nil {
			return err
		}
		return tx.Audit(catalog.AuditEvent{Actor: or(req.Actor, "api"), Action: "pairing.started", Target: rec.AgentID,
			Detail: fmt.Sprintf("pairing %d of %s (%s mode), key %s", id, or(rec.Target, rec.AgentID), rec.Mode, key.ID())})
	})
	if errors.Is(err, catalog.ErrInvalid) {
		return Pairing{}, &RequestError{Code: "bad_request", Msg: err.Error()}
	}
	if err != nil {
		return Pairing{}, err
	}
	if existing != nil {
		return toPairing(*existing), nil
	}
	p.log.Info("pairing started", "pairing", rec.ID, "agent", rec.AgentID, "target", rec.Target, "mode", rec.Mode, "key", key)
	p.launch(rec.ID)
	return p.Get(ctx, rec.ID)
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// launch runs a pairing's remaining steps in the background, unless they
// are running already. A launch while they run (a Retry that comes as the
// run stores its failure) makes the run go again once it returns, so that
// a pairing stored running is never left without a run.
func (p *Pairer) launch(id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return
	}
	if p.running[id] {
		p.again[id] = true
		return
	}
	p.running[id] = true
	p.wg.Add(1)
	go p.runs(id)
}

// runs runs a pairing's steps until no launch asks for another run.
func (p *Pairer) runs(id uint64) {
	defer p.wg.Done()
	for {
		if err := p.run(p.ctx, id); err != nil && p.ctx.Err() == nil {
			p.log.Error("pairing", "pairing", id, "err", err)
		}
		if p.hookRunDone != nil {
			p.hookRunDone(id)
		}
		p.mu.Lock()
		again := p.again[id] && p.ctx.Err() == nil
		delete(p.again, id)
		if !again {
			delete(p.running, id)
		}
		p.mu.Unlock()
		if !again {
			return
		}
	}
}

// Resume launches every pairing left running by the last process.
func (p *Pairer) Resume(ctx context.Context) error {
	var ids []uint64
	err := p.cfg.Catalog.View(ctx, func(tx *catalog.Tx) error {
		ps, err := tx.Pairings()
		for _, rec := range ps {
			if rec.State == catalog.PairingRunning {
				ids = append(ids, rec.ID)
			}
		}
		return err
	})
	for _, id := range ids {
		p.log.Info("resuming pairing", "pairing", id)
		p.launch(id)
	}
	return err
}

// Retry runs a failed pairing again from its failed step.
func (p *Pairer) Retry(ctx context.Context, id uint64) (Pairing, error) {
	err := p.cfg.Catalog.Update(ctx, func(tx *catalog.Tx) error {
		rec, err := tx.Pairing(id)
		if err != nil {
			return err
		}
		switch rec.State {
		case catalog.PairingRunning:
			return nil
		case catalog.PairingFailed:
		default:
			return &RequestError{Code: "not_failed", Msg: fmt.Sprintf("pairing %d is %s; only a failed pairing can be retried", id, rec.State)}
		}
		if _, err := tx.Secret(keySecret(id)); errors.Is(err, catalog.ErrNotFound) {
			return &RequestError{Code: "no_product_key", Msg: "the product key of this pairing is gone; start a new pairing"}
		}
		rec.State = catalog.PairingRunning
		return tx.PutPairing(rec)
	})
	if err != nil {
		return Pairing{}, err
	}
	p.launch(id)
	return p.Get(ctx, id)
}

// Get returns a pairing.
func (p *Pairer) Get(ctx context.Context, id uint64) (Pairing, error) {
	var pr Pairing
	err := p.cfg.Catalog.View(ctx, func(tx *catalog.Tx) error {
		rec, err := tx.Pairing(id)
		if err != nil {
			return err
		}
		pr = withConfirmation(tx, toPairing(rec))
		return nil
	})
	if err != nil {
		return Pairing{}, err
	}
	return pr, nil
}

// List returns every pairing, oldest first.
func (p *Pairer) List(ctx context.Context) ([]Pairing, error) {
	var out []Pairing
	err := p.cfg.Catalog.View(ctx, func(tx *catalog.Tx) error {
		ps, err := tx.Pairings()
		for _, rec := range ps {
			out = append(out, withConfirmation(tx, toPairing(rec)))
		}
		return err
	})
	return out, err
}

// withConfirmation adds when the operator confirmed the agent's key.
func withConfirmation(tx *catalog.Tx, pr Pairing) Pairing {
	if a, err := tx.Agent(pr.AgentID); err == nil && !a.FingerprintConfirmedAt.IsZero() {
		t := a.FingerprintConfirmedAt
		pr.FingerprintConfirmedAt = &t
	}
	return pr
}

// Wait waits until a pairing is no longer running, or ctx ends, and
// returns it. It polls the catalog (bounded by ctx).
func (p *Pairer) Wait(ctx context.Context, id uint64) (Pairing, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		pr, err := p.Get(ctx, id)
		if err != nil || pr.State != catalog.PairingRunning {
			return pr, err
		}
		p.mu.Lock()
		busy := p.running[id]
		p.mu.Unlock()
		if !busy && p.ctx.Err() != nil {
			return pr, p.ctx.Err()
		}
		select {
		case <-ctx.Done():
			return pr, ctx.Err()
		case <-t.C:
		}
	}
}

func toPairing(rec catalog.Pairing) Pairing {
	pr := Pairing{ID: rec.ID, Target: rec.Target, Port: rec.Port, AgentID: rec.AgentID, Mode: rec.Mode, KeyID: rec.KeyID,
		State: rec.State, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt}
	_ = json.Unmarshal(rec.Settings, &pr.Settings)
	_ = json.Unmarshal(rec.Steps, &pr.Steps)
	return pr
}

// AgentIDFromHost derives an agent ID from a host name or address: lower
// case letters, digits and '-', at most 63 characters; the first label of a
// name ("web01.corp.example" → "web01"), an address with dashes
// ("10.0.0.5" → "10-0-0-5").
func AgentIDFromHost(host string) string {
	host = strings.Trim(strings.TrimSpace(host), "[].")
	if ip := net.ParseIP(host); ip == nil {
		host, _, _ = strings.Cut(host, ".")
	}
	var b strings.Builder
	for _, r := range strings.ToLower(host) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
				b.WriteByte('-')
			}
		}
		if b.Len() >= 63 {
			break
		}
	}
	id := strings.Trim(b.String(), "-")
	if id == "" {
		return "agent"
	}
	return id
}

// fingerprintOf parses a stored fingerprint.
func fingerprintOf(s string) identity.Fingerprint {
	fp, _ := identity.ParseFingerprint(s)
	return fp
}
