package licensing

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeService answers every request with reply and records the requests.
type fakeService struct {
	mu     sync.Mutex
	bodies []string
	urls   []string
	reply  func(w http.ResponseWriter, body apiRequest)
}

func (f *fakeService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, string(b))
	f.urls = append(f.urls, r.URL.String())
	f.mu.Unlock()
	var req apiRequest
	_ = json.Unmarshal(b, &req)
	f.reply(w, req)
}

func newFake(t *testing.T, reply func(w http.ResponseWriter, body apiRequest)) (*fakeService, string) {
	t.Helper()
	f := &fakeService{reply: reply}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func testRequest(t *testing.T) ActivateRequest {
	t.Helper()
	a := testActivation()
	k := testKeys(t, 1)[0]
	return ActivateRequest{Key: k, ApplianceID: a.ApplianceID, AgentFingerprint: a.AgentFingerprint, Hostname: a.Hostname}
}

// signedFor returns an activation of req signed with the key of seed.
func signedFor(t *testing.T, seed byte, req ActivateRequest, edit func(a *Activation)) Signed {
	t.Helper()
	_, priv := testSigner(t, seed)
	a := testActivation()
	a.KeyID, a.ApplianceID, a.AgentFingerprint = req.Key.ID(), req.ApplianceID, req.AgentFingerprint
	if edit != nil {
		edit(&a)
	}
	s, err := Sign(priv, a)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func TestClientActivate(t *testing.T) {
	pub, _ := testSigner(t, 1)
	req := testRequest(t)
	f, url := newFake(t, func(w http.ResponseWriter, _ apiRequest) { writeJSON(w, 200, signedFor(t, 1, req, nil)) })
	c := &Client{BaseURL: url + "/", PublicKey: pub, Now: func() time.Time { return t0 }}
	a, s, err := c.Activate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID != req.Key.ID() || a.ApplianceID != req.ApplianceID || len(s.Signature) == 0 {
		t.Fatalf("Activate = %+v", a)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.urls[0] != "/v1/activate" {
		t.Fatalf("URL %q", f.urls[0])
	}
	var body apiRequest
	if err := json.Unmarshal([]byte(f.bodies[0]), &body); err != nil {
		t.Fatal(err)
	}
	if body.Key != req.Key.Reveal() || body.ApplianceID != req.ApplianceID || body.AgentFingerprint != req.AgentFingerprint || body.Hostname != req.Hostname {
		t.Fatalf("request body %s", f.bodies[0])
	}
}

func TestClientErrors(t *testing.T) {
	pub, _ := testSigner(t, 1)
	req := testRequest(t)
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "http://" + refused.Addr().String()
	refused.Close() // nothing listens there now

	for _, tc := range []struct {
		name  string
		reply func(w http.ResponseWriter, body apiRequest)
		url   string
		want  error
		code  string
	}{
		{name: "connection refused", url: refusedURL, want: ErrUnreachable},
		{name: "500 with service error", want: ErrUnreachable, code: CodeInternal, reply: func(w http.ResponseWriter, _ apiRequest) {
			writeJSON(w, 500, map[string]any{"error": ServiceError{Code: CodeInternal, Message: "failed"}})
		}},
		{name: "502 from a proxy", want: ErrUnreachable, reply: func(w http.ResponseWriter, _ apiRequest) {
			http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
		}},
		{name: "404 page", want: ErrBadReply, reply: func(w http.ResponseWriter, _ apiRequest) { http.NotFound(w, nil) }},
		{name: "200 not JSON", want: ErrBadReply, reply: func(w http.ResponseWriter, _ apiRequest) { _, _ = io.WriteString(w, "hello") }},
		{name: "refused", code: CodeNoSeats, reply: func(w http.ResponseWriter, _ apiRequest) {
			writeJSON(w, 409, map[string]any{"error": ServiceError{Code: CodeNoSeats, Message: "all 1 seats are taken"}})
		}},
		{name: "signed by another key", want: ErrInvalidActivation, reply: func(w http.ResponseWriter, _ apiRequest) {
			writeJSON(w, 200, signedFor(t, 2, req, nil))
		}},
		{name: "for another agent", want: ErrBadReply, reply: func(w http.ResponseWriter, _ apiRequest) {
			writeJSON(w, 200, signedFor(t, 1, req, func(a *Activation) { a.AgentFingerprint = "SHA256:someone-else" }))
		}},
		{name: "for another appliance", want: ErrBadReply, reply: func(w http.ResponseWriter, _ apiRequest) {
			writeJSON(w, 200, signedFor(t, 1, req, func(a *Activation) { a.ApplianceID = "appliance-9" }))
		}},
		{name: "expired on arrival", want: ErrExpired, reply: func(w http.ResponseWriter, _ apiRequest) {
			writeJSON(w, 200, signedFor(t, 1, req, func(a *Activation) { a.Issued, a.Expires = t0.Add(-2*time.Hour), t0.Add(-time.Hour) }))
		}},
		{name: "not a URL", url: "ftp://x", want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url
			if tc.reply != nil {
				_, url = newFake(t, tc.reply)
			}
			c := &Client{BaseURL: url, PublicKey: pub, Now: func() time.Time { return t0 }}
			_, _, err := c.Activate(context.Background(), req)
			if err == nil {
				t.Fatal("Activate succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Activate error %v, want %v", err, tc.want)
			}
			var se *ServiceError
			if got := errors.As(err, &se); got != (tc.code != "") || (got && se.Code != tc.code) {
				t.Fatalf("Activate error %v: ServiceError %v, want code %q", err, se, tc.code)
			}
			if tc.code == CodeNoSeats && !IsRefusal(err) {
				t.Fatalf("IsRefusal(%v) = false", err)
			}
			if strings.Contains(err.Error(), req.Key.Reveal()) {
				t.Fatalf("error %q contains the key", err)
			}
		})
	}
}

func TestClientDeactivateStatus(t *testing.T) {
	pub, _ := testSigner(t, 1)
	req := testRequest(t)
	f, url := newFake(t, func(w http.ResponseWriter, body apiRequest) {
		if body.AgentFingerprint == "" {
			writeJSON(w, 200, KeyStatus{KeyID: req.Key.ID(), Edition: "std", State: KeyActive, Seats: 3, Used: 1})
			return
		}
		writeJSON(w, 200, map[string]bool{"released": true})
	})
	c := &Client{BaseURL: url, PublicKey: pub}
	if err := c.Deactivate(context.Background(), DeactivateRequest{Key: req.Key, ApplianceID: req.ApplianceID, AgentFingerprint: req.AgentFingerprint}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(context.Background(), StatusRequest{Key: req.Key, ApplianceID: req.ApplianceID})
	if err != nil || st.Seats != 3 || st.Used != 1 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	f.mu.Lock()
	urls := strings.Join(f.urls, " ")
	f.mu.Unlock()
	if urls != "/v1/deactivate /v1/status" {
		t.Fatalf("URLs %s", urls)
	}
	if _, _, err := c.Activate(context.Background(), ActivateRequest{}); err == nil {
		t.Fatal("Activate without a key succeeded")
	}
}
