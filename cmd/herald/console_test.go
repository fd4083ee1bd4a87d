package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// browser is a headless Chromium driven over the DevTools protocol: one
// page, JavaScript evaluated in it, results returned by value.
type browser struct {
	t      *testing.T
	conn   *websocket.Conn
	nextID atomic.Int64
	stderr *syncBuffer
}

// startBrowser runs Debian's Chromium (HERALD_TEST_CHROMIUM, or chromium
// on PATH) headless with a private profile, and connects to its page.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	bin := os.Getenv("HERALD_TEST_CHROMIUM")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("chromium"); err != nil {
			t.Skip("the console test needs Chromium: install Debian's chromium package or set HERALD_TEST_CHROMIUM")
		}
	}
	profile := filepath.Join(t.TempDir(), "profile")
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
		"--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "--window-size=1280,900",
		"--user-data-dir="+profile, "about:blank")
	stderr := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers share its group
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the browser and its helper processes
		_ = cmd.Wait()
	})
	// Chromium writes the port it chose into the profile.
	var port string
	eventually(t, "Chromium's DevTools port", func() bool {
		b, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		port, _, _ = strings.Cut(string(b), "\n")
		return err == nil && port != ""
	})
	var wsURL string
	eventually(t, "Chromium's page target", func() bool {
		resp, err := http.Get("http://127.0.0.1:" + port + "/json/list")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var targets []struct{ Type, WebSocketDebuggerURL string }
		if json.NewDecoder(resp.Body).Decode(&targets) != nil {
			return false
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
				wsURL = tg.WebSocketDebuggerURL
				return true
			}
		}
		return false
	})
	conn, _, err := websocket.Dial(t.Context(), wsURL, nil)
	if err != nil {
		t.Fatalf("connect to Chromium: %v", err)
	}
	conn.SetReadLimit(64 << 20)
	t.Cleanup(func() { _ = conn.CloseNow() })
	b := &browser{t: t, conn: conn, stderr: stderr}
	t.Cleanup(func() {
		if t.Failed() {
			b.screenshot(filepath.Join(os.TempDir(), "herald-console-"+strings.ReplaceAll(t.Name(), "/", "-")+".png"))
			t.Logf("chromium stderr (last 4 KiB):\n%s", tail(stderr.String(), 4096))
		}
	})
	b.call("Page.enable", nil)
	return b
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// call sends one DevTools command and returns its result, skipping the
// events that arrive meanwhile.
func (b *browser) call(method string, params any) json.RawMessage {
	b.t.Helper()
	id := b.nextID.Add(1)
	msg, _ := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // screenshots run in Cleanup, after t.Context ends
	defer cancel()
	if err := b.conn.Write(ctx, websocket.MessageText, msg); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
	for {
		_, data, err := b.conn.Read(ctx)
		if err != nil {
			b.t.Fatalf("%s: %v", method, err)
		}
		var r struct {
			ID     int64           `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct{ Message string }
		}
		if json.Unmarshal(data, &r) != nil || r.ID != id {
			continue
		}
		if r.Error != nil {
			b.t.Fatalf("%s: %s", method, r.Error.Message)
		}
		return r.Result
	}
}

// eval runs the expression in the page (awaiting a promise) and decodes
// its value into out, if not nil.
func (b *browser) eval(expr string, out any) {
	b.t.Helper()
	raw := b.call("Runtime.evaluate", map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true})
	var r struct {
		Result           struct{ Value json.RawMessage }
		ExceptionDetails *struct {
			Text      string
			Exception struct{ Description string }
		}
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		b.t.Fatalf("eval %s: %v", expr, err)
	}
	if r.ExceptionDetails != nil {
		b.t.Fatalf("eval %s: %s %s", expr, r.ExceptionDetails.Text, r.ExceptionDetails.Exception.Description)
	}
	if out != nil && len(r.Result.Value) > 0 {
		if err := json.Unmarshal(r.Result.Value, out); err != nil {
			b.t.Fatalf("eval %s: decode %s: %v", expr, r.Result.Value, err)
		}
	}
}

// text returns the text of the first element matching the selector, ""
// when there is none.
func (b *browser) text(selector string) string {
	b.t.Helper()
	var s string
	b.eval(fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, selector), &s)
	return s
}

// wait polls cond until it holds, for up to a minute and a half: the
// browser shares a loaded CI machine.
func (b *browser) wait(what string, cond func() bool) {
	b.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// waitText waits until the element's text holds want, clicking the
// console's Refresh button every half second meanwhile when refresh is
// set.
func (b *browser) waitText(selector, want string, refresh bool) {
	b.t.Helper()
	var last time.Time
	b.wait(fmt.Sprintf("%q in %s", want, selector), func() bool {
		if strings.Contains(b.text(selector), want) {
			return true
		}
		if refresh && time.Since(last) > 500*time.Millisecond {
			last = time.Now()
			b.eval(`document.getElementById('refresh') && document.getElementById('refresh').click()`, nil)
		}
		return false
	})
}

// fill sets form fields by selector (firing input events) and submits the
// form of the last one.
func (b *browser) fill(fields map[string]string, submit string) {
	b.t.Helper()
	// Every field set and the button clicked in one evaluation, once all
	// are there: a view still rendering (a navigation a moment earlier)
	// could otherwise replace the form between two evaluations, and the
	// click would submit an empty form.
	js, err := json.Marshal(fields)
	if err != nil {
		b.t.Fatal(err)
	}
	b.wait("form with "+submit, func() bool {
		var ok bool
		b.eval(fmt.Sprintf(`(() => {
			const fields = %s, btn = document.querySelector(%q);
			if (!btn || btn.disabled || Object.keys(fields).some(sel => !document.querySelector(sel))) return false;
			for (const [sel, v] of Object.entries(fields)) {
				const el = document.querySelector(sel);
				el.value = v;
				el.dispatchEvent(new Event('input', {bubbles: true}));
			}
			btn.click();
			return true;
		})()`, js, submit), &ok)
		return ok
	})
}

// click clicks the element once it is there.
func (b *browser) click(selector string) {
	b.t.Helper()
	b.wait("button "+selector, func() bool {
		var ok bool
		b.eval(fmt.Sprintf(`(() => { const el = document.querySelector(%q); if (!el || el.disabled) return false; el.click(); return true; })()`, selector), &ok)
		return ok
	})
}

// waitFor waits until an element matches the selector.
func (b *browser) waitFor(selector string) {
	b.t.Helper()
	b.wait(selector+" in the page", func() bool {
		var ok bool
		b.eval(fmt.Sprintf(`document.querySelector(%q) !== null`, selector), &ok)
		return ok
	})
}

// open navigates to the URL and waits for the page to load.
func (b *browser) open(u string) {
	b.t.Helper()
	b.call("Page.navigate", map[string]any{"url": u})
	b.wait("the page at "+u, func() bool {
		var state string
		b.eval(`document.readyState`, &state)
		return state == "complete"
	})
}

// go moves the single-page app to a route (#/...).
func (b *browser) goTo(hash string) {
	b.t.Helper()
	b.eval(fmt.Sprintf(`location.hash = %q`, hash), nil)
}

// screenshot saves the page as a PNG (for failures, and the docs).
func (b *browser) screenshot(path string) {
	raw := b.call("Page.captureScreenshot", map[string]any{"format": "png"})
	var r struct{ Data []byte }
	if json.Unmarshal(raw, &r) == nil && len(r.Data) > 0 {
		_ = os.WriteFile(path, r.Data, 0o644)
		b.t.Logf("screenshot: %s", path)
	}
}

// consoleReceiver is a webhook endpoint that answers verification
// challenges, records deliveries, and fails them while told to.
type consoleReceiver struct {
	*httptest.Server
	failing atomic.Bool
	mu      sync.Mutex
	bodies  []string
}

func newConsoleReceiver(t *testing.T) *consoleReceiver {
	rc := &consoleReceiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Herald-Event-Type") == "herald.verification" {
			var c struct{ Challenge string }
			_ = json.Unmarshal(body, &c)
			fmt.Fprintf(w, `{"challenge":%q}`, c.Challenge)
			return
		}
		if rc.failing.Load() {
			http.Error(w, "receiver down for the test", http.StatusServiceUnavailable)
			return
		}
		rc.mu.Lock()
		rc.bodies = append(rc.bodies, string(body))
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *consoleReceiver) got(substr string) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, b := range rc.bodies {
		if strings.Contains(b, substr) {
			return true
		}
	}
	return false
}

// An operator signs in with a key and runs Herald from the console: makes
// a topic and a webhook subscription, watches it become active, publishes
// and sees the delivery and its attempt, watches the live tail, makes the
// receiver fail and redrives the dead letter.
func TestConsoleOperator(t *testing.T) {
	t.Parallel()
	m, logs := testServer(t, t.TempDir(), nil)
	rc := newConsoleReceiver(t)
	b := startBrowser(t)

	b.open(m.URL() + "/")
	var path string
	b.eval(`location.pathname`, &path)
	if path != "/console/" {
		t.Fatalf("the root sent the browser to %q, want /console/", path)
	}
	b.fill(map[string]string{"#login-key": testAdminKey}, "#login-submit")
	b.waitText("#nav", "Subscriptions", false)
	var stored string
	b.eval(`location.href + document.cookie`, &stored)
	if strings.Contains(stored, testAdminKey) {
		t.Fatalf("the key is in the URL or a cookie: %q", stored)
	}

	b.goTo("#/topics")
	b.fill(map[string]string{"#topic-name": "orders"}, "#topic-create")
	b.waitText("#topics", "orders", false)

	b.goTo("#/subscriptions/new")
	b.fill(map[string]string{
		"#sub-topic": "orders", "#sub-url": rc.URL + "/hook", "#sub-description": "from the console",
		"#sub-extra": `{"retry": {"max_attempts": 2, "initial": "100ms", "max": "100ms"}}`,
	}, "#sub-create")
	b.waitText("#sub-state", "active", true)
	var hash string
	b.eval(`location.hash`, &hash)
	subID := strings.TrimPrefix(hash, "#/subscriptions/")

	// Publish from the topic's page, with the live tail open.
	b.goTo("#/topics/orders")
	b.click("#tail-toggle")
	// The tail is open once the stream answered; publish until it shows
	// (an event published before the stream opened is not in it).
	b.fill(map[string]string{"#publish-body": `{"order": "first"}`, "#publish-event-type": "order.created"}, "#publish")
	b.wait("the receiver to get the event", func() bool { return rc.got(`"first"`) })
	b.goTo("#/subscriptions/" + subID)
	b.waitText("#attempts", "success", true)
	b.waitText("#attempts", "204", false)

	b.goTo("#/topics/orders")
	b.waitText("#tail-toggle", "Start", false) // re-entering the page keeps no stale tail
	b.click("#tail-toggle")
	var published time.Time
	b.wait("the tail in the page to show a live event", func() bool {
		if strings.Contains(b.text("#tail"), "tailed") {
			return true
		}
		if time.Since(published) > time.Second { // until the stream is open
			published = time.Now()
			mustCall(t, m, testAdminKey, "POST", "/v1/topics/orders/events", `{"order":"tailed"}`, http.StatusCreated)
		}
		return false
	})

	// The receiver fails: the event ends in the dead letters; redrive it
	// once the receiver is back.
	rc.failing.Store(true)
	doomed := mustCall(t, m, testAdminKey, "POST", "/v1/topics/orders/events", `{"order":"doomed"}`, http.StatusCreated)["id"].(string)
	b.goTo("#/subscriptions/" + subID)
	b.waitText("#dead-letters", doomed, true)
	b.waitText("#attempts", "503", false)
	rc.failing.Store(false)
	b.click("#dead-redrive")
	b.wait("the redriven event at the receiver", func() bool { return rc.got(`"doomed"`) })
	b.waitText("#dead-letters", "No dead letters", true)

	b.goTo("#/nodes")
	b.waitText("#nodes", "this node", false)

	// Pause and resume from the page.
	b.goTo("#/subscriptions/" + subID)
	b.click("#sub-pause")
	b.waitText("#sub-state", "paused", false)
	b.click("#sub-resume")
	b.waitText("#sub-state", "active", false)

	if os.Getenv("HERALD_CONSOLE_SCREENSHOTS") != "" {
		dir := os.Getenv("HERALD_CONSOLE_SCREENSHOTS")
		b.screenshot(filepath.Join(dir, "subscription.png"))
		b.goTo("#/topics")
		b.waitText("#topics", "orders", false)
		b.screenshot(filepath.Join(dir, "topics.png"))
	}
	if strings.Contains(logs.String(), testAdminKey) {
		t.Fatal("the server log holds the admin key")
	}
}

// A tenant opens its portal link and sees and manages only its own
// endpoints; another tenant's subscription is as if it did not exist.
func TestConsolePortal(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.ConsoleFrameAncestors = "https://app.example.com" })
	rc := newConsoleReceiver(t)
	for _, tn := range []string{"acme", "globex"} {
		mustCall(t, m, testAdminKey, "PUT", "/v1/tenants/"+tn, `{"name":"`+tn+`"}`, http.StatusCreated)
	}
	mustCall(t, m, testAdminKey, "PUT", "/v1/topics/orders", `{}`, http.StatusCreated)
	theirs := mustCall(t, m, testAdminKey, "POST", "/v1/subscriptions",
		`{"topic":"orders","url":"`+rc.URL+`/globex","tenant":"globex","description":"globex hook"}`, http.StatusCreated)["id"].(string)
	platform := mustCall(t, m, testAdminKey, "POST", "/v1/subscriptions",
		`{"topic":"orders","url":"`+rc.URL+`/platform","description":"platform hook"}`, http.StatusCreated)["id"].(string)

	// The portal page may be framed by the configured origin only; the
	// operator console by no one.
	for path, want := range map[string]string{"/console/portal": "frame-ancestors https://app.example.com", "/console/": "frame-ancestors 'none'"} {
		resp, err := http.Get(m.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasSuffix(csp, want) || !strings.Contains(csp, "script-src 'self'") {
			t.Fatalf("%s: CSP %q, want script-src 'self' and %s", path, csp, want)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Fatalf("%s: security headers missing: %v", path, resp.Header)
		}
	}

	b := startBrowser(t)
	// The operator mints the link from the tenant's page.
	b.open(m.URL() + "/console/")
	b.fill(map[string]string{"#login-key": testAdminKey}, "#login-submit")
	b.goTo("#/tenants/acme")
	b.fill(map[string]string{"#portal-ttl": "15m"}, "#portal-mint")
	var link string
	b.wait("the portal link", func() bool {
		b.eval(`(document.getElementById('portal-url') || {}).value || ""`, &link)
		return link != ""
	})
	b.eval(`sessionStorage.clear()`, nil) // the tenant's browser knows no operator key

	b.open(link)
	b.waitFor("#subscriptions")
	var href string
	b.eval(`location.href`, &href)
	if strings.Contains(href, "token") {
		t.Fatalf("the portal kept the token in the address bar: %s", href)
	}
	if nav := b.text("#nav"); nav != "Endpoints" {
		t.Fatalf("the portal's navigation is %q, want only Endpoints", nav)
	}
	b.goTo("#/subscriptions/new")
	b.fill(map[string]string{"#sub-topic": "orders", "#sub-url": rc.URL + "/acme", "#sub-description": "acme hook"}, "#sub-create")
	b.waitText("#sub-state", "active", true)
	var hash string
	b.eval(`location.hash`, &hash)
	mine := strings.TrimPrefix(hash, "#/subscriptions/")
	got := mustCall(t, m, testAdminKey, "GET", "/v1/subscriptions/"+mine, "", http.StatusOK)
	if got["tenant"] != "acme" {
		t.Fatalf("the portal's subscription belongs to %v, want acme", got["tenant"])
	}
	b.click("#sub-rotate")
	b.waitText("#flash", "whsec_", false)
	b.click("#sub-test")
	b.wait("the test event at acme's receiver", func() bool { return rc.got("A test event from Herald") })

	b.goTo("#/subscriptions")
	b.waitText("#subscriptions", mine, true)
	list := b.text("#subscriptions")
	for _, other := range []string{theirs, platform, "globex hook", "platform hook"} {
		if strings.Contains(list, other) {
			t.Fatalf("the portal lists another's subscription %q:\n%s", other, list)
		}
	}
	for _, other := range []string{theirs, platform} {
		b.goTo("#/subscriptions/" + other)
		b.waitText("#view", "does not exist", false)
	}
	// The operator's pages are not the portal's.
	b.goTo("#/keys")
	b.waitText("#subscriptions", mine, false)
	if os.Getenv("HERALD_CONSOLE_SCREENSHOTS") != "" {
		b.screenshot(filepath.Join(os.Getenv("HERALD_CONSOLE_SCREENSHOTS"), "portal.png"))
	}

	// Revoked, the link opens nothing.
	linkID := ""
	for _, l := range mustCall(t, m, testAdminKey, "GET", "/v1/tenants/acme/portal-links", "", http.StatusOK)["portal_links"].([]any) {
		linkID = l.(map[string]any)["id"].(string)
	}
	mustCall(t, m, testAdminKey, "DELETE", "/v1/tenants/acme/portal-links/"+linkID, "", http.StatusNoContent)
	b.click("#refresh")
	b.waitText("#view", "expired or was revoked", false)
}
