package appliance

import (
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/pairing/identity"
)

// ConfirmFingerprintRequest is the body of POST
// /api/v1/pairings/{id}/confirm-fingerprint: the agent key fingerprint
// the operator read on the machine ("cairn-agent fingerprint").
type ConfirmFingerprintRequest struct {
	Fingerprint string `json:"fingerprint"`
}

// ConfirmFingerprintReply is the answer when the fingerprint matches.
type ConfirmFingerprintReply struct {
	AgentID                string    `json:"agent_id"`
	Fingerprint            string    `json:"fingerprint"`
	Short                  string    `json:"short"`
	FingerprintConfirmedAt time.Time `json:"fingerprint_confirmed_at"`
}

// errNoFingerprint: the pairing has not pinned the agent's key yet.
var errNoFingerprint = errors.New("no pinned key")

// sameFingerprint reports whether typed names the key pinned, in
// constant time. typed is one of the forms "cairn-agent fingerprint"
// prints or an operator may copy: the full form "SHA256:<base64>"
// (base64 is case-sensitive), the short form "ABCD-EFGH-IJKL-MNOP" (case,
// '-', ':' and spaces ignored), or the 64 hex digits of the SHA-256 (case
// and ':' ignored). An error says typed is none of them.
func sameFingerprint(typed string, pinned identity.Fingerprint) (bool, error) {
	typed = strings.TrimSpace(typed)
	if strings.HasPrefix(typed, "SHA256:") {
		fp, err := identity.ParseFingerprint(typed)
		if err != nil {
			return false, err
		}
		return fp.Equal(pinned), nil
	}
	norm := strings.Map(func(r rune) rune {
		switch r {
		case '-', ':', ' ':
			return -1
		}
		return r
	}, strings.ToUpper(typed))
	switch len(norm) {
	case 16: // the short form: base32 of the first 10 bytes
		want := strings.ReplaceAll(pinned.Short(), "-", "")
		return subtle.ConstantTimeCompare([]byte(norm), []byte(want)) == 1, nil
	case 64:
		b, err := hex.DecodeString(norm)
		if err != nil {
			return false, errors.New("not hex digits")
		}
		var fp identity.Fingerprint
		copy(fp[:], b)
		return fp.Equal(pinned), nil
	}
	return false, errors.New(`want the fingerprint as "cairn-agent fingerprint" prints it: SHA256:… or the short form XXXX-XXXX-XXXX-XXXX`)
}

// v1ConfirmFingerprint records that the operator compared the agent key
// the pairing's Connect step pinned with the one shown on the machine.
// 200 when they match (the agent's fingerprint_confirmed_at is set, once);
// 409 fingerprint_mismatch, with a remedy, when they do not; 409
// no_fingerprint before the Connect step has pinned a key. Both outcomes
// are in the audit log.
func (a *Appliance) v1ConfirmFingerprint(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		v1Err(w, err)
		return
	}
	pr, err := a.pairer.Get(r.Context(), id)
	if err != nil {
		v1Err(w, err)
		return
	}
	var req ConfirmFingerprintRequest
	if err := readJSON(r, &req); err != nil {
		v1Err(w, err)
		return
	}
	if req.Fingerprint == "" {
		v1Err(w, fmt.Errorf("%w: fingerprint: give the one cairn-agent fingerprint prints on the machine", errBadRequest))
		return
	}
	actor := actorOf(r)
	var reply ConfirmFingerprintReply
	var match bool
	err = a.catalog.Update(r.Context(), func(tx *catalog.Tx) error {
		ag, err := tx.Agent(pr.AgentID)
		if errors.Is(err, catalog.ErrNotFound) {
			return errNoFingerprint
		}
		if err != nil {
			return err
		}
		pinned, err := identity.ParseFingerprint(ag.Fingerprint)
		if err != nil {
			return errNoFingerprint
		}
		if match, err = sameFingerprint(req.Fingerprint, pinned); err != nil {
			return fmt.Errorf("%w: fingerprint: %v", errBadRequest, err)
		}
		reply = ConfirmFingerprintReply{AgentID: ag.ID, Fingerprint: ag.Fingerprint, Short: pinned.Short()}
		if !match {
			return tx.Audit(catalog.AuditEvent{Actor: actor, Action: "agent.fingerprint_mismatch", Target: ag.ID,
				Detail: fmt.Sprintf("pairing %d: the operator's fingerprint is not the pinned key %s", id, pinned.Short())})
		}
		if !ag.FingerprintConfirmedAt.IsZero() {
			reply.FingerprintConfirmedAt = ag.FingerprintConfirmedAt
			return nil // confirmed before: keep the first time
		}
		ag.FingerprintConfirmedAt = time.Now().UTC()
		reply.FingerprintConfirmedAt = ag.FingerprintConfirmedAt
		if err := tx.PutAgent(ag); err != nil {
			return err
		}
		return tx.Audit(catalog.AuditEvent{Actor: actor, Action: "agent.fingerprint_confirmed", Target: ag.ID,
			Detail: fmt.Sprintf("pairing %d: key %s", id, pinned.Short())})
	})
	switch {
	case errors.Is(err, errNoFingerprint):
		writeJSON(w, http.StatusConflict, V1Error{Code: "no_fingerprint",
			Message: fmt.Sprintf("pairing %d has not pinned agent %s's key yet", id, pr.AgentID),
			Remedy:  "wait until the Connect step has run (retry the pairing if it failed there), then compare the fingerprint it shows"})
	case err != nil:
		v1Err(w, err)
	case !match:
		a.log.Warn("agent fingerprint not confirmed: mismatch", "agent", pr.AgentID, "pairing", id)
		writeJSON(w, http.StatusConflict, V1Error{Code: "fingerprint_mismatch",
			Message: fmt.Sprintf("the fingerprint given is not the key pinned for agent %s (%s)", reply.AgentID, reply.Short),
			Remedy: fmt.Sprintf("the machine that answered may not be the one you meant: check that you read \"cairn-agent fingerprint\" on the right machine; "+
				"if it still differs, unpair the agent (DELETE /api/v1/agents/%s), check the address or DNS name you paired, then pair again", reply.AgentID)})
	default:
		a.log.Info("agent fingerprint confirmed", "agent", pr.AgentID, "pairing", id, "actor", actor)
		writeJSON(w, http.StatusOK, reply)
	}
}
