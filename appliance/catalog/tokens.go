package catalog

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Agent tokens are keyed by their big-endian ID, so a cursor walks them in
// ID order; setup tokens are keyed by their ID. Neither bucket ever holds a
// secret, only its SHA-256.

// AddAgentToken stores a new agent token and returns the ID it assigns
// (IDs follow creation order, starting at 1); it also sets CreatedAt to
// now. The token must come without an ID, with a valid AgentID, a non-zero
// SecretHash and a valid Source, else ErrInvalid. The agent need not exist
// yet. If the transaction does not commit, the assigned ID is void.
func (t *Tx) AddAgentToken(tok AgentToken) (uint64, error) {
	id, err := t.addAgentToken(tok)
	if err != nil {
		return 0, fmt.Errorf("add token of agent %q: %w", tok.AgentID, err)
	}
	return id, nil
}

func (t *Tx) addAgentToken(tok AgentToken) (uint64, error) {
	if err := validNewAgentToken(tok); err != nil {
		return 0, err
	}
	return t.insertAgentToken(tok)
}

// validNewAgentToken checks a token about to be added.
func validNewAgentToken(tok AgentToken) error {
	if tok.ID != 0 {
		return fmt.Errorf("ID %d given, IDs are assigned: %w", tok.ID, ErrInvalid)
	}
	if err := validAgentID(tok.AgentID); err != nil {
		return err
	}
	if tok.SecretHash == ([32]byte{}) {
		return fmt.Errorf("no secret hash: %w", ErrInvalid)
	}
	return validTokenSource(tok.Source)
}

// insertAgentToken stores a validated new token under the next ID.
func (t *Tx) insertAgentToken(tok AgentToken) (uint64, error) {
	b, err := t.bucket(bucketAgentTokens)
	if err != nil {
		return 0, err
	}
	if tok.ID, err = b.NextSequence(); err != nil {
		return 0, err
	}
	tok.CreatedAt = now()
	if err := put(b, u64key(tok.ID), tok); err != nil {
		return 0, err
	}
	return tok.ID, nil
}

// AgentToken returns the agent token with the given ID.
func (t *Tx) AgentToken(id uint64) (AgentToken, error) {
	tok, err := getIn[AgentToken](t, bucketAgentTokens, u64key(id))
	if err != nil {
		return AgentToken{}, fmt.Errorf("agent token %d: %w", id, err)
	}
	return tok, nil
}

// AgentTokens returns the tokens of one agent, or all tokens if agentID is
// empty, ordered by ID. Revoked tokens are included.
func (t *Tx) AgentTokens(agentID string) ([]AgentToken, error) {
	b, err := t.bucket(bucketAgentTokens)
	if err != nil {
		return nil, fmt.Errorf("list agent tokens: %w", err)
	}
	tokens, err := list(b, func(tok *AgentToken) bool { return agentID == "" || tok.AgentID == agentID })
	if err != nil {
		return nil, fmt.Errorf("list agent tokens: %w", err)
	}
	return tokens, nil
}

// PutAgentToken updates an existing agent token (else ErrNotFound), for
// instance to bind, revoke or record a connection. Its AgentID,
// SecretHash, Source and CreatedAt cannot change, a bound token stays bound
// to the same Fingerprint, and a revoked token stays revoked with the same
// RevokedAt; attempts fail with ErrInvalid.
func (t *Tx) PutAgentToken(tok AgentToken) error {
	if err := t.putAgentToken(tok); err != nil {
		return fmt.Errorf("put agent token %d: %w", tok.ID, err)
	}
	return nil
}

