package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/heraldhq/herald/client"
)

// BenchmarkViewRead is GET /v1/views/{name}/{key} through the server, over
// one keep-alive connection: what one view read costs end to end (client
// included). With -cpu and RunParallel readers it shows the server's
// throughput; docs/benchmarks.md has figures.
func BenchmarkViewRead(b *testing.B) {
	m, _ := testServer(b, b.TempDir(), func(c *Config) { c.LogLevel = 4 }) // warn: no line per request
	c := adminClient(m)
	ctx := b.Context()
	const keys = 1000
	if _, _, err := c.PutTopic(ctx, "deposits", client.TopicSettings{}); err != nil {
		b.Fatal(err)
	}
	mustAdminTB(b, m, "PUT", "/v1/views/balance", `{"input":"deposits","key":"wallet_id","aggregate":{"op":"sum","field":"amount"}}`)
	batch := make([]client.BatchEvent, keys)
	for i := range batch {
		batch[i] = client.BatchEvent{ContentType: "application/json", Payload: fmt.Appendf(nil, `{"wallet_id":"w%d","amount":%d}`, i, i)}
	}
	res, err := c.PublishBatch(ctx, "deposits", batch)
	if err != nil {
		b.Fatal(err)
	}
	last := res[len(res)-1].Seq
	mustAdminTB(b, m, "GET", fmt.Sprintf("/v1/views/balance/w0?min_seq=%d&wait=30s", last), "")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		i := 0
		for pb.Next() {
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/views/balance/w%d", m.URL(), i%keys), nil)
			req.Header.Set("Authorization", "Bearer "+testAdminKey)
			res, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Fatalf("read: %d", res.StatusCode)
			}
			i++
		}
	})
}

func mustAdminTB(b testing.TB, m *Main, method, path, body string) {
	b.Helper()
	req, _ := http.NewRequestWithContext(b.Context(), method, m.URL()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	msg, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode >= 300 {
		b.Fatalf("%s %s: %d %s", method, path, res.StatusCode, msg)
	}
}
