package appliance

import (
	"github.com/cairnbackup/cairn/appliance/catalog"
	"github.com/cairnbackup/cairn/zfs"
)

// Catalog and Pool give tests the appliance's catalog and pool.
func (a *Appliance) Catalog() *catalog.Catalog { return a.catalog }
func (a *Appliance) Pool() zfs.Pool            { return a.pool }