func (t *Tx) putAgentToken(tok AgentToken) error {
	b, err := t.bucket(bucketAgentTokens)
	if err != nil {
		return err
	}
	old, err := get[AgentToken](b, u64key(tok.ID))
	if err != nil {
		return err
	}
	switch {
	case tok.AgentID != old.AgentID:
		return fmt.Errorf("agent ID cannot change from %q to %q: %w", old.AgentID, tok.AgentID, ErrInvalid)
	case tok.SecretHash != old.SecretHash:
		return fmt.Errorf("secret hash cannot change: %w", ErrInvalid)
	case tok.Source != old.Source:
		return fmt.Errorf("source cannot change from %q to %q: %w", old.Source, tok.Source, ErrInvalid)
	case !tok.CreatedAt.Equal(old.CreatedAt):
		return fmt.Errorf("creation time cannot change from %v to %v: %w", old.CreatedAt, tok.CreatedAt, ErrInvalid)
	case old.Fingerprint != "" && tok.Fingerprint != old.Fingerprint:
		return fmt.Errorf("bound to %q, cannot change to %q (a bound token stays bound): %w", old.Fingerprint, tok.Fingerprint, ErrInvalid)
	case old.Revoked() && !tok.RevokedAt.Equal(old.RevokedAt):
		return fmt.Errorf("revoked at %v, cannot change to %v (a revoked token stays revoked): %w", old.RevokedAt, tok.RevokedAt, ErrInvalid)
	}
	tok.CreatedAt = old.CreatedAt
	if old.Revoked() {
		tok.RevokedAt = old.RevokedAt
	}
	return put(b, u64key(tok.ID), tok)
}

// deleteAgentTokens deletes every token of an agent.
func (t *Tx) deleteAgentTokens(agentID string) error {
	b, err := t.bucket(bucketAgentTokens)
	if err != nil {
		return err
	}
	tokens, err := list(b, func(tok *AgentToken) bool { return tok.AgentID == agentID })
	if err != nil {
		return err
	}
	for _, tok := range tokens {
		if err := b.Delete(u64key(tok.ID)); err != nil {
			return err
		}
	}
	return nil
}

// AddSetupToken stores a new setup token and sets its CreatedAt to now. It
// fails with ErrInvalid for a malformed ID, a zero SecretHash, MaxUses
// below 1, an ExpiresAt that is not in the future or a non-empty UsedBy,
// and with ErrExists (which also matches ErrInvalid) if the ID is taken.
func (t *Tx) AddSetupToken(s SetupToken) error {
	if err := t.addSetupToken(s); err != nil {
		return fmt.Errorf("add setup token %q: %w", s.ID, err)
	}
	return nil
}

func (t *Tx) addSetupToken(s SetupToken) error {
	if err := validSetupTokenID(s.ID); err != nil {
		return err
	}
	if s.SecretHash == ([32]byte{}) {
		return fmt.Errorf("no secret hash: %w", ErrInvalid)
	}
	if s.MaxUses < 1 {
		return fmt.Errorf("max uses %d: must be at least 1: %w", s.MaxUses, ErrInvalid)
	}
	if len(s.UsedBy) != 0 {
		return fmt.Errorf("new token already used by %q: %w", s.UsedBy, ErrInvalid)
	}
	s.CreatedAt = now()
	if !s.ExpiresAt.After(s.CreatedAt) {
		return fmt.Errorf("expiry %v is not in the future: %w", s.ExpiresAt, ErrInvalid)
	}
	b, err := t.bucket(bucketSetupTokens)
	if err != nil {
		return err
	}
	if b.Get([]byte(s.ID)) != nil {
		return ErrExists
	}
	return put(b, []byte(s.ID), s)
}

// SetupToken returns the setup token with the given ID.
func (t *Tx) SetupToken(id string) (SetupToken, error) {
	s, err := getIn[SetupToken](t, bucketSetupTokens, []byte(id))
	if err != nil {
		return SetupToken{}, fmt.Errorf("setup token %q: %w", id, err)
	}
	return s, nil
}

