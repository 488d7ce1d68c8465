package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// clientCommand runs the subcommands that talk to a running appliance's
// API: "token create", "setup-token create", "agents". It returns false if
// args name none of them.
func clientCommand(args []string) (bool, int) {
	if len(args) == 0 {
		return false, 0
	}
	var cmd string
	switch {
	case len(args) >= 2 && args[0] == "token" && args[1] == "create":
		cmd, args = "token create", args[2:]
	case len(args) >= 2 && args[0] == "setup-token" && args[1] == "create":
		cmd, args = "setup-token create", args[2:]
	case args[0] == "agents":
		cmd, args = "agents", args[1:]
	default:
		return false, 0
	}
	fs := flag.NewFlagSet("cairn-appliance "+cmd, flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:8080", "the appliance's HTTP address")
	data := fs.String("data", "./var", "the appliance's data directory, where it writes the command line's API token ("+tokenFile+"); $CAIRN_API_TOKEN instead, if set")
	agentID := fs.String("agent", "", "token create: the agent ID (lower case letters, digits, '-')")
	label := fs.String("label", "", "setup-token create: a label")
	uses := fs.Int("uses", 1, "setup-token create: how many agents may use it")
	ttl := fs.Duration("ttl", 24*time.Hour, "setup-token create: how long it is valid")
	if err := fs.Parse(args); err != nil {
		return true, 2
	}
	tok, err := apiToken(*data)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cairn-appliance %s: %v\n", cmd, err)
		return true, 1
	}
	c := client{base: *url, token: tok}
	switch cmd {
	case "token create":
		if *agentID == "" {
			fmt.Fprintln(os.Stderr, "cairn-appliance token create: -agent is required")
			return true, 2
		}
		var out struct {
			AgentID string `json:"agent_id"`
			TokenID uint64 `json:"token_id"`
			Token   string `json:"token"`
		}
		if err = c.call("POST", "/api/tokens", map[string]any{"agent_id": *agentID}, &out); err == nil {
			fmt.Printf("Agent token for %s (shown only now; it is stored hashed):\n\n  %s\n\n"+
				"On the agent: put \"token = %s\" in agent.conf next to cairn-agent,\nor set CAIRN_AGENT_TOKEN, and start it with -appliance <this host>:8443.\n",
				out.AgentID, out.Token, out.Token)
		}
	case "setup-token create":
		var out struct {
			SetupToken string    `json:"setup_token"`
			ExpiresAt  time.Time `json:"expires_at"`
		}
		body := map[string]any{"label": *label, "max_uses": *uses, "ttl_seconds": int64(ttl.Seconds())}
		if err = c.call("POST", "/api/setup-tokens", body, &out); err == nil {
			fmt.Printf("Setup token (shown only now), valid for %d agents until %s:\n\n  %s\n",
				*uses, out.ExpiresAt.Local().Format(time.RFC1123), out.SetupToken)
		}
	case "agents":
		var out []map[string]any
		if err = c.call("GET", "/api/agents", nil, &out); err == nil {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			enc.Encode(out)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cairn-appliance %s: %v\n", cmd, err)
		return true, 1
	}
	return true, 0
}

// tokenFile is the file in the data directory that holds the command
// line's API token; the appliance writes a new one at every start.
const tokenFile = "api.token"

// apiToken is $CAIRN_API_TOKEN, else the token the appliance wrote into
// its data directory.
func apiToken(dataDir string) (string, error) {
	if t := os.Getenv("CAIRN_API_TOKEN"); t != "" {
		return t, nil
	}
	b, err := os.ReadFile(filepath.Join(dataDir, tokenFile))
	if err != nil {
		return "", fmt.Errorf("no API token: %w (give the appliance's -data directory, run as a user who can read it, or set CAIRN_API_TOKEN to a token from the web UI's API tokens page)", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// client calls a running appliance's REST API with an API token.
type client struct {
	base, token string
}

func (c client) call(method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, strings.TrimSuffix(c.base, "/")+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("is the appliance running? %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return errors.New("the appliance refused the API token: it writes a new one at every start, so read it from its current -data directory, or set CAIRN_API_TOKEN")
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error, Message string }
		if json.Unmarshal(b, &e) == nil && (e.Error != "" || e.Message != "") {
			return errors.New(e.Error + e.Message)
		}
		return fmt.Errorf("%s", resp.Status)
	}
	return json.Unmarshal(b, out)
}
