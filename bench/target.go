package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/client"
)

// heraldTarget publishes to a topic of a running Herald through the Go
// client: one event per request with Publish, several with PublishBatch.
type heraldTarget struct {
	c     *client.Client
	topic string
}

func (h heraldTarget) publish(ctx context.Context, payloads [][]byte) error {
	if len(payloads) == 1 {
		_, err := h.c.Publish(ctx, h.topic, payloads[0], client.PublishOptions{ContentType: "application/json"})
		return err
	}
	events := make([]client.BatchEvent, len(payloads))
	for i, p := range payloads {
		events[i] = client.BatchEvent{ContentType: "application/json", Payload: p}
	}
	_, err := h.c.PublishBatch(ctx, h.topic, events)
	return err
}

// roundRobin sends each request to the next of its targets in turn, such
// as Herald nodes that share a store, so a run spreads its load evenly.
type roundRobin struct {
	targets []publishTarget
	next    atomic.Uint64
}

func (r *roundRobin) publish(ctx context.Context, payloads [][]byte) error {
	i := (r.next.Add(1) - 1) % uint64(len(r.targets))
	return r.targets[i].publish(ctx, payloads)
}

// rawTarget publishes to the raw relay, in the same shapes as Herald's API:
// the payload as the body, or a batch of base64 payloads in JSON.
type rawTarget struct {
	hc  *http.Client
	url string // the relay's base URL
}

func (r rawTarget) publish(ctx context.Context, payloads [][]byte) error {
	path, body := "/publish", payloads[0]
	if len(payloads) > 1 {
		path = "/publish:batch"
		var b bytes.Buffer
		b.WriteString(`{"events":[`)
		for i, p := range payloads {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"data_base64":"`)
			enc := base64.NewEncoder(base64.StdEncoding, &b)
			_, _ = enc.Write(p)
			_ = enc.Close()
			b.WriteString(`"}`)
		}
		b.WriteString(`]}`)
		body = b.Bytes()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.hc.Do(req)
	if err != nil {
		return fmt.Errorf("publish to the raw relay: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("publish to the raw relay: %s", resp.Status)
	}
	return nil
}

// publisherHTTPClient is the HTTP client of the publisher: one keep-alive
// connection per worker, so a run measures requests, not connection setup.
func publisherHTTPClient(workers int) *http.Client {
	return &http.Client{
		Timeout: time.Minute,
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConns:          workers + 8,
			MaxIdleConnsPerHost:   workers + 8,
			IdleConnTimeout:       90 * time.Second,
			DisableCompression:    true,
		},
	}
}