// SetupTokens returns all setup tokens, including revoked and expired
// ones, ordered by CreatedAt and then ID.
func (t *Tx) SetupTokens() ([]SetupToken, error) {
	b, err := t.bucket(bucketSetupTokens)
	if err != nil {
		return nil, fmt.Errorf("list setup tokens: %w", err)
	}
	tokens, err := list[SetupToken](b, nil)
	if err != nil {
		return nil, fmt.Errorf("list setup tokens: %w", err)
	}
	slices.SortFunc(tokens, func(a, b SetupToken) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return tokens, nil
}

// RevokeSetupToken revokes a setup token: UseSetupToken refuses it from
// now on. Agent tokens already obtained with it are not affected.
// Revoking a revoked token keeps its RevokedAt and succeeds.
func (t *Tx) RevokeSetupToken(id string) error {
	if err := t.revokeSetupToken(id); err != nil {
		return fmt.Errorf("revoke setup token %q: %w", id, err)
	}
	return nil
}

func (t *Tx) revokeSetupToken(id string) error {
	b, err := t.bucket(bucketSetupTokens)
	if err != nil {
		return err
	}
	s, err := get[SetupToken](b, []byte(id))
	if err != nil || s.Revoked() {
		return err
	}
	s.RevokedAt = now()
	return put(b, []byte(id), s)
}

// UseSetupToken records that the agent key fp exchanged setup token id at
// time at, and creates the agent token agent (as AddAgentToken does, with
// Source set to TokenSourceSetupPrefix+id) in the same transaction,
// returning its ID. The setup token is refused, with an error wrapping
// ErrSetupRefused that gives the reason, if it is revoked, expired (at is
// not before ExpiresAt), already used by fp, or used up (MaxUses keys have
// used it). It fails with ErrNotFound for an unknown setup token and with
// ErrInvalid for an empty fp, a zero at, an agent token AddAgentToken would
// reject, or one whose Fingerprint is set to another key than fp. On any
// error nothing is written.
func (t *Tx) UseSetupToken(id, fp string, at time.Time, agent AgentToken) (uint64, error) {
	tokenID, err := t.useSetupToken(id, fp, at, agent)
	if err != nil {
		return 0, fmt.Errorf("use setup token %q: %w", id, err)
	}
	return tokenID, nil
}

func (t *Tx) useSetupToken(id, fp string, at time.Time, agent AgentToken) (uint64, error) {
	if fp == "" {
		return 0, fmt.Errorf("no agent key fingerprint: %w", ErrInvalid)
	}
	if at.IsZero() {
		return 0, fmt.Errorf("no use time: %w", ErrInvalid)
	}
	b, err := t.bucket(bucketSetupTokens)
	if err != nil {
		return 0, err
	}
	s, err := get[SetupToken](b, []byte(id))
	if err != nil {
		return 0, err
	}
	agent.Source = TokenSourceSetupPrefix + id
	if err := validNewAgentToken(agent); err != nil {
		return 0, fmt.Errorf("agent token: %w", err)
	}
	if agent.Fingerprint != "" && agent.Fingerprint != fp {
		return 0, fmt.Errorf("agent token bound to %q, not to the exchanging key %q: %w", agent.Fingerprint, fp, ErrInvalid)
	}
	switch {
	case s.Revoked():
		return 0, fmt.Errorf("%w: revoked at %v", ErrSetupRefused, s.RevokedAt)
	case !at.Before(s.ExpiresAt):
		return 0, fmt.Errorf("%w: expired at %v", ErrSetupRefused, s.ExpiresAt)
	case slices.Contains(s.UsedBy, fp):
		return 0, fmt.Errorf("%w: already used by agent key %q", ErrSetupRefused, fp)
	case len(s.UsedBy) >= s.MaxUses:
		return 0, fmt.Errorf("%w: used up (%d of %d uses)", ErrSetupRefused, len(s.UsedBy), s.MaxUses)
	}
	s.UsedBy = append(s.UsedBy, fp)
	if err := put(b, []byte(id), s); err != nil {
		return 0, err
	}
	return t.insertAgentToken(agent)
}
