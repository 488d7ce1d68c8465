package webui

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// APIError is an error answer of the appliance's API.
type APIError struct {
	Status  int
	Code    string // v1 code; "" for the older endpoints
	Message string
	Remedy  string // what to do, when the API says
}

func (e *APIError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s (%s)", e.Message, e.Code)
	}
	return e.Message
}

// maxAPIAnswer bounds an answer the UI reads from the API.
const maxAPIAnswer = 16 << 20

// recorder is the ResponseWriter of an in-process API call.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	over   bool
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.body.Len()+len(p) > maxAPIAnswer {
		r.over = true
		return 0, fmt.Errorf("answer larger than %d bytes", maxAPIAnswer)
	}
	return r.body.Write(p)
}

// apiRaw calls the appliance's API in process with the page request's
// context and returns the status and body.
func (u *UI) apiRaw(c *gin.Context, method, path string, in any) (int, []byte, error) {
	var body bytes.Buffer
	if in != nil {
		if err := json.NewEncoder(&body).Encode(in); err != nil {
			return 0, nil, fmt.Errorf("%s %s: encode: %w", method, path, err)
		}
	}
	req, err := http.NewRequestWithContext(c.Request.Context(), method, path, &body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.RemoteAddr = c.Request.RemoteAddr
	if a := authOf(c).Actor; a != "" {
		req.Header.Set(actorHeader, a)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := &recorder{header: http.Header{}}
	u.cfg.API.ServeHTTP(rec, req)
	if rec.over {
		return 0, nil, fmt.Errorf("%s %s: answer larger than %d bytes", method, path, maxAPIAnswer)
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.status, rec.body.Bytes(), nil
}

// apiErrorOf decodes an error answer: v1 {"code", "message"} or the older
// {"error"}; anything else by its text.
func apiErrorOf(status int, body []byte) *APIError {
	var v struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Remedy  string `json:"remedy"`
		Error   string `json:"error"`
	}
	e := &APIError{Status: status}
	if json.Unmarshal(body, &v) == nil && (v.Message != "" || v.Error != "") {
		e.Code, e.Message, e.Remedy = v.Code, v.Message, v.Remedy
		if e.Message == "" {
			e.Message = v.Error
		}
		return e
	}
	e.Message = strings.TrimSpace(string(body))
	if len(e.Message) > 200 {
		e.Message = e.Message[:200]
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// api calls the API and decodes a 2xx answer into out (if not nil); other
// answers are an *APIError.
func (u *UI) api(c *gin.Context, method, path string, in, out any) error {
	status, body, err := u.apiRaw(c, method, path, in)
	if err != nil {
		return err
	}
	if status < 200 || status > 299 {
		return fmt.Errorf("%s %s: %w", method, path, apiErrorOf(status, body))
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}
