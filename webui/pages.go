package webui

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/cairnbackup/cairn/licensing"
	"github.com/cairnbackup/cairn/pairing"
	"github.com/gin-gonic/gin"
)

type dashboardData struct {
	Agents   []agentView
	Pairings []pairingView
	// Storage is the pool's space; nil if the appliance cannot tell
	// (StorageError says why).
	Storage      *storageView
	StorageError string
	// LatestPairing is each agent's newest pairing, where its key is
	// confirmed.
	LatestPairing map[string]uint64
}

// recentPairings is how many pairings the dashboard lists.
const recentPairings = 10

func (u *UI) loadDashboard(c *gin.Context) (dashboardData, error) {
	var d dashboardData
	if err := u.api(c, http.MethodGet, "/api/v1/agents", nil, &d.Agents); err != nil {
		return d, err
	}
	if err := u.api(c, http.MethodGet, "/api/v1/pairings", nil, &d.Pairings); err != nil {
		return d, err
	}
	slices.SortFunc(d.Pairings, func(a, b pairingView) int { return b.CreatedAt.Compare(a.CreatedAt) })
	d.LatestPairing = make(map[string]uint64)
	for _, p := range d.Pairings {
		if _, ok := d.LatestPairing[p.AgentID]; !ok {
			d.LatestPairing[p.AgentID] = p.ID
		}
	}
	var st storageView
	if err := u.api(c, http.MethodGet, "/api/v1/storage", nil, &st); err != nil {
		d.StorageError = err.Error()
	} else {
		d.Storage = &st
	}
	if len(d.Pairings) > recentPairings {
		d.Pairings = d.Pairings[:recentPairings]
	}
	return d, nil
}

func (u *UI) dashboard(c *gin.Context) {
	d, err := u.loadDashboard(c)
	if err != nil {
		u.fail(c, err)
		return
	}
	u.render(c, http.StatusOK, "dashboard", pageData{Title: "Dashboard", Nav: "dashboard", Data: d})
}

func (u *UI) agentsPartial(c *gin.Context) {
	d, err := u.loadDashboard(c)
	if err != nil {
		u.fail(c, err)
		return
	}
	u.renderBlock(c, http.StatusOK, "dashboard", "agents", pageData{Data: d})
}

// wizardData is the add-agent form's data besides the field values.
type wizardData struct {
	Grid Grid
	// Reverse are the connected reverse-mode agents one may pick.
	Reverse []agentView
	// Refused lists the targets the API refused, with why.
	Refused []string
	// SettingsOpen unfolds the schedule and retention fields: they have
	// a message.
	SettingsOpen bool
}

// settingsOpen reports whether any message is about a settings field.
func settingsOpen(errs map[string]string) bool {
	for k := range errs {
		if k != "targets" && k != "product_key" && k != "port" {
			return true
		}
	}
	return false
}

func (u *UI) reverseAgents(c *gin.Context) ([]agentView, error) {
	var agents []agentView
	if err := u.api(c, http.MethodGet, "/api/v1/agents", nil, &agents); err != nil {
		return nil, err
	}
	var out []agentView
	for _, a := range agents {
		if a.Mode == "reverse" && a.Connected {
			out = append(out, a)
		}
	}
	return out, nil
}

func (u *UI) wizardPage(c *gin.Context) {
	rev, err := u.reverseAgents(c)
	if err != nil {
		u.fail(c, err)
		return
	}
	f := defaultSettingsForm()
	f.Values["reverse"] = c.Query("agent")
	u.render(c, http.StatusOK, "wizard", pageData{Title: "Add agents", Nav: "wizard", Form: f.Values,
		Data: wizardData{Grid: f.Grid, Reverse: rev}})
}

// startPairingsRequest is the body of POST /api/v1/pairings.
type startPairingsRequest struct {
	Target     string            `json:"target,omitempty"`
	Port       int               `json:"port,omitempty"`
	AgentID    string            `json:"agent_id,omitempty"`
	ProductKey string            `json:"product_key"`
	Settings   *pairing.Settings `json:"settings,omitempty"`
}

