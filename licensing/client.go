package licensing

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Error codes of the activation service (ServiceError.Code). They are stable:
// the appliance branches on them.
const (
	CodeKeyInvalid      = "key_invalid"      // no such key
	CodeKeyRevoked      = "key_revoked"      // the vendor revoked the key
	CodeKeyExpired      = "key_expired"      // the key's term is over
	CodeNoSeats         = "no_seats"         // every seat of the key is taken
	CodeActiveElsewhere = "active_elsewhere" // the agent is activated on another appliance
	CodeBadRequest      = "bad_request"      // the request is malformed
	CodeInternal        = "internal"         // the service failed
)

// ServiceError is the activation service's answer to a request it refused.
// Message is for people and never contains a key.
type ServiceError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *ServiceError) Error() string {
	return "activation service: " + e.Code + ": " + e.Message
}

// IsRefusal reports whether err is the service's verdict on a key or a seat
// (key_invalid, key_revoked, key_expired, no_seats, active_elsewhere), which
// ends an activation at once. Any other failure, including an unreachable
// service, leaves the appliance in the grace period.
func IsRefusal(err error) bool {
	var se *ServiceError
	if !errors.As(err, &se) || errors.Is(err, ErrUnreachable) {
		return false
	}
	switch se.Code {
	case CodeKeyInvalid, CodeKeyRevoked, CodeKeyExpired, CodeNoSeats, CodeActiveElsewhere:
		return true
	}
	return false
}

// ErrUnreachable is matched (errors.Is) by the Client's errors when the
// service could not be asked: network failure, timeout, or a server error
// (5xx). The appliance then relies on its stored activations and the grace
// period.
var ErrUnreachable = errors.New("licensing: activation service unreachable")

// ErrBadReply is matched by the Client's errors when the service answered
// with something that is not a reply of the activation API (wrong URL, a
// proxy's page, a reply that does not match the request).
var ErrBadReply = errors.New("licensing: bad reply from the activation service")

// ActivateRequest asks the service to activate Key for the agent with the
// public-key fingerprint AgentFingerprint on the appliance ApplianceID.
// Hostname is the agent's name as the appliance shows it (informative).
type ActivateRequest struct {
	Key              Key
	ApplianceID      string
	AgentFingerprint string
	Hostname         string
}

// DeactivateRequest asks the service to release the seat the agent holds on
// this appliance.
type DeactivateRequest struct {
	Key              Key
	ApplianceID      string
	AgentFingerprint string
}

// StatusRequest asks for the state of Key and of its activations on the
// appliance ApplianceID.
type StatusRequest struct {
	Key         Key
	ApplianceID string
}

// Key states (KeyStatus.State).
const (
	KeyActive  = "active"
	KeyRevoked = "revoked"
)

// KeyStatus is the service's answer to a status request.
type KeyStatus struct {
	KeyID   string    `json:"key_id"`
	Edition string    `json:"edition"`
	State   string    `json:"state"` // KeyActive or KeyRevoked
	Seats   int       `json:"seats"`
	Used    int       `json:"used"`
	Expires time.Time `json:"expires"`
	// Activations are the key's active activations on the requesting
	// appliance.
	Activations []AgentActivation `json:"activations"`
}

// AgentActivation is one active activation in a KeyStatus.
type AgentActivation struct {
	AgentFingerprint string    `json:"agent_fingerprint"`
	Hostname         string    `json:"hostname,omitempty"`
	Activated        time.Time `json:"activated"`
	Expires          time.Time `json:"expires"`
}

// apiRequest is the JSON body of the service's POST endpoints. The key is in
// clear here only: never in a URL.
type apiRequest struct {
	Key              string `json:"key"`
	ApplianceID      string `json:"appliance_id,omitempty"`
	AgentFingerprint string `json:"agent_fingerprint,omitempty"`
	Hostname         string `json:"hostname,omitempty"`
}

// maxReplyLen bounds a reply body that the Client reads.
const maxReplyLen = 1 << 20

// defaultHTTP is the Client's HTTP client when it has none.
var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

// Client talks to the activation service at BaseURL (e.g.
// "https://activation.example.com") and verifies its activations with
// PublicKey, the vendor's key configured out of band: the client never takes
// a key from the service it verifies.
type Client struct {
	BaseURL   string
	HTTP      *http.Client      // nil: a client with a 30 s timeout
	PublicKey ed25519.PublicKey // verifies every activation received
	Now       func() time.Time  // nil: time.Now; the clock of verification
}

