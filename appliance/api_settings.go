package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/appliance/pairer"
	"github.com/cairnbackup/cairn/pairing"
)

// v1Settings answers an agent's backup settings (pairing.Settings).
func (a *Appliance) v1Settings(w http.ResponseWriter, r *http.Request) {
	s, err := a.agentSettings(r.Context(), r.PathValue("id"))
	if err != nil {
		v1Err(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// v1PutSettings changes an agent's backup settings. The body is
// pairing.Settings; fields it leaves out keep their current values. The
// settings are validated as in the pairing's Settings step, the volumes
// against the agent's own when it is connected. 200 and the settings, or
// 400 {"code": "bad_settings"} naming every bad field.
func (a *Appliance) v1PutSettings(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s, err := a.agentSettings(r.Context(), id)
	if err != nil {
		v1Err(w, err)
		return
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		v1Err(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	var volumes []string // nil: the agent is not connected, do not check
	if c, err := a.gw.Client(id); err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		resp, err := c.ListVolumes(ctx, &agentv1.ListVolumesRequest{})
		cancel()
		if err == nil {
			volumes = []string{}
			for _, v := range resp.GetVolumes() {
				volumes = append(volumes, v.GetId())
			}
		}
	}
	if err := s.Validate(volumes); err != nil {
		writeJSON(w, http.StatusBadRequest, V1Error{Code: "bad_settings", Message: strings.ReplaceAll(err.Error(), "\n", "; ")})
		return
	}
	err = a.catalog.Update(r.Context(), func(tx *catalog.Tx) error {
		if _, err := tx.Agent(id); err != nil {
			return err
		}
		if err := tx.PutSettings(pairer.CatalogSettings(id, s)); err != nil {
			return err
		}
		return tx.Audit(catalog.AuditEvent{Actor: actorOf(r), Action: "settings.update", Target: id,
			Detail: fmt.Sprintf("backups %s of %d volume(s)", s.BackupSchedule, len(s.Volumes))})
	})
	if err != nil {
		v1Err(w, err)
		return
	}
	a.log.Info("agent settings changed", "agent", id, "backup_schedule", s.BackupSchedule, "volumes", len(s.Volumes))
	writeJSON(w, http.StatusOK, s)
}

// agentSettings reads an agent's settings: the stored ones, or the
// defaults for an agent that has none yet. catalog.ErrNotFound for an
// unknown agent.
func (a *Appliance) agentSettings(ctx context.Context, id string) (pairing.Settings, error) {
	var cs catalog.Settings
	var found bool
	err := a.catalog.View(ctx, func(tx *catalog.Tx) error {
		if _, err := tx.Agent(id); err != nil {
			return err
		}
		var err error
		cs, err = tx.Settings(id)
		if errors.Is(err, catalog.ErrNotFound) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return pairing.Settings{}, err
	}
	if !found {
		return pairing.DefaultSettings(), nil
	}
	return pairer.PairingSettings(cs), nil
}