func (u *UI) wizardSubmit(c *gin.Context) {
	f := parseSettingsForm(c)
	targets := c.PostForm("targets")
	reverse := strings.TrimSpace(c.PostForm("reverse"))
	key := strings.TrimSpace(c.PostForm("product_key"))
	portText := strings.TrimSpace(c.PostForm("port"))
	f.Values["targets"], f.Values["reverse"], f.Values["product_key"], f.Values["port"] = targets, reverse, key, portText
	s, errs := f.settings(nil)
	port := 0
	if portText != "" {
		n, err := strconv.Atoi(portText)
		switch {
		case err != nil || n < 1 || n > 65535:
			errs["port"] = "Enter a port from 1 to 65535, or leave it empty for 25568."
		case reverse != "":
			errs["port"] = "An agent connected with its token has no port: leave it empty."
		default:
			port = n
		}
	}
	list, msg := splitTargets(targets)
	switch {
	case msg != "":
		errs["targets"] = msg
	case len(list) == 0 && reverse == "":
		errs["targets"] = "Name at least one machine, or pick a connected agent below."
	case len(list) > 0 && reverse != "":
		errs["targets"] = "Either name machines or pick a connected agent, not both."
	}
	if key == "" {
		errs["product_key"] = "Enter the product key."
	} else if _, err := licensing.ParseKey(key); err != nil {
		errs["product_key"] = upperFirst(err.Error()) + "."
	}
	data := pageData{Title: "Add agents", Nav: "wizard", Form: f.Values, Errors: errs}
	show := func(code int, refused []string) {
		rev, err := u.reverseAgents(c)
		if err != nil {
			u.fail(c, err)
			return
		}
		data.Data = wizardData{Grid: f.Grid, Reverse: rev, Refused: refused, SettingsOpen: settingsOpen(errs)}
		u.render(c, code, "wizard", data)
	}
	if len(errs) > 0 {
		data.Message = "Please correct the fields marked below."
		show(http.StatusUnprocessableEntity, nil)
		return
	}
	req := startPairingsRequest{Target: strings.Join(list, "\n"), Port: port, AgentID: reverse, ProductKey: key, Settings: &s}
	status, body, err := u.apiRaw(c, http.MethodPost, "/api/v1/pairings", req)
	if err != nil {
		u.fail(c, err)
		return
	}
	var reply struct {
		Pairings []pairingView `json:"pairings"`
		Errors   []struct {
			Target  string `json:"target"`
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if status != http.StatusCreated && status != http.StatusBadRequest || json.Unmarshal(body, &reply) != nil {
		e := apiErrorOf(status, body)
		data.Message = "The appliance refused the pairing: " + e.Error()
		show(http.StatusBadGateway, nil)
		return
	}
	var refused []string
	for _, e := range reply.Errors {
		t := e.Target
		if t == "" {
			t = reverse
		}
		refused = append(refused, fmt.Sprintf("%s: %s", t, e.Message))
		if e.Code == "bad_product_key" {
			errs["product_key"] = upperFirst(e.Message) + "."
		}
	}
	if len(reply.Pairings) == 0 {
		if len(refused) == 0 { // a v1 error, not a per-target one
			e := apiErrorOf(status, body)
			refused = append(refused, e.Error())
		}
		data.Message = "No pairing started."
		show(http.StatusUnprocessableEntity, refused)
		return
	}
	if len(reply.Pairings) == 1 && len(refused) == 0 {
		redirect(c, "/pairings/"+strconv.FormatUint(reply.Pairings[0].ID, 10))
		return
	}
	// Several pairings (or some refused): the dashboard lists them live.
	d, err := u.loadDashboard(c)
	if err != nil {
		u.fail(c, err)
		return
	}
	notice := fmt.Sprintf("%d pairing(s) started.", len(reply.Pairings))
	u.render(c, http.StatusCreated, "dashboard", pageData{Title: "Dashboard", Nav: "dashboard", Notice: notice,
		Message: strings.Join(refused, "\n"), Data: d})
}

func (u *UI) getPairing(c *gin.Context) (pairingView, bool) {
	id, err := strconv.ParseUint(c.Param("id"), 10, 64)
	if err != nil {
		u.notFound(c)
		return pairingView{}, false
	}
	var p pairingView
	if err := u.api(c, http.MethodGet, "/api/v1/pairings/"+strconv.FormatUint(id, 10), nil, &p); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			u.notFound(c)
			return pairingView{}, false
		}
		u.fail(c, err)
		return pairingView{}, false
	}
	return p, true
}

func (u *UI) pairingPage(c *gin.Context) {
	p, ok := u.getPairing(c)
	if !ok {
		return
	}
	u.render(c, http.StatusOK, "pairing", pageData{Title: "Pairing " + p.AgentID, Nav: "wizard", Data: newPairingPage(p)})
}

// pairingSteps is the fragment htmx polls while the pairing runs; once it
// stops running the fragment no longer asks to be polled.
func (u *UI) pairingSteps(c *gin.Context) {
	p, ok := u.getPairing(c)
	if !ok {
		return
	}
	u.renderBlock(c, http.StatusOK, "pairing", "steps", pageData{Data: newPairingPage(p)})
}

