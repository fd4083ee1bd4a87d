package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

// TestShutdownDrainDelay stops a server with a drain delay: during it
// /readyz answers 503 while other requests, publishes included, are still
// served on new connections; then the listener closes.
func TestShutdownDrainDelay(t *testing.T) {
	t.Parallel()
	m, logs := testServer(t, t.TempDir(), func(c *Config) { c.ShutdownDrainDelay = time.Hour })
	ctx := t.Context()
	ac := adminClient(m)
	if _, _, err := ac.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get(m.URL() + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	stop, cancelDrain := context.WithCancel(context.Background())
	closed := make(chan error, 1)
	go func() { closed <- m.Close(stop) }()
	deadline := time.Now().Add(guardTimeout)
	for {
		code, body := get("/readyz")
		if code == http.StatusServiceUnavailable {
			if !strings.Contains(body, "shutting down") {
				t.Fatalf("/readyz while draining: %s; want it to say it is shutting down", body)
			}
			break
		}
		if code != 200 || time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %s after Close began; want 200 and then 503", code, body)
		}
	}
	if code, body := get("/healthz"); code != 200 {
		t.Fatalf("/healthz while draining = %d %s", code, body)
	}
	res, err := ac.Publish(ctx, "orders", []byte(`{"n":1}`), client.PublishOptions{ContentType: "application/json"})
	if err != nil || res.Seq != 1 {
		t.Fatalf("publish while draining = %+v, %v; want it stored", res, err)
	}
	if !strings.Contains(logs.String(), "draining") {
		t.Errorf("no log line says the server is draining:\n%s", logs)
	}

	cancelDrain() // the drain delay ends; the rest of the shutdown follows
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if code, _ := get("/readyz"); code != 0 {
		t.Fatalf("/readyz = %d after Close; want the listener closed", code)
	}
}
