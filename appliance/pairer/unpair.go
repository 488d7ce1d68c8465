package pairer

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/licensing"
	"github.com/cairnbackup/cairn/zfs"
)

// UnpairResult says what Unpair did.
type UnpairResult struct {
	AgentID          string `json:"agent_id"`
	SeatReleased     bool   `json:"seat_released"`
	Dataset          string `json:"dataset,omitempty"`
	DatasetDestroyed bool   `json:"dataset_destroyed"`
}

// Unpair forgets an agent: it releases its seat with the activation
// service, closes its session, destroys its dataset if asked (else keeps
// it, with its recovery points, under its name), and deletes the agent, its
// tokens, activation and pairings from the catalog. A seat that cannot be
// released (service unreachable) stops the unpairing unless force is set.
// The agent keeps its pin of this appliance until "cairn-agent unpair" is
// run on it.
func (p *Pairer) Unpair(ctx context.Context, agentID string, destroyDataset, force bool, actor string) (UnpairResult, error) {
	res := UnpairResult{AgentID: agentID}
	var agent catalog.Agent
	var keyText []byte
	err := p.cfg.Catalog.View(ctx, func(tx *catalog.Tx) error {
		var err error
		ps, err := tx.PairingsOf(agentID)
		if err != nil {
			return err
		}
		for _, pr := range ps {
			if pr.State == catalog.PairingRunning {
				return &RequestError{Code: "pairing_running", Msg: fmt.Sprintf("pairing %d of agent %s is running; unpair when it has ended", pr.ID, agentID)}
			}
		}
		if agent, err = tx.Agent(agentID); err != nil {
			return err
		}
		keyText, err = tx.Secret(AgentKeySecret(agentID))
		if errors.Is(err, catalog.ErrNotFound) {
			return nil // never licensed
		}
		return err
	})
	if err != nil {
		return res, err
	}
	if len(keyText) > 0 {
		key, err := licensing.ParseKey(string(keyText))
		if err == nil {
			err = p.cfg.Activator.Deactivate(ctx, licensing.DeactivateRequest{Key: key, ApplianceID: p.cfg.ApplianceID, AgentFingerprint: agent.Fingerprint})
		}
		switch {
		case err == nil:
			res.SeatReleased = true
		case force:
			p.log.Warn("unpair: seat not released", "agent", agentID, "err", err)
		default:
			return res, fmt.Errorf("release the agent's seat: %w (unpair with force to go on without)", err)
		}
	}
	p.cfg.Gateway.Disconnect(agentID)
	if ds, err := zfs.AgentDataset(p.cfg.Pool.Root(), agentID); err == nil {
		if _, err := p.cfg.Pool.Dataset(ctx, ds); err == nil {
			res.Dataset = ds.String()
			if destroyDataset {
				if err := p.cfg.Pool.DestroyDataset(ctx, ds); err != nil {
					return res, fmt.Errorf("destroy %s: %w", ds, err)
				}
				res.DatasetDestroyed = true
			}
		}
	}
	err = p.cfg.Catalog.Update(ctx, func(tx *catalog.Tx) error {
		// DeleteAgent deletes the pairings: first their sealed keys (a
		// failed pairing keeps its own for a retry).
		ps, err := tx.PairingsOf(agentID)
		if err != nil {
			return err
		}
		for _, pr := range ps {
			if err := tx.DeleteSecret(keySecret(pr.ID)); err != nil && !errors.Is(err, catalog.ErrNotFound) {
				return err
			}
		}
		if err := tx.DeleteAgent(agentID); err != nil {
			return err
		}
		if err := tx.DeleteSecret(AgentKeySecret(agentID)); err != nil && !errors.Is(err, catalog.ErrNotFound) {
			return err
		}
		return tx.Audit(catalog.AuditEvent{Actor: actor, Action: "agent.unpaired", Target: agentID,
			Detail: fmt.Sprintf("seat released %v, dataset %q destroyed %v", res.SeatReleased, res.Dataset, res.DatasetDestroyed)})
	})
	return res, err
}
