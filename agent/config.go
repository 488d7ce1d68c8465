package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cairnbackup/cairn/pairing/token"
)

// DefaultListen is the direct-mode listen address.
const DefaultListen = ":25568"

// DefaultGatewayPort is the port of the appliance's agent gateway.
const DefaultGatewayPort = "8443"

// Environment variables that override agent.conf.
const (
	EnvToken      = "CAIRN_AGENT_TOKEN"
	EnvSetupToken = "CAIRN_SETUP_TOKEN"
	EnvAppliance  = "CAIRN_APPLIANCE"
	// EnvVolumes lists image volumes, comma-separated; it replaces the
	// volume lines of agent.conf.
	EnvVolumes = "CAIRN_AGENT_VOLUMES"
)

// ConfigFile is the name of the configuration file, read from the directory
// of the agent's binary.
const ConfigFile = "agent.conf"

// Config is what the agent needs to run.
type Config struct {
	// StateDir keeps the agent's key, its pin of the appliance and an
	// enrolled token. Created 0700 if missing.
	StateDir string
	// Listen is the direct-mode address; "" disables the listener.
	Listen string
	// Appliance is the appliance's gateway, host:port, for reverse mode;
	// "" disables reverse mode.
	Appliance string
	// Token is the agent token for reverse mode; SetupToken, used only when
	// there is no Token and no enrolled token, is exchanged for one.
	Token      *token.AgentToken
	SetupToken *token.SetupToken
	// BackoffMin and BackoffMax bound the reverse mode's reconnect delay
	// (jittered exponential). Zero means 1 s and 60 s.
	BackoffMin, BackoffMax time.Duration
	// HandshakeTimeout bounds an appliance's TLS handshake on the listener;
	// zero means channel.HandshakeTimeout.
	HandshakeTimeout time.Duration
	// WritersFile, if set, is a saved "vssadmin list writers" output that
	// ListWriters reports instead of asking VSS (support and tests).
	WritersFile string
	// Version is reported in Hello.
	Version string
	// Volumes are image files or block devices to protect, read as is by
	// the image provider (nothing may write to them during a backup, or a
	// pre script must make sure of it). When set, ListVolumes reports
	// exactly these (made absolute: the volume's id is its absolute path);
	// otherwise the agent discovers volumes and snapshots them with VSS
	// (Windows) or LVM (Linux).
	Volumes []string
	// PreScript and PostScript, when set, run around the snapshot of each
	// volume of a backup (see agent/script for their environment). A pre
	// script that fails or times out fails the backup with its output; the
	// post script always runs: right after the snapshot is made when it is
	// a point-in-time copy (LVM, VSS), after the volume was read otherwise
	// (image), and also after a failure.
	PreScript, PostScript string
	// ScriptTimeout bounds each script; zero means script.DefaultTimeout.
	ScriptTimeout time.Duration
}

// ConfigError is a configuration the agent cannot run with. The message
// says what to fix; it never contains a secret.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

// FileConfig is what agent.conf and the environment say. agent.conf is
// "key = value" lines; '#' starts a comment. Keys: token, setup_token,
// appliance, listen, state_dir; volume (an image file or block device to
// protect, one per line, the key repeated for more); pre_script,
// post_script (executables) and script_timeout (a Go duration, "90s").
type FileConfig struct {
	Token, SetupToken, Appliance, Listen, StateDir string
	// Volumes are the volume lines, or CAIRN_AGENT_VOLUMES split at commas.
	Volumes               []string
	PreScript, PostScript string
	ScriptTimeout         time.Duration
	// Path is the agent.conf read, "" if there was none.
	Path string
}

// ReadFileConfig reads dir/agent.conf (a missing file is an empty
// configuration) and applies the environment, which wins.
func ReadFileConfig(dir string, getenv func(string) string) (FileConfig, error) {
	var fc FileConfig
	path := filepath.Join(dir, ConfigFile)
	f, err := os.Open(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fc, &ConfigError{Msg: fmt.Sprintf("read %s: %v", path, err)}
	default:
		defer f.Close()
		fc.Path = path
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			key, value, ok := strings.Cut(line, "=")
			if !ok {
				return fc, &ConfigError{Msg: fmt.Sprintf("%s:%d: want key = value", path, n)}
			}
			value = strings.TrimSpace(value)
			switch strings.TrimSpace(key) {
			case "token":
				fc.Token = value
			case "setup_token":
				fc.SetupToken = value
			case "appliance":
				fc.Appliance = value
			case "listen":
				fc.Listen = value
			case "state_dir":
				fc.StateDir = value
			case "volume":
				if value == "" {
					return fc, &ConfigError{Msg: fmt.Sprintf("%s:%d: volume needs a path", path, n)}
				}
				fc.Volumes = append(fc.Volumes, value)
			case "pre_script":
				fc.PreScript = value
			case "post_script":
				fc.PostScript = value
			case "script_timeout":
				d, err := time.ParseDuration(value)
				if err != nil || d <= 0 {
					return fc, &ConfigError{Msg: fmt.Sprintf("%s:%d: script_timeout %q: want a duration such as 90s or 10m", path, n, value)}
				}
				fc.ScriptTimeout = d
			default:
				return fc, &ConfigError{Msg: fmt.Sprintf("%s:%d: unknown key %q", path, n, strings.TrimSpace(key))}
			}
		}
		if err := sc.Err(); err != nil {
			return fc, &ConfigError{Msg: fmt.Sprintf("read %s: %v", path, err)}
		}
	}
	for env, dst := range map[string]*string{EnvToken: &fc.Token, EnvSetupToken: &fc.SetupToken, EnvAppliance: &fc.Appliance} {
		if v := strings.TrimSpace(getenv(env)); v != "" {
			*dst = v
		}
	}
	if v := strings.TrimSpace(getenv(EnvVolumes)); v != "" {
		fc.Volumes = SplitVolumes(v)
	}
	return fc, nil
}

// SplitVolumes splits a comma-separated list of volumes, dropping empty
// items.
func SplitVolumes(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Tokens parses the configured tokens. A malformed token is a ConfigError
// that says where it came from and what is wrong with it.
func (fc FileConfig) Tokens(getenv func(string) string) (*token.AgentToken, *token.SetupToken, error) {
	from := func(env string) string {
		if strings.TrimSpace(getenv(env)) != "" {
			return "$" + env
		}
		if fc.Path != "" {
			return fc.Path
		}
		return ConfigFile
	}
	var at *token.AgentToken
	var st *token.SetupToken
	if fc.Token != "" {
		t, err := token.ParseAgentToken(fc.Token)
		if err != nil {
			return nil, nil, &ConfigError{Msg: fmt.Sprintf("the agent token in %s is malformed (%v); it looks like ID|SECRET, as shown once by the appliance when the token was created", from(EnvToken), err)}
		}
		at = &t
	}
	if fc.SetupToken != "" {
		t, err := token.ParseSetupToken(fc.SetupToken)
		if err != nil {
			return nil, nil, &ConfigError{Msg: fmt.Sprintf("the setup token in %s is malformed (%v)", from(EnvSetupToken), err)}
		}
		st = &t
	}
	return at, st, nil
}

// GatewayAddress adds the default gateway port to an address without one.
func GatewayAddress(addr string) string {
	if addr == "" {
		return ""
	}
	if _, _, err := splitHostPort(addr); err == nil {
		return addr
	}
	return joinHostPort(strings.Trim(addr, "[]"), DefaultGatewayPort)
}
