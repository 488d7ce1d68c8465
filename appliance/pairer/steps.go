package pairer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/gateway"
	"github.com/cairnbackup/cairn/licensing"
	"github.com/cairnbackup/cairn/pairing"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/resolve"
	"github.com/cairnbackup/cairn/zfs"
)

// run runs a pairing's steps from the first one not done, storing each
// result, until one fails or all are done.
func (p *Pairer) run(ctx context.Context, id uint64) error {
	pr, err := p.Get(ctx, id)
	if err != nil {
		return err
	}
	if pr.State != catalog.PairingRunning {
		return nil // finished before this run (launched again by a Retry)
	}
	st := &runState{pairing: pr}
	for i := range pr.Steps {
		step := &pr.Steps[i]
		if step.Status.Done() {
			st.absorb(*step)
			continue
		}
		step.Status, step.Started = pairing.StatusRunning, time.Now().UTC()
		if err := p.save(ctx, pr, ""); err != nil {
			return err
		}
		if p.hookStep != nil {
			p.hookStep(ctx, id, step.Step)
		}
		sctx, cancel := context.WithTimeout(ctx, stepTimeout)
		res := p.step(sctx, st, step.Step)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err() // stopping: the step runs again at the next start
		}
		res.Started, res.Finished, res.Attempts = step.Started, time.Now().UTC(), step.Attempts+1
		*step = res
		st.absorb(res)
		p.log.Info("pairing step", "pairing", id, "agent", pr.AgentID, "step", res.Step, "status", res.Status, "code", res.Code, "detail", res.Detail)
		if res.Status == pairing.StatusFailed {
			return p.save(ctx, pr, catalog.PairingFailed)
		}
	}
	return p.save(ctx, pr, catalog.PairingDone)
}

// save stores the steps (and a new state, if not "").
func (p *Pairer) save(ctx context.Context, pr Pairing, state string) error {
	steps, err := json.Marshal(pr.Steps)
	if err != nil {
		return err
	}
	return p.cfg.Catalog.Update(ctx, func(tx *catalog.Tx) error {
		rec, err := tx.Pairing(pr.ID)
		if err != nil {
			return err
		}
		rec.Steps = steps
		if state != "" {
			rec.State = state
		}
		if state == catalog.PairingDone {
			if err := tx.DeleteSecret(keySecret(pr.ID)); err != nil && !errors.Is(err, catalog.ErrNotFound) {
				return err
			}
			if err := tx.Audit(catalog.AuditEvent{Actor: "pairer", Action: "pairing.done", Target: rec.AgentID,
				Detail: fmt.Sprintf("pairing %d", pr.ID)}); err != nil {
				return err
			}
		}
		return tx.PutPairing(rec)
	})
}

// runState carries what earlier steps found to later ones.
type runState struct {
	pairing Pairing
	addrs   []string // from Resolve
	volumes []string // from Inspect
}

// absorb takes what a finished step found.
func (st *runState) absorb(r pairing.StepResult) {
	b, err := json.Marshal(r.Data)
	if err != nil {
		return
	}
	switch r.Step {
	case pairing.StepResolve:
		var res resolve.Result
		if json.Unmarshal(b, &res) == nil {
			st.addrs = nil
			for _, a := range res.Addrs {
				st.addrs = append(st.addrs, a.String())
			}
		}
	case pairing.StepInspect:
		var d struct {
			Volumes []struct {
				ID string `json:"id"`
			} `json:"volumes"`
		}
		if json.Unmarshal(b, &d) == nil {
			st.volumes = []string{}
			for _, v := range d.Volumes {
				st.volumes = append(st.volumes, v.ID)
			}
		}
	}
}