func (u *UI) pairingRetry(c *gin.Context) {
	p, ok := u.getPairing(c)
	if !ok {
		return
	}
	path := "/pairings/" + strconv.FormatUint(p.ID, 10)
	if err := u.api(c, http.MethodPost, "/api/v1"+path+"/retry", nil, nil); err != nil {
		pp := newPairingPage(p)
		u.render(c, http.StatusConflict, "pairing", pageData{Title: "Pairing " + p.AgentID, Nav: "wizard",
			Message: "The retry was refused: " + err.Error(), Data: pp})
		return
	}
	redirect(c, path)
}

// settingsData is the settings page's data besides the field values.
type settingsData struct {
	AgentID string
	Grid    Grid
	// Volumes are the agent's volumes (live, or from its last Inspect
	// step); Chosen the ones ticked.
	Volumes []volumeView
	Chosen  map[string]bool
	// VolumesFrom says where Volumes come from.
	VolumesFrom string
}

// agentVolumes are the agent's volumes: live when it is connected, else
// what its latest pairing's Inspect step found.
func (u *UI) agentVolumes(c *gin.Context, a agentView) ([]volumeView, string) {
	if a.Connected {
		var v struct {
			Volumes []volumeView `json:"volumes"`
		}
		if err := u.api(c, http.MethodGet, "/api/agents/"+url.PathEscape(a.ID)+"/volumes", nil, &v); err == nil {
			return v.Volumes, "the agent, just now"
		}
	}
	var ps []pairingView
	if err := u.api(c, http.MethodGet, "/api/v1/pairings", nil, &ps); err != nil {
		return nil, ""
	}
	var best *pairingView
	for i := range ps {
		if ps[i].AgentID == a.ID && (best == nil || ps[i].UpdatedAt.After(best.UpdatedAt)) {
			if pp := newPairingPage(ps[i]); pp.Inspect != nil && len(pp.Inspect.Volumes) > 0 {
				best = &ps[i]
			}
		}
	}
	if best == nil {
		return nil, ""
	}
	return newPairingPage(*best).Inspect.Volumes, "the pairing's Inspect step, " + when(best.UpdatedAt)
}

func (u *UI) findAgent(c *gin.Context) (agentView, bool) {
	var agents []agentView
	if err := u.api(c, http.MethodGet, "/api/v1/agents", nil, &agents); err != nil {
		u.fail(c, err)
		return agentView{}, false
	}
	for _, a := range agents {
		if a.ID == c.Param("id") {
			return a, true
		}
	}
	u.notFound(c)
	return agentView{}, false
}

func (u *UI) settingsPage(c *gin.Context) {
	a, ok := u.findAgent(c)
	if !ok {
		return
	}
	s := pairing.DefaultSettings()
	if a.Settings != nil {
		s = *a.Settings
	}
	f := settingsFormFrom(s)
	vols, from := u.agentVolumes(c, a)
	u.render(c, http.StatusOK, "settings", pageData{Title: "Settings of " + a.ID, Nav: "dashboard", Form: f.Values,
		Data: settingsData{AgentID: a.ID, Grid: f.Grid, Volumes: vols, VolumesFrom: from, Chosen: chosen(f.Volumes)}})
}

func chosen(vols []string) map[string]bool {
	m := make(map[string]bool, len(vols))
	for _, v := range vols {
		m[v] = true
	}
	return m
}

func (u *UI) settingsSubmit(c *gin.Context) {
	a, ok := u.findAgent(c)
	if !ok {
		return
	}
	f := parseSettingsForm(c)
	vols, from := u.agentVolumes(c, a)
	var ids []string // nil: the volumes are unknown, do not check them
	for _, v := range vols {
		ids = append(ids, v.ID)
	}
	s, errs := f.settings(ids)
	data := pageData{Title: "Settings of " + a.ID, Nav: "dashboard", Form: f.Values, Errors: errs,
		Data: settingsData{AgentID: a.ID, Grid: f.Grid, Volumes: vols, VolumesFrom: from, Chosen: chosen(f.Volumes)}}
	if len(errs) > 0 {
		data.Message = "Please correct the fields marked below."
		u.render(c, http.StatusUnprocessableEntity, "settings", data)
		return
	}
	err := u.api(c, http.MethodPut, "/api/v1/agents/"+url.PathEscape(a.ID)+"/settings", s, nil)
	switch {
	case err != nil:
		data.Message = "The appliance refused the settings: " + err.Error()
		u.render(c, http.StatusUnprocessableEntity, "settings", data)
	default:
		data.Notice = "Settings saved."
		u.render(c, http.StatusOK, "settings", data)
	}
}
