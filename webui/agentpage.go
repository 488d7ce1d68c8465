package webui

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// The agent page (/agents/:id): the agent, "back up now" with live
// progress, its recovery points (download, verify, NBD export), its job
// history, and unpairing. Everything goes through the REST API
// (docs/api.md, "Backups, recovery points, restore").

// jobView is a job as the API shows it.
type jobView struct {
	ID       uint64    `json:"id"`
	AgentID  string    `json:"agent_id"`
	Kind     string    `json:"kind"`
	State    string    `json:"state"`
	Created  time.Time `json:"created"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Error    string    `json:"error"`
	Snapshot string    `json:"snapshot"`
	Detail   string    `json:"detail"`
	Progress struct {
		BytesDone    int64 `json:"bytes_done"`
		BytesTotal   int64 `json:"bytes_total"`
		BytesSent    int64 `json:"bytes_sent"`
		BytesWritten int64 `json:"bytes_written"`
		Rate         int64 `json:"rate"`
		ETASeconds   int64 `json:"eta_seconds"`
	} `json:"progress"`
}

func (j jobView) active() bool { return j.State == "queued" || j.State == "running" }

// pointView is a recovery point as the API shows it.
type pointView struct {
	Snapshot   string       `json:"snapshot"`
	CreatedAt  time.Time    `json:"created_at"`
	Bytes      int64        `json:"bytes"`
	Changed    int64        `json:"changed"`
	BlockSize  int          `json:"block_size"`
	JobID      uint64       `json:"job_id"`
	VerifiedAt *time.Time   `json:"verified_at"`
	Volumes    []pointImage `json:"volumes"`
}

// pointImage is one volume of a recovery point: its image, and the name
// of the image of its block hashes beside it.
type pointImage struct {
	VolumeID    string `json:"volume_id"`
	Image       string `json:"image"`
	Hashes      string `json:"hashes"`
	Size        int64  `json:"size"`
	Blocks      int64  `json:"blocks"`
	Incremental bool   `json:"incremental"`
}

// isVolumeImage reports whether a point's image is a volume's: not the
// block hashes kept beside it (<image>.hashes-<block size>).
func (p pointImage) isVolumeImage() bool {
	return p.Image != "" && !strings.Contains(p.Image, ".hashes-")
}

// nbdView is a running NBD export as the API shows it.
type nbdView struct {
	AgentID  string    `json:"agent_id"`
	Snapshot string    `json:"snapshot"`
	VolumeID string    `json:"volume_id"`
	Image    string    `json:"image"`
	Size     int64     `json:"size"`
	Address  string    `json:"address"`
	Name     string    `json:"name"`
	URI      string    `json:"uri"`
	Started  time.Time `json:"started"`
}

// maxJobRows bounds the job history shown.
const maxJobRows = 50

// agentPageData is the agent page's data.
type agentPageData struct {
	Agent    agentView
	LastSeen string
	Progress progressData
	Records  recordsData
}

// progressData is the live part: the jobs in progress, or how the last
// one ended. Poll is set while a job is queued or running.
type progressData struct {
	AgentID         string
	Active          []jobRow
	Last            *jobRow
	Poll            bool
	Message, Notice string
}

// recordsData are the recovery points, NBD exports and job history.
type recordsData struct {
	AgentID         string
	Points          []pointRow
	Exports         []exportRow
	Jobs            []jobRow
	OlderJobs       int
	Message, Notice string
}

type jobRow struct {
	ID                             uint64
	Kind, State                    string
	Started, Duration              string
	Error, Snapshot, Detail        string
	Done, Total, Percent           int64
	Read, Sent, Written, Rate, ETA string
	Active, Failed, Succeeded      bool
}

type pointRow struct {
	Snapshot            string
	Created, CreatedISO string
	Size, Changed       string
	Verified            string
	VerifiedOK          bool
	JobID               uint64
	Volumes             []volumeRow
}

type volumeRow struct {
	VolumeID, Image, Size string
	Href, Filename        string
	Incremental           bool
	Export                *exportRow
}

type exportRow struct {
	Snapshot, VolumeID, Image string
	URI, Name, Host, Port     string
	Size, Started             string
}

func agentPath(id string) string { return "/agents/" + url.PathEscape(id) }

func apiAgentPath(id string) string { return "/api/v1/agents/" + url.PathEscape(id) }

// apiMessage is what a failed call says to the operator: the API's own
// message when it answered one.
func apiMessage(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Error()
	}
	return err.Error()
}

// errStatus is the page's status for a failed API call: the API's 4xx,
// else 502 (the UI itself did not fail).
func errStatus(err error) int {
	var ae *APIError
	if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 {
		return ae.Status
	}
	return http.StatusBadGateway
}

// loadAgent finds the agent of the request's :id, or answers 404 (unknown)
// or 502 (the API failed) and returns false. An htmx request for an unknown
// agent (unpaired meanwhile) goes to the dashboard: htmx would neither
// show a 404 nor stop polling.
func (u *UI) loadAgent(c *gin.Context) (agentView, bool) {
	var agents []agentView
	if err := u.api(c, http.MethodGet, "/api/v1/agents", nil, &agents); err != nil {
		u.log.Error("webui: list agents", "err", err)
		u.render(c, http.StatusBadGateway, "error", pageData{Title: "The appliance did not answer",
			Message: "Listing the agents failed: " + apiMessage(err)})
		c.Abort()
		return agentView{}, false
	}
	for _, a := range agents {
		if a.ID == c.Param("id") {
			return a, true
		}
	}
	if isHTMX(c) {
		redirect(c, "/")
		return agentView{}, false
	}
	u.notFound(c)
	c.Abort()
	return agentView{}, false
}

// lastSeen is when the agent was last heard of: its session's last
// message, else the last use of its agent token.
func (u *UI) lastSeen(c *gin.Context, a agentView) string {
	if a.Session != nil && !a.Session.LastSeen.IsZero() {
		return ago(a.Session.LastSeen)
	}
	var toks []tokenView
	if err := u.api(c, http.MethodGet, "/api/tokens?agent="+url.QueryEscape(a.ID), nil, &toks); err != nil {
		return "—"
	}
	var last time.Time
	for _, t := range toks {
		if t.AgentID == a.ID && t.LastSeenAt.After(last) {
			last = t.LastSeenAt
		}
	}
	if last.IsZero() {
		return "—"
	}
	return ago(last)
}

// loadJobs returns the agent's jobs, newest first.
func (u *UI) loadJobs(c *gin.Context, id string) ([]jobView, error) {
	var jobs []jobView
	err := u.api(c, http.MethodGet, apiAgentPath(id)+"/backups", nil, &jobs)
	return jobs, err
}

func newProgress(id string, jobs []jobView, err error) progressData {
	p := progressData{AgentID: id}
	if err != nil {
		// Not knowing is no reason to stop watching.
		p.Message, p.Poll = "The jobs could not be read: "+apiMessage(err), true
		return p
	}
	for _, j := range jobs {
		if j.active() {
			p.Active = append(p.Active, newJobRow(j))
		} else if p.Last == nil {
			r := newJobRow(j)
			p.Last = &r
		}
	}
	// The API lists newest first; the oldest active job runs first.
	for i, j := 0, len(p.Active)-1; i < j; i, j = i+1, j-1 {
		p.Active[i], p.Active[j] = p.Active[j], p.Active[i]
	}
	p.Poll = len(p.Active) > 0
	return p
}

func newJobRow(j jobView) jobRow {
	pr := j.Progress
	r := jobRow{ID: j.ID, Kind: j.Kind, State: j.State, Error: j.Error, Snapshot: j.Snapshot, Detail: j.Detail,
		Started: when(j.Started), Done: pr.BytesDone, Total: pr.BytesTotal,
		Sent: size(pr.BytesSent), Written: size(pr.BytesWritten), Rate: "—", ETA: "—",
		Active: j.active(), Failed: j.State == "failed", Succeeded: j.State == "succeeded"}
	if r.Kind == "" {
		r.Kind = "job"
	}
	if !j.Started.IsZero() {
		end := j.Finished
		if end.IsZero() {
			end = time.Now()
		}
		r.Duration = duration(end.Sub(j.Started))
	}
	r.Read = size(pr.BytesDone)
	if pr.BytesTotal > 0 {
		r.Percent = int64(percent(pr.BytesDone, pr.BytesTotal))
		r.Read = fmt.Sprintf("%s of %s (%d%%)", size(pr.BytesDone), size(pr.BytesTotal), r.Percent)
	}
	if pr.Rate > 0 {
		r.Rate = size(pr.Rate) + "/s"
	}
	if pr.ETASeconds > 0 {
		r.ETA = duration(time.Duration(pr.ETASeconds) * time.Second)
	}
	return r
}

func size(n int64) string { return humanBytes(uint64(max(n, 0))) }

func duration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm %02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
}

// fileSafe keeps a file name's letters, digits, '.', '-' and '_', and
// replaces each run of anything else by one '_'.
func fileSafe(s string) string {
	var b strings.Builder
	under := false
	for _, r := range s {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			b.WriteRune(r)
			under = false
		} else if !under {
			b.WriteByte('_')
			under = true
		}
	}
	return strings.Trim(b.String(), "_.")
}

// loadRecords reads the agent's recovery points, its NBD exports and
// (unless given) its jobs; what fails is said in Message.
func (u *UI) loadRecords(c *gin.Context, id string, jobs []jobView, jobsErr error) recordsData {
	d := recordsData{AgentID: id}
	var msgs []string
	var points []pointView
	if err := u.api(c, http.MethodGet, apiAgentPath(id)+"/recovery-points", nil, &points); err != nil {
		msgs = append(msgs, "The recovery points could not be read: "+apiMessage(err))
	}
	var exports []nbdView
	if err := u.api(c, http.MethodGet, "/api/v1/nbd", nil, &exports); err != nil {
		msgs = append(msgs, "The NBD exports could not be read: "+apiMessage(err))
	}
	byImage := make(map[string]*exportRow)
	for _, x := range exports {
		if x.AgentID != id {
			continue
		}
		host, port, _ := net.SplitHostPort(x.Address)
		r := exportRow{Snapshot: x.Snapshot, VolumeID: x.VolumeID, Image: x.Image, URI: x.URI, Name: x.Name,
			Host: host, Port: port, Size: size(x.Size), Started: when(x.Started)}
		d.Exports = append(d.Exports, r)
		byImage[x.Snapshot+"/"+x.Image] = &d.Exports[len(d.Exports)-1]
	}
	for _, p := range points {
		r := pointRow{Snapshot: p.Snapshot, Created: when(p.CreatedAt), CreatedISO: p.CreatedAt.UTC().Format(time.RFC3339),
			Size: size(p.Bytes), Changed: size(p.Changed), Verified: "never", JobID: p.JobID}
		if p.VerifiedAt != nil && !p.VerifiedAt.IsZero() {
			r.Verified, r.VerifiedOK = when(*p.VerifiedAt), true
		}
		for _, im := range p.Volumes {
			if !im.isVolumeImage() {
				continue
			}
			vol := im.VolumeID
			if vol == "" {
				vol = im.Image
			}
			r.Volumes = append(r.Volumes, volumeRow{VolumeID: vol, Image: im.Image, Size: size(im.Size), Incremental: im.Incremental,
				Href:     apiAgentPath(id) + "/recovery-points/" + url.PathEscape(p.Snapshot) + "/volumes/" + url.PathEscape(im.Image),
				Filename: fileSafe(id+"-"+p.Snapshot+"-"+vol) + ".img",
				Export:   byImage[p.Snapshot+"/"+im.Image]})
		}
		d.Points = append(d.Points, r)
	}
	if jobs == nil && jobsErr == nil {
		jobs, jobsErr = u.loadJobs(c, id)
	}
	if jobsErr != nil {
		msgs = append(msgs, "The job history could not be read: "+apiMessage(jobsErr))
	}
	for i, j := range jobs {
		if i == maxJobRows {
			d.OlderJobs = len(jobs) - maxJobRows
			break
		}
		r := newJobRow(j)
		if j.active() {
			r.Error = "" // shown live above
		}
		d.Jobs = append(d.Jobs, r)
	}
	d.Message = strings.Join(msgs, "\n")
	return d
}

// agentData loads everything the page shows.
func (u *UI) agentData(c *gin.Context, a agentView) agentPageData {
	jobs, err := u.loadJobs(c, a.ID)
	return agentPageData{Agent: a, LastSeen: u.lastSeen(c, a), Progress: newProgress(a.ID, jobs, err),
		Records: u.loadRecords(c, a.ID, jobs, err)}
}

// showAgent renders the agent page with a message (code >= 400) or a
// notice.
func (u *UI) showAgent(c *gin.Context, a agentView, code int, msg, notice string) {
	u.render(c, code, "agent", pageData{Title: "Agent " + a.ID, Nav: "dashboard", Message: msg, Notice: notice,
		Data: u.agentData(c, a)})
}

func (u *UI) agentPage(c *gin.Context) {
	a, ok := u.loadAgent(c)
	if !ok {
		return
	}
	u.showAgent(c, a, http.StatusOK, "", "")
}

// renderProgress answers the live fragment. Once no job is in progress it
// no longer asks to be polled, and it tells the page (HX-Trigger
// jobs-done) to reload the recovery points and the job history.
func (u *UI) renderProgress(c *gin.Context, id, msg, notice string) {
	jobs, err := u.loadJobs(c, id)
	p := newProgress(id, jobs, err)
	if msg != "" {
		p.Message = strings.TrimSpace(msg + "\n" + p.Message)
	}
	p.Notice = notice
	if !p.Poll {
		c.Header("HX-Trigger", "jobs-done")
	}
	u.renderBlock(c, http.StatusOK, "agent", "progress", pageData{Data: agentPageData{Progress: p}})
}

func (u *UI) renderRecords(c *gin.Context, id, msg, notice string) {
	r := u.loadRecords(c, id, nil, nil)
	r.Message = strings.TrimSpace(msg + "\n" + r.Message)
	r.Notice = notice
	u.renderBlock(c, http.StatusOK, "agent", "records", pageData{Data: agentPageData{Records: r}})
}

// agentProgress is the fragment htmx polls while a job runs.
func (u *UI) agentProgress(c *gin.Context) {
	a, ok := u.loadAgent(c)
	if !ok {
		return
	}
	u.renderProgress(c, a.ID, "", "")
}

// agentRecords is the fragment of recovery points, exports and jobs,
// reloaded when a job ends.
func (u *UI) agentRecords(c *gin.Context) {
	a, ok := u.loadAgent(c)
	if !ok {
		return
	}
	u.renderRecords(c, a.ID, "", "")
}

// actionDone answers a form: for htmx the fragment it targets (with the
// message or notice in it, always 200 so that htmx swaps it), else the
// page with the message (and the API's status), or a redirect to the page
// with the notice.
func (u *UI) actionDone(c *gin.Context, a agentView, fragment string, err error, failed, notice string) {
	msg := ""
	if err != nil {
		msg = failed + ": " + apiMessage(err)
		u.log.Warn("webui: agent action refused", "path", c.Request.URL.Path, "err", err)
	}
	if isHTMX(c) {
		if err != nil {
			notice = ""
		}
		if fragment == "progress" {
			u.renderProgress(c, a.ID, msg, notice)
		} else {
			u.renderRecords(c, a.ID, msg, notice)
		}
		return
	}
	if err != nil {
		u.showAgent(c, a, errStatus(err), msg, "")
		return
	}
	u.setFlash(c, notice)
	redirect(c, agentPath(a.ID))
}

func (u *UI) agentBackup(c *gin.Context) {
	a, ok := u.loadAgent(c)
	if !ok {
		return
	}
	var job jobView
	err := u.api(c, http.MethodPost, apiAgentPath(a.ID)+"/backups", nil, &job)
	u.actionDone(c, a, "progress", err, "The backup did not start", fmt.Sprintf("Backup started (job #%d).", job.ID))
}

// pointPath is the API path of a recovery point of the request.
func pointPath(id string, c *gin.Context) string {
	return apiAgentPath(id) + "/recovery-points/" + url.PathEscape(c.Param("snap"))
}

func (u *UI) pointVerify(c *gin.Context) {
	a, ok := u.loadAgent(c)
	if !ok {
		return
	}
	var job jobView
	err := u.api(c, http.MethodPost, pointPath(a.ID, c)+"/verify", nil, &job)
	u.actionDone(c, a, "progress", err, "The verification did not start",
		fmt.Sprintf("Verification of %s started (job #%d).", c.Param("snap"), job.ID))
}

func (u *UI) nbdStart(c *gin.Context) {
	a, ok := u.loadAgent(c)
	if !ok {
		return
	}
	var x nbdView
	err := u.api(c, http.MethodPost, pointPath(a.ID, c)+"/volumes/"+url.PathEscape(c.Param("vol"))+"/nbd", nil, &x)
	u.actionDone(c, a, "records", err, "The NBD export did not start",
		fmt.Sprintf("Volume %s of %s is exported read-only at %s.", x.VolumeID, x.Snapshot, x.URI))
}

func (u *UI) nbdStop(c *gin.Context) {
	a, ok := u.loadAgent(c)
	if !ok {
		return
	}
	snap, vol := c.Param("snap"), c.Param("vol")
	var exports []nbdView
	if u.api(c, http.MethodGet, "/api/v1/nbd", nil, &exports) == nil {
		for _, x := range exports {
			if x.AgentID == a.ID && x.Snapshot == snap && x.Image == vol && x.VolumeID != "" {
				vol = x.VolumeID
			}
		}
	}
	err := u.api(c, http.MethodDelete, pointPath(a.ID, c)+"/volumes/"+url.PathEscape(c.Param("vol"))+"/nbd", nil, nil)
	u.actionDone(c, a, "records", err, "The NBD export was not stopped",
		fmt.Sprintf("The NBD export of volume %s of %s is stopped.", vol, snap))
}

// unpairData is the unpair confirmation page's data.
type unpairData struct {
	Agent agentView
}

func (u *UI) unpairPage(c *gin.Context) {
	a, ok := u.loadAgent(c)
	if !ok {
		return
	}
	u.render(c, http.StatusOK, "unpair", pageData{Title: "Unpair " + a.ID, Nav: "dashboard",
		Form: map[string]string{"dataset": "keep"}, Data: unpairData{Agent: a}})
}

// unpairResult is the API's answer to DELETE /api/v1/agents/{id}.
type unpairResult struct {
	SeatReleased     bool   `json:"seat_released"`
	Dataset          string `json:"dataset"`
	DatasetDestroyed bool   `json:"dataset_destroyed"`
}

func (u *UI) unpairSubmit(c *gin.Context) {
	a, ok := u.loadAgent(c)
	if !ok {
		return
	}
	dataset, force := c.PostForm("dataset"), c.PostForm("force") != ""
	form := map[string]string{"dataset": dataset}
	if force {
		form["force"] = "on"
	}
	data := pageData{Title: "Unpair " + a.ID, Nav: "dashboard", Form: form, Data: unpairData{Agent: a}}
	if dataset != "keep" && dataset != "destroy" {
		data.Message = "Choose whether to keep or destroy the agent's recovery points."
		data.Errors = map[string]string{"dataset": data.Message}
		u.render(c, http.StatusUnprocessableEntity, "unpair", data)
		return
	}
	q := url.Values{"dataset": {dataset}}
	if force {
		q.Set("force", "1")
	}
	var res unpairResult
	if err := u.api(c, http.MethodDelete, apiAgentPath(a.ID)+"?"+q.Encode(), nil, &res); err != nil {
		u.log.Warn("webui: unpair refused", "agent", a.ID, "err", err)
		data.Message = "The agent was not unpaired: " + apiMessage(err)
		u.render(c, errStatus(err), "unpair", data)
		return
	}
	msg := "Agent " + a.ID + " unpaired."
	if res.SeatReleased {
		msg += " Its license seat is released."
	}
	switch {
	case res.DatasetDestroyed:
		msg += " Its dataset " + res.Dataset + " and its recovery points are destroyed."
	case res.Dataset != "":
		msg += " Its dataset " + res.Dataset + " is kept, with its recovery points."
	}
	msg += ` Run "cairn-agent unpair" on the machine to let it pair again.`
	u.setFlash(c, msg)
	redirect(c, "/")
}

// The flash: a notice that survives one redirect (POST, 303, GET), in a
// short-lived cookie the next full page takes.

// maxFlash bounds a flash message.
const maxFlash = 1000

func (u *UI) flashCookie() string {
	if u.cfg.Secure {
		return "__Host-cairn_flash"
	}
	return "cairn_flash"
}

// setFlash sets the flash, signed for the request's session: another
// site on the same host could set a cookie of that name, but not sign it.
func (u *UI) setFlash(c *gin.Context, msg string) {
	if len(msg) > maxFlash {
		msg = msg[:maxFlash]
	}
	sid := authOf(c).SessionID
	if sid == "" {
		return
	}
	u.setCookie(c, u.flashCookie(), base64.RawURLEncoding.EncodeToString([]byte(msg))+"."+flashMAC(sid, msg), time.Minute, false)
}

// takeFlash returns the flash of a signed-in request, if its session
// signed it, and clears it.
func (u *UI) takeFlash(c *gin.Context) string {
	ck, err := c.Request.Cookie(u.flashCookie())
	sid := authOf(c).SessionID
	if err != nil || sid == "" {
		return ""
	}
	u.setCookie(c, u.flashCookie(), "", -1, false)
	enc, mac, ok := strings.Cut(ck.Value, ".")
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if !ok || err != nil || len(b) > maxFlash || !equalSecret(mac, flashMAC(sid, string(b))) {
		return ""
	}
	return strings.ToValidUTF8(string(b), "")
}

// flashMAC signs a flash message for a session.
func flashMAC(sessionID, msg string) string {
	return sessionMAC(sessionID, "cairn webui flash\x00"+msg)
}