func (p *Pairer) step(ctx context.Context, st *runState, name string) pairing.StepResult {
	pr := st.pairing
	switch name {
	case pairing.StepResolve:
		if pr.Mode == catalog.ModeReverse {
			return pairing.StepResult{Step: name, Status: pairing.StatusSkipped, Detail: "reverse-mode agent: it connects to the appliance with its token"}
		}
		return pairing.Resolve(ctx, p.cfg.DNS, pr.Target)
	case pairing.StepConnect:
		return p.connect(ctx, st)
	case pairing.StepLicense:
		return p.license(ctx, pr)
	case pairing.StepInspect:
		client, err := p.client(ctx, pr)
		if err != nil {
			return notConnected(name, pr, err)
		}
		return pairing.Inspect(ctx, client)
	case pairing.StepDataset:
		return p.dataset(ctx, pr)
	case pairing.StepSettings:
		return pairing.ApplySettings(ctx, settingsStore{p}, pr.AgentID, pr.Settings, st.volumes)
	}
	return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Detail: "unknown step"}
}

// client returns the agent's API client. A direct-mode agent without a
// session (the appliance restarted after the Connect step) is dialled again
// at its stored address, its stored key pinned.
func (p *Pairer) client(ctx context.Context, pr Pairing) (agentv1.AgentServiceClient, error) {
	c, err := p.cfg.Gateway.Client(pr.AgentID)
	if err == nil || pr.Mode != catalog.ModeDirect {
		return c, err
	}
	if err := p.cfg.Gateway.ConnectDirect(ctx, pr.AgentID); err != nil {
		return nil, err
	}
	return p.cfg.Gateway.Client(pr.AgentID)
}

func notConnected(step string, pr Pairing, err error) pairing.StepResult {
	detail := fmt.Sprintf("agent %s is not connected", pr.AgentID)
	if err != nil && !errors.Is(err, gateway.ErrNotConnected) {
		detail += ": " + err.Error()
	}
	remedy := fmt.Sprintf("check that cairn-agent runs on the machine and listens on port %d, and that no firewall blocks it; then retry", pr.Port)
	if pr.Mode == catalog.ModeReverse {
		remedy = "start the agent with its agent token (cairn-agent, CAIRN_AGENT_TOKEN or agent.conf) and check it can reach the appliance's gateway, then retry"
	}
	return pairing.StepResult{Step: step, Status: pairing.StatusFailed, Code: "not_connected", Detail: detail, Remedy: remedy}
}

// ConnectData is what the Connect step found.
type ConnectData struct {
	Address      string        `json:"address"`
	Fingerprint  string        `json:"fingerprint"`
	Short        string        `json:"short"`
	Hostname     string        `json:"hostname"`
	OS           string        `json:"os"`
	AgentVersion string        `json:"agent_version"`
	Protocol     uint32        `json:"protocol"`
	RTT          time.Duration `json:"rtt_ns"`
}

