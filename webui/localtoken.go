package webui

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/cairnbackup/cairn/internal/durable"
)

// LocalTokenName names the API token the appliance keeps for its own
// command line (cairn-appliance token create, agents, ...).
const LocalTokenName = "cairn-appliance command line (this machine)"

// WriteLocalToken creates a new API token for the command line on this
// machine, replacing the one an earlier start made, and writes it to path
// (mode 0600; the data directory is the appliance's, so whoever can read it
// can read the catalog too). Run it at every start: a token file left
// behind stops working when the appliance restarts. Revoking the token on
// the API tokens page stops the command line until the next start.
func (u *UI) WriteLocalToken(ctx context.Context, path string) error {
	tok, secret := u.newAPIToken(LocalTokenName, "cairn-appliance")
	tok.Local = true
	err := u.cfg.Store.Update(ctx, func(st *State) error {
		// Not bounded by maxAPITokens, which counts scripts' tokens: the
		// appliance must start whatever their number.
		st.APITokens = slices.DeleteFunc(st.APITokens, func(t APIToken) bool { return t.Local })
		st.APITokens = append(st.APITokens, tok)
		return nil
	})
	if err != nil {
		return fmt.Errorf("webui: local API token: %w", err)
	}
	if err := durable.Replace(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("webui: local API token: %w", err)
	}
	u.log.Info("webui: local API token written", "token", tok.ID, "file", filepath.Clean(path))
	return nil
}
