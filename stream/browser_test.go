package stream_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/stream"
)

// browserPage connects with EventSource and with WebSocket, both with a
// connection token, reconnects the WebSocket from the last seq when it
// closes (EventSource does that by itself), and reports what it receives
// to /report in order, retrying while the server is down.
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>herald streams</title></head><body>
<script>
const token = new URLSearchParams(location.search).get('token');
const queue = [];
let sending = false;
function report(obj) { queue.push(obj); pump(); }
async function pump() {
  if (sending) return;
  sending = true;
  while (queue.length) {
    const batch = queue.slice();
    try {
      const r = await fetch('/report', {method: 'POST', body: JSON.stringify(batch)});
      if (!r.ok) throw new Error('status ' + r.status);
      queue.splice(0, batch.length);
    } catch (e) {
      await new Promise(res => setTimeout(res, 100));
    }
  }
  sending = false;
}
window.onerror = (msg) => report({kind: 'error', msg: String(msg)});

const es = new EventSource('/v1/topics/browser.sse/stream?token=' + encodeURIComponent(token));
es.onopen = () => report({kind: 'sse-open'});
es.addEventListener('test', e => report({kind: 'sse', id: e.lastEventId, data: e.data}));
es.addEventListener('herald.disconnect', e => report({kind: 'sse-disconnect', data: e.data}));