// Activate activates req.Key for the agent on the appliance and returns the
// verified activation and its signed form, which the appliance stores.
// Activating an agent that is already active on this appliance renews its
// activation without taking another seat. Errors are a *ServiceError for a
// refusal, or wrap ErrUnreachable, ErrBadReply or ErrInvalidActivation.
func (c *Client) Activate(ctx context.Context, req ActivateRequest) (Activation, Signed, error) {
	if req.Key.IsZero() {
		return Activation{}, Signed{}, errors.New("licensing: activate: no product key")
	}
	var s Signed
	body := apiRequest{Key: req.Key.Reveal(), ApplianceID: req.ApplianceID, AgentFingerprint: req.AgentFingerprint, Hostname: req.Hostname}
	if err := c.post(ctx, "/v1/activate", body, &s); err != nil {
		return Activation{}, Signed{}, fmt.Errorf("activate %s: %w", req.Key, err)
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	a, err := Verify(c.PublicKey, s, now())
	if err != nil {
		return Activation{}, Signed{}, fmt.Errorf("activate %s: verify the reply: %w", req.Key, err)
	}
	if a.KeyID != req.Key.ID() || a.AgentFingerprint != req.AgentFingerprint || a.ApplianceID != req.ApplianceID {
		return Activation{}, Signed{}, fmt.Errorf("activate %s: %w: the activation is for another key, agent or appliance", req.Key, ErrBadReply)
	}
	return a, s, nil
}

// Deactivate releases the seat that the agent holds with req.Key on this
// appliance. Releasing a seat that is not held is not an error.
func (c *Client) Deactivate(ctx context.Context, req DeactivateRequest) error {
	if req.Key.IsZero() {
		return errors.New("licensing: deactivate: no product key")
	}
	body := apiRequest{Key: req.Key.Reveal(), ApplianceID: req.ApplianceID, AgentFingerprint: req.AgentFingerprint}
	var reply struct {
		Released bool `json:"released"`
	}
	if err := c.post(ctx, "/v1/deactivate", body, &reply); err != nil {
		return fmt.Errorf("deactivate %s: %w", req.Key, err)
	}
	return nil
}

// Status returns the state of req.Key and its activations on the appliance.
func (c *Client) Status(ctx context.Context, req StatusRequest) (KeyStatus, error) {
	if req.Key.IsZero() {
		return KeyStatus{}, errors.New("licensing: status: no product key")
	}
	var st KeyStatus
	if err := c.post(ctx, "/v1/status", apiRequest{Key: req.Key.Reveal(), ApplianceID: req.ApplianceID}, &st); err != nil {
		return KeyStatus{}, fmt.Errorf("status of %s: %w", req.Key, err)
	}
	if st.KeyID != req.Key.ID() {
		return KeyStatus{}, fmt.Errorf("status of %s: %w: status of another key", req.Key, ErrBadReply)
	}
	return st, nil
}

// post sends body to path and decodes a 200 reply into out. Its errors never
// contain the request body.
func (c *Client) post(ctx context.Context, path string, body apiRequest, out any) error {
	base, err := url.Parse(c.BaseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("licensing: service URL %q is not an http(s) URL", printable(c.BaseURL))
	}
	u := strings.TrimSuffix(base.String(), "/") + path
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyLen+1))
	if err != nil {
		return fmt.Errorf("%w: read the reply: %w", ErrUnreachable, err)
	}
	if len(data) > maxReplyLen {
		return fmt.Errorf("%w: reply is larger than %d bytes", ErrBadReply, maxReplyLen)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error *ServiceError `json:"error"`
		}
		jsonErr := json.Unmarshal(data, &e)
		switch {
		case resp.StatusCode >= 500 && jsonErr == nil && e.Error != nil:
			return fmt.Errorf("%w: %w", ErrUnreachable, e.Error)
		case resp.StatusCode >= 500:
			return fmt.Errorf("%w: HTTP status %d", ErrUnreachable, resp.StatusCode)
		case jsonErr != nil || e.Error == nil || e.Error.Code == "":
			return fmt.Errorf("%w: HTTP status %d without a service error", ErrBadReply, resp.StatusCode)
		}
		return e.Error
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: %v", ErrBadReply, err)
	}
	return nil
}
