package catalog

import (
	"bytes"
	"fmt"
)

// Dirty images are keyed by agent ID, '/', image name: a cursor walks one
// agent's records together.

func dirtyKey(agentID, image string) []byte { return []byte(agentID + "/" + image) }

// PutDirtyImage creates or replaces the dirty record of one image of an
// existing agent and sets UpdatedAt to now.
func (t *Tx) PutDirtyImage(d DirtyImage) error {
	if err := t.putDirtyImage(d); err != nil {
		return fmt.Errorf("put dirty image %s/%s: %w", d.AgentID, d.Image, err)
	}
	return nil
}

func (t *Tx) putDirtyImage(d DirtyImage) error {
	if err := validAgentID(d.AgentID); err != nil {
		return err
	}
	if err := validSnapshot(d.Image); err != nil { // the same component rule
		return err
	}
	if d.Blocks < 0 || d.BlockSize <= 0 {
		return fmt.Errorf("blocks %d of %d bytes: %w", d.Blocks, d.BlockSize, ErrInvalid)
	}
	if _, err := t.Agent(d.AgentID); err != nil {
		return err
	}
	b, err := t.bucket(bucketDirtyImages)
	if err != nil {
		return err
	}
	d.UpdatedAt = now()
	return put(b, dirtyKey(d.AgentID, d.Image), d)
}

// DirtyImages returns an agent's dirty image records, by image name.
func (t *Tx) DirtyImages(agentID string) ([]DirtyImage, error) {
	b, err := t.bucket(bucketDirtyImages)
	if err != nil {
		return nil, fmt.Errorf("list dirty images of agent %q: %w", agentID, err)
	}
	var out []DirtyImage
	prefix := []byte(agentID + "/")
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		d, err := get[DirtyImage](b, k)
		if err != nil {
			return nil, fmt.Errorf("list dirty images of agent %q: %w", agentID, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// DeleteDirtyImage deletes the dirty record of one image; deleting one
// that does not exist is not an error.
func (t *Tx) DeleteDirtyImage(agentID, image string) error {
	b, err := t.bucket(bucketDirtyImages)
	if err != nil {
		return fmt.Errorf("delete dirty image %s/%s: %w", agentID, image, err)
	}
	if err := b.Delete(dirtyKey(agentID, image)); err != nil {
		return fmt.Errorf("delete dirty image %s/%s: %w", agentID, image, err)
	}
	return nil
}

// deleteDirtyImagesOf deletes every dirty record of an agent.
func (t *Tx) deleteDirtyImagesOf(agentID string) error {
	ds, err := t.DirtyImages(agentID)
	if err != nil {
		return err
	}
	for _, d := range ds {
		if err := t.DeleteDirtyImage(agentID, d.Image); err != nil {
			return err
		}
	}
	return nil
}
