package api

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/stream"
)

// Deleting a topic through the API ends its open streams: an SSE stream
// of it gets a herald.disconnect event of code not-found and ends, instead
// of staying open and silent.
func TestDeleteTopicEndsItsStreams(t *testing.T) {
	e := newEnv(t, Config{})
	e.startHub(stream.Config{})
	e.putTopic("orders.eu", "")

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/v1/topics/orders.eu/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+e.admin)
	res, err := e.srv.Client().Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("open the stream: status %d", res.StatusCode)
	}
	br := bufio.NewReader(res.Body)
	readLine := func() string {
		t.Helper()
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read the stream: %v (so far %q)", err, line)
		}
		return strings.TrimSuffix(line, "\n")
	}
	for readLine() != "id: 0" { // the stream's start position: it is open
	}

	e.must(http.StatusNoContent, req{method: "DELETE", path: "/v1/topics/orders.eu"}, nil)
	for line := readLine(); line != "event: herald.disconnect"; line = readLine() {
		if !strings.HasPrefix(line, ":") && line != "" {
			t.Fatalf("got %q, want the herald.disconnect event", line)
		}
	}
	if data := readLine(); !strings.Contains(data, `"code":"not-found"`) {
		t.Errorf("disconnect %s, want code not-found", data)
	}
}
