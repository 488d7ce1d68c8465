package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/internal/durable"
	"github.com/cairnbackup/cairn/pairing/identity"
	"github.com/cairnbackup/cairn/pairing/token"
)

var (
	splitHostPort = net.SplitHostPort
	joinHostPort  = net.JoinHostPort
)

// Files in the state directory besides the identity's key.
const (
	pinFile   = "appliance.json" // the pinned appliance
	tokenFile = "agent.token"    // an agent token got from a setup token
)

// Pin is the appliance an agent is paired with.
type Pin struct {
	Fingerprint identity.Fingerprint `json:"fingerprint"`
	Name        string               `json:"name"`
	AgentID     string               `json:"agent_id"`
	PairedAt    time.Time            `json:"paired_at"`
}

// state is the agent's state directory. The pin is read from disk at every
// handshake, so that "cairn-agent unpair" takes effect for new connections
// of a running agent.
type state struct {
	dir string
	mu  sync.Mutex // serializes writers
}

// ReadPin returns the pinned appliance of the agent whose state is in dir,
// or ok false when the agent is not paired.
func ReadPin(dir string) (p Pin, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, pinFile))
	if errors.Is(err, os.ErrNotExist) {
		return Pin{}, false, nil
	}
	if err != nil {
		return Pin{}, false, err
	}
	if err := json.Unmarshal(b, &p); err != nil || p.Fingerprint.IsZero() {
		return Pin{}, false, fmt.Errorf("%s is damaged; run cairn-agent unpair and pair again", filepath.Join(dir, pinFile))
	}
	return p, true, nil
}

// Unpair forgets the pinned appliance of the agent whose state is in dir.
// It reports whether there was one.
func Unpair(dir string) (Pin, bool, error) {
	p, ok, err := ReadPin(dir)
	if err != nil {
		// A damaged pin file is removed too: that is what unpair is for.
		ok = true
	}
	if rerr := os.Remove(filepath.Join(dir, pinFile)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return p, ok, rerr
	}
	if rerr := os.Remove(filepath.Join(dir, tokenFile)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return p, ok, rerr
	}
	return p, ok, syncDir(dir)
}

func (s *state) pin() (Pin, bool, error) { return ReadPin(s.dir) }

func (s *state) setPin(p Pin) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.dir, pinFile), append(b, '\n'))
}

// enrolledToken returns the agent token stored after a setup token was
// exchanged, if any.
func (s *state) enrolledToken() (*token.AgentToken, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, tokenFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t, err := token.ParseAgentToken(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(s.dir, tokenFile), err)
	}
	return &t, nil
}

func (s *state) setEnrolledToken(t token.AgentToken) error {
	return writeFileAtomic(filepath.Join(s.dir, tokenFile), []byte(t.Reveal()+"\n"))
}

// writeFileAtomic writes a 0600 file so that a crash leaves the old or the
// new content.
func writeFileAtomic(path string, b []byte) error {
	return durable.Replace(path, b, 0o600)
}

var syncDir = durable.SyncDir
