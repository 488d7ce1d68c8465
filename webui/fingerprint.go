package webui

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
)

// The operator confirms the agent key a pairing's Connect step pinned by
// comparing it with "cairn-agent fingerprint" on the machine: "It
// matches" records it (POST /api/v1/pairings/{id}/confirm-fingerprint);
// "It does not match" leads to a page that explains, lets them type what
// the machine shows, and unpairs the agent.

// mismatchData is the mismatch page's data.
type mismatchData struct {
	Pairing pairingView
	Connect *connectData
	// Remedy is the API's advice after a refused fingerprint.
	Remedy string
	// Unpaired is set once the agent is unpaired.
	Unpaired *unpairView
}

type unpairView struct {
	AgentID      string `json:"agent_id"`
	SeatReleased bool   `json:"seat_released"`
	Dataset      string `json:"dataset"`
}

// maxFingerprintField bounds the fingerprint a form sends.
const maxFingerprintField = 200

func (u *UI) confirmFingerprint(c *gin.Context) {
	p, ok := u.getPairing(c)
	if !ok {
		return
	}
	path := "/pairings/" + strconv.FormatUint(p.ID, 10)
	fp := strings.TrimSpace(c.PostForm("fingerprint"))
	if fp == "" || len(fp) > maxFingerprintField {
		u.showMismatch(c, http.StatusUnprocessableEntity, p, pageData{Errors: map[string]string{"fingerprint": "Enter the fingerprint cairn-agent fingerprint prints on the machine."},
			Form: map[string]string{"fingerprint": fp}}, "")
		return
	}
	err := u.api(c, http.MethodPost, "/api/v1"+path+"/confirm-fingerprint", map[string]string{"fingerprint": fp}, nil)
	var ae *APIError
	switch {
	case err == nil:
		redirect(c, path)
	case errors.As(err, &ae) && ae.Code == "fingerprint_mismatch":
		u.showMismatch(c, http.StatusConflict, p, pageData{Message: "The fingerprint does not match the agent's key. " + upperFirst(ae.Message) + ".",
			Form: map[string]string{"fingerprint": fp}}, remedyOf(err))
	case errors.As(err, &ae) && ae.Status == http.StatusBadRequest:
		u.showMismatch(c, http.StatusUnprocessableEntity, p, pageData{Errors: map[string]string{"fingerprint": upperFirst(ae.Message) + "."},
			Form: map[string]string{"fingerprint": fp}}, "")
	case errors.As(err, &ae) && ae.Status == http.StatusConflict:
		u.render(c, http.StatusConflict, "pairing", pageData{Title: "Pairing " + p.AgentID, Nav: "wizard",
			Message: "The fingerprint cannot be confirmed yet: " + ae.Message + ".", Data: newPairingPage(p)})
	default:
		u.fail(c, err)
	}
}

// remedyOf is the remedy of a v1 error answer, if any.
func remedyOf(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Remedy
	}
	return ""
}

func (u *UI) showMismatch(c *gin.Context, code int, p pairingView, data pageData, remedy string) {
	pp := newPairingPage(p)
	data.Title, data.Nav = "The fingerprint does not match", "wizard"
	data.Data = mismatchData{Pairing: p, Connect: pp.Connect, Remedy: remedy}
	u.render(c, code, "mismatch", data)
}

func (u *UI) mismatchPage(c *gin.Context) {
	p, ok := u.getPairing(c)
	if !ok {
		return
	}
	u.showMismatch(c, http.StatusOK, p, pageData{}, "")
}

// unpairMismatch unpairs the agent of a pairing whose key the operator
// did not recognise. Its dataset is kept (it may hold recovery points of
// an earlier pairing).
func (u *UI) unpairMismatch(c *gin.Context) {
	p, ok := u.getPairing(c)
	if !ok {
		return
	}
	var res unpairView
	if err := u.api(c, http.MethodDelete, "/api/v1/agents/"+url.PathEscape(p.AgentID), nil, &res); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			u.showMismatch(c, http.StatusConflict, p, pageData{Message: "The agent was not unpaired: " + upperFirst(ae.Message) + "."}, "")
			return
		}
		u.fail(c, err)
		return
	}
	u.log.Info("webui: agent unpaired after a fingerprint mismatch", "agent", p.AgentID, "pairing", p.ID, "user", authOf(c).User)
	pp := newPairingPage(p)
	u.render(c, http.StatusOK, "mismatch", pageData{Title: "Agent " + p.AgentID + " unpaired", Nav: "wizard",
		Notice: "Agent " + p.AgentID + " is unpaired.", Data: mismatchData{Pairing: p, Connect: pp.Connect, Unpaired: &res}})
}
