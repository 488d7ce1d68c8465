package webui

import (
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/appliance"
	"github.com/cairnbackup/cairn/internal/browsertest"
	"github.com/chromedp/chromedp"
)

// TestBrowser drives the UI in headless Chromium: first-start setup, the
// dashboard, logout and login, the add-agent wizard with a validation
// message, on a laptop and on a phone screen. Any console error (a script
// error, a CSP violation, a failed load) fails it. Screenshots go to
// testdata/screenshots/. Without Chromium it is skipped, unless
// CAIRN_TEST_BROWSER=1, which makes a missing browser a failure.
func TestBrowser(t *testing.T) {
	br := browsertest.Start(t, filepath.Join("testdata", "screenshots"), 90*time.Second)
	ctx, do, shot := br.Ctx, br.Do, br.Shot
	// A real appliance with a real agent connected in reverse mode,
	// whose pairing stays in its Inspect step until hold is closed.
	e := newServedEnv(t)
	ag := e.connect(t, "web01")
	hold := make(chan struct{})
	ag.HoldInspect(hold)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	type css = chromedp.CSS

	do("first start", chromedp.Navigate(srv.URL+"/agents/new"), chromedp.WaitVisible(css(`#f-username`)))
	if url, err := chromedp.Run(ctx, chromedp.Location()); err != nil || url != srv.URL+"/setup" {
		t.Fatalf("first start went to %s (%v), want /setup", url, err)
	}
	shot("setup")
	do("setup",
		chromedp.SendKeys(css(`#f-username`), testUser),
		chromedp.SendKeys(css(`#f-password`), testPassword),
		chromedp.SendKeys(css(`#f-confirm`), testPassword),
		chromedp.Submit(css(`#f-confirm`)),
		chromedp.WaitVisible(css(`#agents`)))
	shot("dashboard")
	do("logout",
		chromedp.Click(css(`form[action="/logout"] button`)),
		chromedp.WaitVisible(css(`form[action="/login"]`)))
	do("login",
		chromedp.SendKeys(css(`#f-username`), testUser),
		chromedp.SendKeys(css(`#f-password`), testPassword),
		chromedp.Submit(css(`#f-password`)),
		chromedp.WaitVisible(css(`#agents`)))
	do("add-agent page",
		chromedp.Click(css(`a[href="/agents/new"][role="button"]`)),
		chromedp.WaitVisible(css(`#f-targets`)),
		chromedp.Click(css(`details summary`)),
		chromedp.WaitVisible(css(`table.schedule-grid`)))
	shot("add-agent")
	do("wizard validation",
		chromedp.SendKeys(css(`#f-targets`), "bad host!"),
		chromedp.Submit(css(`#f-targets`)),
		chromedp.WaitVisible(css(`#e-targets`)))
	errText, err := chromedp.Run(ctx, chromedp.Text(css(`#e-targets`)))
	if err != nil || !strings.Contains(errText, `Not a host name, FQDN or IP address: "bad host!"`) {
		t.Errorf("targets message %q, %v", errText, err)
	}
	shot("add-agent-invalid")
	// htmx replaces the dashboard's agents with the fragment.
	do("dashboard", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(css(`#agents`)))
	swapped, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`htmx.ajax("GET", "/partials/agents", {target: "#agents", swap: "outerHTML"}).then(() => document.querySelector("#agents-h").textContent)`,
		chromedp.EvalAwaitPromise))
	if err != nil || swapped != "Agents" {
		t.Errorf("htmx swap: %q, %v", swapped, err)
	}
	// The live view: htmx polls the steps and swaps them in place when
	// the pairing ends, without reloading the page.
	do("pair the reverse-mode agent",
		chromedp.Navigate(srv.URL+"/agents/new"),
		chromedp.SetValue(css(`#f-reverse`), "web01"),
		chromedp.SendKeys(css(`#f-product_key`), appliance.DemoProductKey),
		chromedp.Submit(css(`#f-product_key`)),
		chromedp.WaitVisible(css(`#steps[hx-trigger="every 1s"]`)),
		chromedp.Evaluate[chromedp.Void](`window.cairnMarker = "same page"`),
		// htmx swaps in the steps done so far while Inspect waits.
		chromedp.WaitVisible(css(`#steps[hx-trigger="every 1s"] li.step-ok`)))
	shot("pairing-running")
	close(hold)
	do("pairing done", chromedp.WaitVisible(css(`#steps a[href="/agents/web01/settings"]`)))
	marker, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.cairnMarker || "reloaded"`))
	if err != nil || marker != "same page" {
		t.Errorf("the page was reloaded: %q, %v", marker, err)
	}
	shot("pairing-done")
	do("agent token",
		chromedp.Navigate(srv.URL+"/tokens"),
		chromedp.SendKeys(css(`#f-agent_id`), "nat01"),
		chromedp.Submit(css(`#f-agent_id`)),
		chromedp.WaitVisible(css(`#secret-value`)),
		chromedp.Click(css(`button[data-copy="secret-value"]`)))
	copied, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById("secret-copied").textContent`))
	if err != nil || copied != "Copied." {
		t.Errorf("copy button: %q, %v", copied, err)
	}
	shot("agent-token")
	do("phone",
		chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile),
		chromedp.Navigate(srv.URL+"/agents/new"),
		chromedp.WaitVisible(css(`#f-targets`)))
	shot("add-agent-phone")

	// The one error expected: Chromium logs the 422 of the invalid form
	// as a failed load. The UI answers invalid forms with 422, as htmx
	// and scripts expect.
	expected := fmt.Sprintf("log (network): Failed to load resource: the server responded with a status of 422 (Unprocessable Entity) %s/agents/new", srv.URL)
	br.CheckConsole(expected)
}
