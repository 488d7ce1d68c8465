// Package browsertest drives headless Chromium (Debian's chromium) with
// chromedp for the web UI's tests: it starts the browser, records every
// console error, exception and failed load, saves screenshots and
// collects downloads.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Find returns a headless-capable Chromium: the Debian package chromium,
// or what CAIRN_TEST_BROWSER_PATH names.
func Find() (string, error) {
	if p := os.Getenv("CAIRN_TEST_BROWSER_PATH"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium in PATH (Debian: apt-get install chromium; make deps installs it)")
}

// Browser is one headless Chromium tab.
type Browser struct {
	t testing.TB
	// Ctx runs chromedp actions in the tab; it ends with the timeout
	// given to Start.
	Ctx   context.Context
	shots string

	mu       sync.Mutex
	problems []string
}

// Start starts Chromium with a 1280×900 window, closed when the test
// ends. Without Chromium the test is skipped, unless CAIRN_TEST_BROWSER=1
// (make test), which makes a missing browser a failure. Screenshots go to
// shots (created).
func Start(t testing.TB, shots string, timeout time.Duration) *Browser {
	t.Helper()
	path, err := Find()
	if err != nil {
		if os.Getenv("CAIRN_TEST_BROWSER") == "1" {
			t.Fatalf("CAIRN_TEST_BROWSER=1: %v", err)
		}
		t.Skipf("%v; CAIRN_TEST_BROWSER=1 makes this a failure", err)
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancel()
		cancelAlloc()
	})
	b := &Browser{t: t, Ctx: ctx, shots: shots}
	if err := chromedp.Listen(ctx, b.record); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return b
}

// record keeps console errors and assertions, uncaught exceptions and
// error log entries (failed loads, CSP violations).
func (b *Browser) record(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			b.problems = append(b.problems, "console."+string(ev.Type)+": "+strings.Join(args, " "))
		}
	case *runtime.EventExceptionThrown:
		b.problems = append(b.problems, "exception: "+ev.ExceptionDetails.Text)
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError {
			b.problems = append(b.problems, fmt.Sprintf("log (%s): %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
		}
	}
}

// Do runs actions in the tab; an error fails the test, naming step.
func (b *Browser) Do(step string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.Ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", step, err)
	}
}

// Shot saves a full-page screenshot as <shots>/<name>.png.
func (b *Browser) Shot(name string) {
	b.t.Helper()
	buf, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), buf, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// CheckConsole fails the test for every console error, exception or
// failed load the pages had, except each of expected once (exact text,
// as this package formats it).
func (b *Browser) CheckConsole(expected ...string) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		if i := slices.Index(expected, p); i >= 0 {
			expected = slices.Delete(expected, i, i+1)
			continue
		}
		b.t.Errorf("browser: %s", p)
	}
}

// Download runs actions that start one download (e.g. a click on a
// link) and returns the path of the downloaded file, in dir, once
// Chromium has it all.
func (b *Browser) Download(dir string, actions ...chromedp.Action[chromedp.Void]) string {
	b.t.Helper()
	progress := chromedp.Events(b.Ctx, browser.DownloadProgress)
	b.Do("download", append([]chromedp.Action[chromedp.Void]{chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: ptr(true)})
		return err
	})}, actions...)...)
	for ev, err := range progress {
		if err != nil {
			b.t.Fatalf("download: %v", err)
		}
		switch ev.State {
		case browser.DownloadProgressStateCompleted:
			return filepath.Join(dir, ev.GUID)
		case browser.DownloadProgressStateCanceled:
			b.t.Fatalf("download canceled after %.0f bytes", ev.ReceivedBytes)
		}
	}
	b.t.Fatal("download: no progress event")
	return ""
}

func ptr[T any](v T) *T { return &v }
