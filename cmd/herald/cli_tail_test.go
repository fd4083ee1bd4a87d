package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/stream"
)

// tailKeys lets "Bearer key" read orders.>.
type tailKeys struct{}

func (tailKeys) Authenticate(r *http.Request) (herald.Scopes, string, error) {
	if r.Header.Get("Authorization") != "Bearer key" {
		return nil, "", herald.Errorf(herald.CodeUnauthorized, "the API key is not valid")
	}
	return herald.Scopes{{Action: herald.ActionRead, Pattern: "orders.>"}}, "key", nil
}

// tailServer serves the stream endpoint over a real store and committer,
// and returns a publish function.
func tailServer(t *testing.T) (string, func(topic, typ, ct, payload string)) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "herald.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	com := engine.NewCommitter(st, engine.CommitterConfig{}, nil, nil)
	hub := stream.NewHub(stream.Config{}, stream.Deps{Store: st})
	com.OnCommit(hub.OnCommit)
	if err := hub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := com.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/stream", func(w http.ResponseWriter, r *http.Request) {
		// The API's part: establish who calls, answer refusals.
		scopes, subject, err := tailKeys{}.Authenticate(r)
		if err == nil {
			err = hub.ServeWebSocket(w, r, herald.Principal{Subject: subject, Scopes: scopes})
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		_ = hub.Stop(context.Background())
		srv.Close()
		_ = com.Stop(context.Background())
		_ = st.Close()
	})
	for _, name := range []string{"orders.eu", "orders.us"} {
		if _, _, err := st.PutTopic(ctx, herald.Topic{Name: name}.WithDefaults()); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(topic, typ, ct, payload string) {
		e := &herald.Event{ID: herald.NewID(time.Now()), Topic: topic, Type: typ, Key: "k1", ContentType: ct,
			Payload: []byte(payload), Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
		if _, err := com.Append(ctx, []*herald.Event{e}); err != nil {
			t.Fatal(err)
		}
	}
	return srv.URL, publish
}

func runTail(t *testing.T, url string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := &cli{stdout: &stdout, stderr: &stderr, getenv: env(map[string]string{"HERALD_URL": url, "HERALD_KEY": "key"})}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err := tailVerb(ctx, c, args)
	return stdout.String(), stderr.String(), err
}

func TestTailPrintsEvents(t *testing.T) {
	url, publish := tailServer(t)
	publish("orders.eu", "order.created", "application/json", `{ "total": 12 }`)
	publish("orders.us", "order.note", "text/plain", "two\nlines")
	publish("orders.eu", "order.blob", "application/octet-stream", "\x00\x01")

	out, _, err := runTail(t, url, "orders.*", "--since", "0", "--count", "3")
	if err != nil {
		t.Fatal(err)
	}
	// A pattern replays topic by topic, each in seq order.
	want := "2025-01-02T03:04:05Z orders.eu #1 order.created key=k1 {\"total\":12}\n" +
		"2025-01-02T03:04:05Z orders.eu #2 order.blob key=k1 (2 bytes of binary data; --output json shows them in base64)\n" +
		"2025-01-02T03:04:05Z orders.us #1 order.note key=k1 two\\nlines\n"
	if out != want {
		t.Errorf("text output:\n%s\nwant:\n%s", out, want)
	}

	out, _, err = runTail(t, url, "orders.eu", "--since", "1", "--count", "1", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var e client.Event
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.Seq != 2 || string(e.Payload) != "\x00\x01" || strings.Count(out, "\n") != 1 {
		t.Errorf("JSON output %q: %+v %v", out, e, err)
	}

	// Filtered, from now: only what is published after it starts.
	done := make(chan struct{})
	var filtered string
	go func() {
		defer close(done)
		filtered, _, err = runTail(t, url, "orders.>", "--filter", `{"types":["order.created"]}`, "--count", "1")
	}()
	waitForTail := time.Now().Add(20 * time.Second)
	for {
		publish("orders.us", "order.ignored", "application/json", `{}`)
		publish("orders.us", "order.created", "application/json", `{"late":true}`)
		select {
		case <-done:
		case <-time.After(50 * time.Millisecond):
			if time.Now().Before(waitForTail) {
				continue
			}
			t.Fatal("tail --filter printed nothing")
		}
		break
	}
	if err != nil || !strings.Contains(filtered, `order.created key=k1 {"late":true}`) {
		t.Errorf("filtered: %q %v", filtered, err)
	}
}

func TestTailRefusals(t *testing.T) {
	url, _ := tailServer(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing arguments"},
		{[]string{"orders.eu", "--since", "yesterday"}, "want a seq (0 or more) or an RFC 3339 time"},
		{[]string{"orders.eu", "--filter", "{types"}, "--filter: not valid JSON"},
		{[]string{"orders.eu", "--count", "-1"}, "--count -1"},
	} {
		_, _, err := runTail(t, url, tc.args...)
		if _, ok := err.(*usageError); !ok || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
	_, _, err := runTail(t, url, "payments.eu")
	if p, ok := err.(*client.Problem); !ok || p.Status != 403 {
		t.Errorf("out of scope: %v", err)
	}
	_, _, err = runTail(t, url, "orders.eu", "--filter", `{"types":[]}`)
	if p, ok := err.(*client.Problem); !ok || p.Status != 400 {
		t.Errorf("bad filter: %v", err)
	}
}
