package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/client"
)

// TestPresenceAcrossNodes runs three Herald processes on one PostgreSQL
// schema with presence events on. A user connected to node A is present
// when asked on node C; a second connection on node B is counted there
// too and announces nothing; only when the last of them closes does the
// user leave. herald.presence then holds exactly one join and one leave
// for the whole cluster, not one per node.
func TestPresenceAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	t.Parallel()
	dsn := pgDSN(t)
	ctx := t.Context()
	args := []string{"--database-url", dsn, "--admin-key", testAdminKey, "--data-dir", t.TempDir(),
		"--stream.presence-events", "--stream.token-secret", "presence-secret-0123456789abcdef0123456789"}
	procs := make([]*proc, 3)
	ids := make([]string, 3)
	for i := range procs {
		procs[i] = startProc(t, args...)
		ids[i] = nodeIDOf(t, procs[i])
	}
	a, b, c := procs[0], procs[1], procs[2]

	call := func(p *proc, method, path, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, p.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	status, body := call(a, "POST", "/v1/tokens", `{"user":"u42","scopes":["read:accounts.{user}.>"],"ttl":"10m"}`)
	var tok struct {
		Token string `json:"token"`
	}
	if status != 200 || json.Unmarshal(body, &tok) != nil {
		t.Fatalf("POST /v1/tokens = %d %s", status, body)
	}
	connect := func(p *proc) *websocket.Conn {
		t.Helper()
		u := "ws" + strings.TrimPrefix(p.url, "http") + "/v1/stream?token=" + url.QueryEscape(tok.Token)
		ws, _, err := websocket.Dial(ctx, u, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", p.url, err)
		}
		ws.CloseRead(context.Background()) // answers pings; the frames are not needed here
		t.Cleanup(func() { ws.CloseNow() })
		return ws
	}
	type presence struct {
		User        string `json:"user"`
		Connections int    `json:"connections"`
		Nodes       []struct {
			Node        string `json:"node"`
			Connections int    `json:"connections"`
		} `json:"nodes"`
	}
	askedOn := func(p *proc) presence {
		t.Helper()
		status, body := call(p, "GET", "/v1/users/u42/connections", "")
		var out presence
		if status != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("GET connections on %s = %d %s", p.url, status, body)
		}
		return out
	}
	reader := client.New(c.url, client.WithKey(testAdminKey))
	events := func() []string {
		page, err := reader.ListEvents(ctx, "herald.presence", 0, 100)
		if err != nil {
			return nil // not created before the first event
		}
		var out []string
		for _, e := range page.Events {
			var p struct {
				User        string `json:"user"`
				Connections int    `json:"connections"`
			}
			if err := json.Unmarshal(e.Payload, &p); err != nil || p.User != "u42" || e.Key != "u42" {
				t.Fatalf("presence event %s %s: %v", e.Type, e.Payload, err)
			}
			out = append(out, e.Type)
		}
		return out
	}

	wsA := connect(a)
	waitCond(t, "the user on node A present when asked on node C", 60*time.Second, func() bool {
		p := askedOn(c)
		return p.Connections == 1 && len(p.Nodes) == 1 && p.Nodes[0].Node == ids[0]
	})
	waitCond(t, "one herald.user.joined", 60*time.Second, func() bool { return len(events()) >= 1 })

	wsB := connect(b)
	waitCond(t, "the second connection, on node B, counted on node A", 60*time.Second, func() bool {
		p := askedOn(a)
		return p.Connections == 2 && len(p.Nodes) == 2
	})
	wsA.Close(websocket.StatusNormalClosure, "")
	waitCond(t, "node A's connection gone, node B's left", 60*time.Second, func() bool {
		p := askedOn(c)
		return p.Connections == 1 && len(p.Nodes) == 1 && p.Nodes[0].Node == ids[1]
	})
	wsB.Close(websocket.StatusNormalClosure, "")
	waitCond(t, "herald.user.left", 60*time.Second, func() bool { return len(events()) >= 2 })
	if got := events(); len(got) != 2 || got[0] != "herald.user.joined" || got[1] != "herald.user.left" {
		t.Fatalf("herald.presence = %v; want one join and one leave for the cluster", got)
	}
	if p := askedOn(b); p.Connections != 0 {
		t.Fatalf("after both closed: %+v", p)
	}
}