func (p *Pairer) connect(ctx context.Context, st *runState) pairing.StepResult {
	const name = pairing.StepConnect
	pr := st.pairing
	var status gateway.Status
	if pr.Mode == catalog.ModeReverse {
		if _, err := p.cfg.Gateway.Client(pr.AgentID); err != nil {
			return notConnected(name, pr, err)
		}
		for _, s := range p.cfg.Gateway.Connected() {
			if s.AgentID == pr.AgentID {
				status = s
			}
		}
	} else {
		if len(st.addrs) == 0 {
			return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Code: "no_address", Detail: "the Resolve step found no address", Remedy: "retry the pairing"}
		}
		p.disconnect(ctx, pr.AgentID) // pair again on a fresh session
		var errs []string
		for _, a := range st.addrs {
			addr := net.JoinHostPort(a, strconv.Itoa(pr.Port))
			s, err := p.cfg.Gateway.PairDirect(ctx, pr.AgentID, addr, identity.Fingerprint{}, "pairer")
			if err == nil {
				status = s
				break
			}
			errs = append(errs, err.Error())
			if errors.Is(err, identity.ErrPinMismatch) || strings.Contains(err.Error(), "paired with another appliance") {
				return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Code: "key_mismatch", Detail: err.Error(),
					Remedy: "the machine at this address is not the agent paired before, or it is paired with another appliance: check the machine; run \"cairn-agent unpair\" on it to pair it here"}
			}
		}
		if status.AgentID == "" {
			return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Code: "unreachable",
				Detail: "cannot connect to the agent: " + strings.Join(errs, "; "),
				Remedy: fmt.Sprintf("check that cairn-agent runs on the machine and listens on port %d, and that no firewall blocks it (TCP %d from the appliance); then retry", pr.Port, pr.Port)}
		}
	}
	client, err := p.cfg.Gateway.Client(pr.AgentID)
	if err != nil {
		return notConnected(name, pr, err)
	}
	start := time.Now()
	if _, err := client.Ping(ctx, &agentv1.PingRequest{SentUnixNano: start.UnixNano()}); err != nil {
		return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Code: "ping_failed", Detail: "the agent does not answer: " + err.Error(), Remedy: "retry this step"}
	}
	rtt := time.Since(start)
	fp := fingerprintOf(status.Fingerprint)
	data := ConnectData{Address: status.RemoteAddr, Fingerprint: status.Fingerprint, Short: fp.Short(), Hostname: status.Hostname,
		OS: status.OS, AgentVersion: status.AgentVersion, Protocol: status.Protocol, RTT: rtt}
	return pairing.StepResult{Step: name, Status: pairing.StatusOK, Data: data,
		Detail: fmt.Sprintf("connected to %s (%s) at %s over TLS 1.3; agent %s, protocol %d, key %s; round trip %s",
			status.Hostname, status.OS, status.RemoteAddr, status.AgentVersion, status.Protocol, fp.Short(), rtt.Round(10*time.Microsecond))}
}

// disconnect closes the agent's session, if any, and waits (bounded by
// ctx) until the gateway has let it go: until then it refuses a new one
// ("already connected").
func (p *Pairer) disconnect(ctx context.Context, agentID string) {
	if _, err := p.cfg.Gateway.Client(agentID); err != nil {
		return
	}
	p.cfg.Gateway.Disconnect(agentID)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := p.cfg.Gateway.Client(agentID); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Pairer) license(ctx context.Context, pr Pairing) pairing.StepResult {
	const name = pairing.StepLicense
	var keyText []byte
	var agent catalog.Agent
	err := p.cfg.Catalog.View(ctx, func(tx *catalog.Tx) error {
		var err error
		if keyText, err = tx.Secret(keySecret(pr.ID)); err != nil {
			return err
		}
		agent, err = tx.Agent(pr.AgentID)
		return err
	})
	if err != nil {
		return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Code: "no_product_key", Detail: err.Error(), Remedy: "start a new pairing with the product key"}
	}
	key, err := licensing.ParseKey(string(keyText))
	if err != nil {
		return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Code: "bad_product_key", Detail: err.Error(), Remedy: "start a new pairing with the product key"}
	}
	act, signed, err := p.cfg.Activator.Activate(ctx, licensing.ActivateRequest{Key: key, ApplianceID: p.cfg.ApplianceID,
		AgentFingerprint: agent.Fingerprint, Hostname: agent.Hostname})
	if err != nil {
		code, remedy := licenseRemedy(err)
		return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Code: code, Detail: fmt.Sprintf("product key %s: %v", key.ID(), err), Remedy: remedy}
	}
	sb, _ := json.Marshal(signed)
	err = p.cfg.Catalog.Update(ctx, func(tx *catalog.Tx) error {
		// The agent keeps the key (sealed) to renew its activation and to
		// release its seat when it is unpaired.
		if err := tx.PutSecret(AgentKeySecret(pr.AgentID), keyText); err != nil {
			return err
		}
		return tx.PutActivation(catalog.Activation{AgentID: pr.AgentID, KeyID: act.KeyID, Signed: sb, Expires: act.Expires, ValidatedAt: time.Now().UTC()})
	})
	if err != nil {
		return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Code: "store_failed", Detail: err.Error(), Remedy: "retry this step"}
	}
	return pairing.StepResult{Step: name, Status: pairing.StatusOK, Data: act,
		Detail: fmt.Sprintf("product key %s activated for %s (%s edition) until %s", act.KeyID, agent.Hostname, act.Edition, act.Expires.Format("2006-01-02"))}
}

