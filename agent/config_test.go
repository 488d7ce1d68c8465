package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFileConfigVolumesAndScripts(t *testing.T) {
	dir := t.TempDir()
	conf := "volume = /srv/a.img\nvolume=/dev/sdb\npre_script = /etc/cairn/pre\npost_script = /etc/cairn/post\nscript_timeout = 90s\n"
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	fc, err := ReadFileConfig(dir, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fc.Volumes, []string{"/srv/a.img", "/dev/sdb"}) || fc.PreScript != "/etc/cairn/pre" ||
		fc.PostScript != "/etc/cairn/post" || fc.ScriptTimeout != 90*time.Second {
		t.Errorf("file config = %+v", fc)
	}
	env[EnvVolumes] = " /x.img, ,/y.img "
	if fc, err = ReadFileConfig(dir, getenv); err != nil || !slices.Equal(fc.Volumes, []string{"/x.img", "/y.img"}) {
		t.Errorf("with $%s: volumes %q, %v", EnvVolumes, fc.Volumes, err)
	}
	for conf, want := range map[string]string{
		"volume =\n":             "volume needs a path",
		"script_timeout = 5\n":   "script_timeout",
		"script_timeout = -1s\n": "script_timeout",
	} {
		os.WriteFile(filepath.Join(dir, ConfigFile), []byte(conf), 0o600)
		if _, err := ReadFileConfig(dir, getenv); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error about %s", conf, err, want)
		}
	}
}

func TestNewMakesVolumesAbsolute(t *testing.T) {
	t.Chdir(t.TempDir())
	a, err := New(Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", Volumes: []string{"disk.img", "./disk.img", "/srv/b.img"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if want := []string{filepath.Join(wd, "disk.img"), "/srv/b.img"}; !slices.Equal(a.cfg.Volumes, want) {
		t.Errorf("volumes %q, want %q", a.cfg.Volumes, want)
	}
}