let last = null;
function connect() {
  const ws = new WebSocket('ws://' + location.host + '/v1/stream?token=' + encodeURIComponent(token));
  ws.onopen = () => {
    const op = {op: 'subscribe', id: 'b', topic: 'browser.ws'};
    if (last !== null) op.since = last;
    ws.send(JSON.stringify(op));
  };
  ws.onmessage = m => {
    const f = JSON.parse(m.data);
    if (f.op === 'subscribed') report({kind: 'ws-open'});
    if (f.op === 'event') { last = f.seq; report({kind: 'ws', seq: f.seq, data: JSON.stringify(f.data)}); }
    if (f.op === 'error') report({kind: 'error', msg: m.data});
  };
  ws.onclose = e => { report({kind: 'ws-close', code: e.code, reason: e.reason}); setTimeout(connect, 200); };
}
connect();
</script></body></html>`

type browserReport struct {
	Kind   string `json:"kind"`
	ID     string `json:"id"`
	Seq    int64  `json:"seq"`
	Data   string `json:"data"`
	Msg    string `json:"msg"`
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// reports collects what the page reports, in the order it sent them.
type reports struct {
	mu  sync.Mutex
	all []browserReport
}

func (rs *reports) handler(w http.ResponseWriter, r *http.Request) {
	var batch []browserReport
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err := json.Unmarshal(body, &batch); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rs.mu.Lock()
	rs.all = append(rs.all, batch...)
	rs.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rs *reports) snapshot() []browserReport {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]browserReport(nil), rs.all...)
}

func (rs *reports) count(kind string) int {
	n := 0
	for _, r := range rs.snapshot() {
		if r.Kind == kind {
			n++
		}
	}
	return n
}

// A real browser receives events over EventSource and WebSocket with a
// connection token, survives a server restart, and sees every event once.
func TestBrowser(t *testing.T) {
	bin := os.Getenv("HERALD_TEST_CHROMIUM")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("chromium"); err != nil {
			t.Skip("the browser test needs Chromium: install Debian's chromium package or set HERALD_TEST_CHROMIUM")
		}
	}
	rs := &reports{}
	routes := func(mux *http.ServeMux) {
		mux.HandleFunc("GET /page", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = io.WriteString(w, browserPage)
		})
		mux.HandleFunc("POST /report", rs.handler)
	}
	opts := nodeOptions{mux: routes, cfg: stream.Config{SSERetry: 200 * time.Millisecond}}
	n := startNode(t, opts)
	n.createTopic("browser.sse", 0)
	n.createTopic("browser.ws", 0)
	// The application's backend asks for a token and hands it to the page.
	token, _, err := n.tokens.Issue(scopes(t, "read:browser.>"), time.Hour, "browser-app", time.Time{})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
		"--user-data-dir="+filepath.Join(dir, "profile"), n.url+"/page?token="+url.QueryEscape(token))
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers share its group
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the browser and its helper processes
		_ = cmd.Wait()
	})
	failIfErrors := func() {
		for _, r := range rs.snapshot() {
			if r.Kind == "error" {
				t.Fatalf("page error: %s", r.Msg)
			}
		}
	}
	waitFor(t, "the page to open both streams", func() bool {
		failIfErrors()
		return rs.count("sse-open") >= 1 && rs.count("ws-open") >= 1
	})

	const perPhase = 20
	publishBoth := func(from int) {
		for i := from; i < from+perPhase; i++ {
			n.publish(pub{topic: "browser.sse", typ: "test", payload: fmt.Sprintf(`{"n":%d}`, i)},
				pub{topic: "browser.ws", typ: "test", payload: fmt.Sprintf(`{"n":%d}`, i)})
		}
	}
	publishBoth(1)
	waitFor(t, "the first events in the page", func() bool {
		failIfErrors()
		return rs.count("sse") >= perPhase && rs.count("ws") >= perPhase
	})

	n = n.restart(opts)
	publishBoth(perPhase + 1)
	waitFor(t, "the events after the restart in the page", func() bool {
		failIfErrors()
		return rs.count("sse") >= 2*perPhase && rs.count("ws") >= 2*perPhase
	})
	// A last event on each: reports come in order, so once it is in, any
	// duplicate delivered before it is in too.
	n.publish(pub{topic: "browser.sse", typ: "test", payload: `{"n":"last"}`},
		pub{topic: "browser.ws", typ: "test", payload: `{"n":"last"}`})
	waitFor(t, "the last events", func() bool {
		var sse, ws bool
		for _, r := range rs.snapshot() {
			sse = sse || r.Kind == "sse" && strings.Contains(r.Data, "last")
			ws = ws || r.Kind == "ws" && strings.Contains(r.Data, "last")
		}
		return sse && ws
	})

	all := rs.snapshot()
	var sseIDs, wsSeqs []string
	var sawDisconnect, sawRestartClose bool
	for _, r := range all {
		switch r.Kind {
		case "sse":
			sseIDs = append(sseIDs, r.ID)
			if want := fmt.Sprintf(`{"n":%s}`, r.ID); r.ID != fmt.Sprint(2*perPhase+1) && r.Data != want {
				t.Errorf("SSE event %s has data %s, want %s", r.ID, r.Data, want)
			}
		case "ws":
			wsSeqs = append(wsSeqs, fmt.Sprint(r.Seq))
		case "sse-disconnect":
			sawDisconnect = strings.Contains(r.Data, "shutdown")
		case "ws-close":
			sawRestartClose = sawRestartClose || r.Code == 1012 && r.Reason == stream.ReasonShutdown
		}
	}
	want := make([]string, 0, 2*perPhase+1)
	for i := 1; i <= 2*perPhase+1; i++ {
		want = append(want, fmt.Sprint(i))
	}
	if strings.Join(sseIDs, ",") != strings.Join(want, ",") {
		t.Errorf("EventSource got ids %v, want each of 1..%d once", sseIDs, 2*perPhase+1)
	}
	if strings.Join(wsSeqs, ",") != strings.Join(want, ",") {
		t.Errorf("WebSocket got seqs %v, want each of 1..%d once", wsSeqs, 2*perPhase+1)
	}
	if !sawDisconnect || !sawRestartClose {
		t.Errorf("the page was not told of the restart: herald.disconnect %v, close 1012 %v", sawDisconnect, sawRestartClose)
	}
	if t.Failed() {
		t.Logf("chromium stderr:\n%s", stderr.String())
	}
}
