package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/redis"
	"github.com/heraldhq/herald/client"
)

// cutProxy forwards TCP connections to a server until it is cut: then it
// closes every connection and listens no more, so dials are refused,
// until it is mended on the same port.
type cutProxy struct {
	t      *testing.T
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	p := &cutProxy{t: t, target: target, addr: "127.0.0.1:0"}
	p.mend()
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) mend() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); _ = out.Close() }()
			go func() { _, _ = io.Copy(in, out); _ = in.Close() }()
		}
	}()
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// TestRedisChannelEndToEnd drives a redis subscription through the real
// server against the real Redis: created over HTTP, events published with
// keys are appended to the stream named by the template, in per-key
// order; while Redis cannot be reached the attempts fail with the reason,
// and nothing is lost once it can.
func TestRedisChannelEndToEnd(t *testing.T) {
	t.Parallel()
	target := os.Getenv("HERALD_TEST_REDIS")
	if target == "" {
		t.Skip("HERALD_TEST_REDIS is not set")
	}
	rc := goredis.NewClient(&goredis.Options{Addr: target, DisableIdentity: true})
	defer rc.Close()
	if err := rc.Ping(t.Context()).Err(); err != nil {
		t.Skipf("HERALD_TEST_REDIS=%s: %v", target, err)
	}
	proxy := newCutProxy(t, target)
	prefix := fmt.Sprintf("herald-e2e-%d", time.Now().UnixNano())
	stream := prefix + ":deposits"
	t.Cleanup(func() { rc.Del(context.Background(), stream) })

	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "deposits", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"topic":"deposits","channel":"redis","ordered":true,"retry":{"initial":"100ms","max":"500ms"},"timeout":"2s",
		"config":{"address":%q,"stream":%q,"maxlen":100000,"linger_ms":2}}`, proxy.addr, prefix+":{topic}")
	req, _ := http.NewRequestWithContext(ctx, "POST", m.URL()+"/v1/subscriptions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || !strings.Contains(string(raw), `"state":"active"`) {
		t.Fatalf("create: %d %s", resp.StatusCode, raw)
	}
	var id struct{ ID string }
	if err := json.Unmarshal(raw, &id); err != nil {
		t.Fatal(err)
	}

	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := c.Publish(ctx, "deposits", fmt.Appendf(nil, "%d", i), client.PublishOptions{ContentType: "text/plain", Key: fmt.Sprintf("wallet-%d", i%4)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	inOrder := func(n int) bool {
		msgs, err := rc.XRange(ctx, stream, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		seen, last := map[string]bool{}, map[string]int{}
		for _, e := range msgs {
			evID, _ := e.Values[redis.FieldID].(string)
			if seen[evID] {
				continue // a redelivery
			}
			seen[evID] = true
			key, _ := e.Values[redis.FieldKey].(string)
			var i int
			fmt.Sscan(e.Values[redis.FieldPayload].(string), &i)
			if prev, ok := last[key]; ok && i <= prev {
				t.Fatalf("key %s: %d after %d", key, i, prev)
			}
			last[key] = i
		}
		return len(seen) == n
	}
	publish(0, 40)
	eventually(t, "40 entries in the stream", func() bool { return inOrder(40) })

	proxy.cut()
	publish(40, 80)
	eventually(t, "a failed attempt", func() bool {
		page, err := c.ListAttempts(ctx, id.ID, client.AttemptListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page.Attempts {
			if a.Error == channel.ReasonConnectionRefused {
				return true
			}
		}
		return false
	})
	proxy.mend()
	eventually(t, "all 80 entries once Redis is back", func() bool { return inOrder(80) })
}