func licenseRemedy(err error) (code, remedy string) {
	var se *licensing.ServiceError
	switch {
	case errors.As(err, &se):
		switch se.Code {
		case licensing.CodeKeyInvalid:
			return se.Code, "the activation service does not know this product key: check it against your order"
		case licensing.CodeKeyRevoked:
			return se.Code, "this product key was revoked: contact your vendor for a new one"
		case licensing.CodeKeyExpired:
			return se.Code, "this product key's term is over: renew it with your vendor, then retry"
		case licensing.CodeNoSeats:
			return se.Code, "every seat of this product key is in use: unpair an agent that uses it, or buy more seats, then retry"
		case licensing.CodeActiveElsewhere:
			return se.Code, "this agent is activated on another appliance: unpair it there (or ask your vendor to release it), then retry"
		}
		return se.Code, "retry this step; if it fails again, contact your vendor"
	case errors.Is(err, licensing.ErrUnreachable):
		return "service_unreachable", "the activation service cannot be reached: check the appliance's internet access and proxy, then retry"
	}
	return "activation_failed", "retry this step; if it fails again, check the appliance's log"
}

func (p *Pairer) dataset(ctx context.Context, pr Pairing) pairing.StepResult {
	const name = pairing.StepDataset
	ds, err := zfs.AgentDataset(p.cfg.Pool.Root(), pr.AgentID)
	if err != nil {
		return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Code: "bad_name", Detail: err.Error(), Remedy: "pair the agent under another agent ID"}
	}
	detail := "created " + ds.String()
	if err := p.cfg.Pool.CreateDataset(ctx, ds); errors.Is(err, zfs.ErrExists) {
		detail = ds.String() + " exists already: kept"
	} else if err != nil {
		return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Code: "create_failed", Detail: err.Error(), Remedy: "check the pool's health and free space, then retry"}
	}
	err = p.cfg.Catalog.Update(ctx, func(tx *catalog.Tx) error {
		a, err := tx.Agent(pr.AgentID)
		if err != nil {
			return err
		}
		a.Dataset = ds.String()
		return tx.PutAgent(a)
	})
	if err != nil {
		return pairing.StepResult{Step: name, Status: pairing.StatusFailed, Code: "store_failed", Detail: err.Error(), Remedy: "retry this step"}
	}
	return pairing.StepResult{Step: name, Status: pairing.StatusOK, Detail: detail, Data: map[string]string{"dataset": ds.String()}}
}

type settingsStore struct{ p *Pairer }

func (s settingsStore) SaveSettings(ctx context.Context, agentID string, st pairing.Settings) error {
	return s.p.cfg.Catalog.Update(ctx, func(tx *catalog.Tx) error {
		return tx.PutSettings(CatalogSettings(agentID, st))
	})
}

// CatalogSettings is the catalog's record of an agent's settings.
func CatalogSettings(agentID string, s pairing.Settings) catalog.Settings {
	return catalog.Settings{
		AgentID: agentID, BackupSchedule: s.BackupSchedule, Retention: catalog.Retention(s.Retention),
		OffsiteSchedule: s.OffsiteSchedule, OffsiteRetention: catalog.Retention(s.OffsiteRetention), Volumes: s.Volumes,
	}
}

// PairingSettings is an agent's settings as the catalog records them.
func PairingSettings(cs catalog.Settings) pairing.Settings {
	return pairing.Settings{BackupSchedule: cs.BackupSchedule, Retention: pairing.Retention(cs.Retention),
		OffsiteSchedule: cs.OffsiteSchedule, OffsiteRetention: pairing.Retention(cs.OffsiteRetention), Volumes: cs.Volumes}
}
