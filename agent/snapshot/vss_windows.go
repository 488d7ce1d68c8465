package snapshot

import (
	"context"
	"errors"
	"fmt"

	vss "github.com/mxk/go-vss"
)

// VSS makes Volume Shadow Copy snapshots (github.com/mxk/go-vss, through
// WMI's Win32_ShadowCopy) and reads the shadow copy's device,
// \\?\GLOBALROOT\Device\HarddiskVolumeShadowCopyN. It needs an elevated
// process (a service running as LocalSystem is).
type VSS struct{}

var _ Provider = VSS{}

// Name is "vss".
func (VSS) Name() string { return "vss" }

// Snapshot makes a shadow copy of volume: a drive letter ("C:"), mount
// point or volume GUID path (\\?\Volume{GUID}\).
func (VSS) Snapshot(ctx context.Context, volume, _ string) (Snap, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	id, err := vss.Create(volume)
	if err != nil {
		return nil, fmt.Errorf("shadow copy of %s: %w", volume, err)
	}
	remove := func(context.Context) error {
		if err := vss.Remove(id); err != nil {
			return fmt.Errorf("remove shadow copy %s: %w", id, err)
		}
		return nil
	}
	sc, err := vss.Get(id)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("shadow copy %s of %s: %w", id, volume, err), remove(ctx))
	}
	s, err := openFile(sc.DeviceObject, true, remove)
	if err != nil {
		return nil, errors.Join(err, remove(ctx))
	}
	return s, nil
}
