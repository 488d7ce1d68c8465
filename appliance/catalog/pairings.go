package catalog

import "fmt"

// Pairings are keyed by their big-endian ID, so a cursor walks them in ID
// (creation) order; activations are keyed by agent ID.

// AddPairing stores a new pairing and returns the ID it assigns (IDs
// follow creation order, starting at 1); it also sets CreatedAt and
// UpdatedAt to now. The pairing must come without an ID and follow the
// rules documented on Pairing, else ErrInvalid. The agent need not exist.
// If the transaction does not commit, the assigned ID is void.
func (t *Tx) AddPairing(p Pairing) (uint64, error) {
	id, err := t.addPairing(p)
	if err != nil {
		return 0, fmt.Errorf("add pairing of agent %q: %w", p.AgentID, err)
	}
	return id, nil
}

func (t *Tx) addPairing(p Pairing) (uint64, error) {
	if p.ID != 0 {
		return 0, fmt.Errorf("ID %d given, IDs are assigned: %w", p.ID, ErrInvalid)
	}
	if err := validPairing(p); err != nil {
		return 0, err
	}
	b, err := t.bucket(bucketPairings)
	if err != nil {
		return 0, err
	}
	if p.ID, err = b.NextSequence(); err != nil {
		return 0, err
	}
	p.CreatedAt = now()
	p.UpdatedAt = p.CreatedAt
	if err := put(b, u64key(p.ID), p); err != nil {
		return 0, err
	}
	return p.ID, nil
}

// Pairing returns the pairing with the given ID.
func (t *Tx) Pairing(id uint64) (Pairing, error) {
	p, err := getIn[Pairing](t, bucketPairings, u64key(id))
	if err != nil {
		return Pairing{}, fmt.Errorf("pairing %d: %w", id, err)
	}
	return p, nil
}

// Pairings returns all pairings, in every state, ordered by ID.
func (t *Tx) Pairings() ([]Pairing, error) {
	b, err := t.bucket(bucketPairings)
	if err != nil {
		return nil, fmt.Errorf("list pairings: %w", err)
	}
	pairings, err := list[Pairing](b, nil)
	if err != nil {
		return nil, fmt.Errorf("list pairings: %w", err)
	}
	return pairings, nil
}

// PairingsOf returns the pairings of one agent, in every state, ordered by
// ID. A malformed agent ID fails with ErrInvalid.
func (t *Tx) PairingsOf(agentID string) ([]Pairing, error) {
	pairings, err := t.pairingsOf(agentID)
	if err != nil {
		return nil, fmt.Errorf("list pairings of agent %q: %w", agentID, err)
	}
	return pairings, nil
}

func (t *Tx) pairingsOf(agentID string) ([]Pairing, error) {
	if err := validAgentID(agentID); err != nil {
		return nil, err
	}
	b, err := t.bucket(bucketPairings)
	if err != nil {
		return nil, err
	}
	return list(b, func(p *Pairing) bool { return p.AgentID == agentID })
}

// PutPairing updates an existing pairing (else ErrNotFound), for instance
// to record a step result or a new state, and sets UpdatedAt to now. It
// keeps the stored CreatedAt whatever p holds. The pairing must follow the
// rules documented on Pairing, and its AgentID and Mode cannot change;
// attempts fail with ErrInvalid. The catalog does not restrict state
// changes: a failed or canceled pairing may run again.
func (t *Tx) PutPairing(p Pairing) error {
	if err := t.putPairing(p); err != nil {
		return fmt.Errorf("put pairing %d: %w", p.ID, err)
	}
	return nil
}

func (t *Tx) putPairing(p Pairing) error {
	b, err := t.bucket(bucketPairings)
	if err != nil {
		return err
	}
	old, err := get[Pairing](b, u64key(p.ID))
	if err != nil {
		return err
	}
	switch {
	case p.AgentID != old.AgentID:
		return fmt.Errorf("agent ID cannot change from %q to %q: %w", old.AgentID, p.AgentID, ErrInvalid)
	case p.Mode != old.Mode:
		return fmt.Errorf("mode cannot change from %q to %q: %w", old.Mode, p.Mode, ErrInvalid)
	}
	if err := validPairing(p); err != nil {
		return err
	}
	p.CreatedAt = old.CreatedAt
	p.UpdatedAt = now()
	return put(b, u64key(p.ID), p)
}

// DeletePairing deletes the pairing with the given ID.
func (t *Tx) DeletePairing(id uint64) error {
	if err := t.deletePairing(id); err != nil {
		return fmt.Errorf("delete pairing %d: %w", id, err)
	}
	return nil
}

func (t *Tx) deletePairing(id uint64) error {
	b, err := t.bucket(bucketPairings)
	if err != nil {
		return err
	}
	if b.Get(u64key(id)) == nil {
		return ErrNotFound
	}
	return b.Delete(u64key(id))
}

// deletePairingsOf deletes every pairing of an agent.
func (t *Tx) deletePairingsOf(agentID string) error {
	pairings, err := t.pairingsOf(agentID)
	if err != nil {
		return err
	}
	b, err := t.bucket(bucketPairings)
	if err != nil {
		return err
	}
	for _, p := range pairings {
		if err := b.Delete(u64key(p.ID)); err != nil {
			return err
		}
	}
	return nil
}

// PutActivation creates or replaces the activation of a.AgentID. The
// activation must follow the rules documented on Activation, else
// ErrInvalid; the agent need not exist. The catalog sets no time field:
// ValidatedAt and LastErrorAt are the caller's.
func (t *Tx) PutActivation(a Activation) error {
	if err := t.putActivation(a); err != nil {
		return fmt.Errorf("put activation of agent %q: %w", a.AgentID, err)
	}
	return nil
}

func (t *Tx) putActivation(a Activation) error {
	if err := validActivation(a); err != nil {
		return err
	}
	b, err := t.bucket(bucketActivations)
	if err != nil {
		return err
	}
	return put(b, []byte(a.AgentID), a)
}

// Activation returns the activation of an agent.
func (t *Tx) Activation(agentID string) (Activation, error) {
	a, err := getIn[Activation](t, bucketActivations, []byte(agentID))
	if err != nil {
		return Activation{}, fmt.Errorf("activation of agent %q: %w", agentID, err)
	}
	return a, nil
}

// Activations returns all activations, expired ones included, ordered by
// agent ID.
func (t *Tx) Activations() ([]Activation, error) {
	b, err := t.bucket(bucketActivations)
	if err != nil {
		return nil, fmt.Errorf("list activations: %w", err)
	}
	activations, err := list[Activation](b, nil)
	if err != nil {
		return nil, fmt.Errorf("list activations: %w", err)
	}
	return activations, nil
}

// DeleteActivation deletes the activation of an agent.
func (t *Tx) DeleteActivation(agentID string) error {
	if err := t.deleteActivation(agentID); err != nil {
		return fmt.Errorf("delete activation of agent %q: %w", agentID, err)
	}
	return nil
}

func (t *Tx) deleteActivation(agentID string) error {
	b, err := t.bucket(bucketActivations)
	if err != nil {
		return err
	}
	if b.Get([]byte(agentID)) == nil {
		return ErrNotFound
	}
	return b.Delete([]byte(agentID))
}
