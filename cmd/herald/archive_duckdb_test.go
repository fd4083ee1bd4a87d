//go:build duckdb

// DuckDB links through cgo and is slow to build, so this test sits behind
// the duckdb build tag; .ci/run runs it (go test -tags duckdb -run DuckDB).

package main

import (
	"bufio"
	"bytes"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/heraldhq/herald/client"
)

// TestArchiveDuckDBOverHTTP checks what a user compares: the events GET
// /v1/archives/{name}/events returns from a real server, page by page
// with its cursor (and as NDJSON), are the rows DuckDB reads from the
// same archive's Parquet files as docs/archive.md tells users to read
// them: the same events, fields, payloads and partition values, in the
// same order, for a partition, a topic and the whole range.
func TestArchiveDuckDBOverHTTP(t *testing.T) {
	t.Parallel()
	dir, archiveDir := t.TempDir(), t.TempDir()
	m, _ := testServer(t, dir, func(c *Config) { c.ArchiveDir = archiveDir })
	c := adminClient(m)
	ctx := t.Context()
	for _, topic := range []string{"logs.app", "logs.bin"} {
		if _, _, err := c.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
			t.Fatal(err)
		}
	}
	spec := map[string]any{
		"topics":      "logs.>",
		"partition":   []map[string]string{{"key": "org", "field": "org.id", "default": "none"}},
		"format":      "parquet",
		"flush":       map[string]any{"max_events": 7, "max_age": "200ms"},
		"destination": map[string]any{"type": "local", "path": "logs"},
		"start":       "earliest",
	}
	if status, body, _ := archiveCall(t, m, "PUT", "/v1/archives/logs", spec); status != http.StatusCreated {
		t.Fatalf("PUT /v1/archives/logs: %d %s", status, body)
	}
	// Events of several organizations (one without), with types, keys,
	// headers, idempotency keys, escaped text, a JSON payload that is no
	// object, and binary payloads in another topic.
	total := 0
	for i := range 40 {
		o := client.PublishOptions{ContentType: "application/json", Type: "log.line", Key: fmt.Sprintf("k%d", i%3)}
		if i%4 == 0 {
			o.Headers = map[string]string{"X-Trace": fmt.Sprintf("t-%d", i)}
		}
		if i%5 == 0 {
			o.IdempotencyKey = fmt.Sprintf("idem-%d", i)
		}
		payload := fmt.Appendf(nil, `{"org":{"id":%q},"n":%d,"msg":"line \"%d\" \u00e9\u2028"}`, []string{"acme", "globex", "initech"}[i%3], i, i)
		switch {
		case i%9 == 8:
			payload = fmt.Appendf(nil, `{"n":%d}`, i) // no org: "none"
		case i == 13:
			payload = []byte(`[1, 2, {"org": "x"}]`)
		case i == 21:
			o.ContentType = "application/json; charset=utf-8"
		}
		if _, err := c.Publish(ctx, "logs.app", payload, o); err != nil {
			t.Fatal(err)
		}
		total++
	}
	for i := range 3 {
		if _, err := c.Publish(ctx, "logs.bin", []byte{0, byte(i), 0xff, '\n'}, client.PublishOptions{ContentType: "application/octet-stream"}); err != nil {
			t.Fatal(err)
		}
		total++
	}
	now := time.Now().UTC()
	from, to := now.Add(-time.Hour), now.Add(time.Hour)
	rng := url.Values{"from": {from.Format(time.RFC3339Nano)}, "to": {to.Format(time.RFC3339Nano)}}
	waitArchived(t, m, "logs", url.Values{"from": rng["from"], "to": rng["to"], "limit": {"1000"}}, total)

	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	glob := filepath.Join(archiveDir, "logs") + "/**/*.parquet"
	for _, c := range []struct {
		name   string
		params url.Values // besides the time range
		where  string     // DuckDB's condition besides the time range
		want   int
	}{
		{"one organization", url.Values{"partition.org": {"acme"}}, "org = 'acme'", 14},
		{"the default partition", url.Values{"partition.org": {"none"}}, "org = 'none'", 8},
		{"one topic", url.Values{"topic": {"logs.bin"}}, "topic = 'logs.bin'", 3},
		{"everything", url.Values{}, "true", total},
	} {
		t.Run(c.name, func(t *testing.T) {
			params := url.Values{"from": rng["from"], "to": rng["to"], "limit": {"4"}}
			for k, v := range c.params {
				params[k] = v
			}
			got := httpRows(t, m, params)
			want := duckRows(t, db, glob, c.where, from, to)
			if len(want) != c.want {
				t.Fatalf("DuckDB found %d events, want %d:\n%s", len(want), c.want, strings.Join(want, "\n"))
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("GET /v1/archives/logs/events (%s) differs from DuckDB over the files:\nHTTP:\n%s\nDuckDB:\n%s", params.Encode(), strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
	// NDJSON gives the same events, one a line.
	status, body, trailer := archiveCall(t, m, "GET", "/v1/archives/logs/events?"+rng.Encode()+"&limit=1000", nil, "Accept", "application/x-ndjson")
	if status != http.StatusOK || trailer.Get("Herald-Next-Cursor") != "" {
		t.Fatalf("NDJSON: %d, trailer %v", status, trailer)
	}
	var nd []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		var e httpEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("NDJSON line %q: %v", sc.Text(), err)
		}
		nd = append(nd, e.row(t))
	}
	if want := duckRows(t, db, glob, "true", from, to); strings.Join(nd, "\n") != strings.Join(want, "\n") {
		t.Fatalf("NDJSON differs from DuckDB:\nNDJSON:\n%s\nDuckDB:\n%s", strings.Join(nd, "\n"), strings.Join(want, "\n"))
	}
}

// httpEvent is an event of GET /v1/archives/{name}/events.
type httpEvent struct {
	ID             string            `json:"id"`
	Topic          string            `json:"topic"`
	Seq            int64             `json:"seq"`
	Type           string            `json:"type"`
	Key            string            `json:"key"`
	IdempotencyKey string            `json:"idempotency_key"`
	ContentType    string            `json:"content_type"`
	Headers        map[string]string `json:"headers"`
	Time           string            `json:"time"`
	Data           json.RawMessage   `json:"data"`
	DataBase64     *string           `json:"data_base64"`
	Partition      map[string]string `json:"partition"`
}

func (e httpEvent) row(t *testing.T) string {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, e.Time)
	if err != nil {
		t.Fatalf("time of %s/%d: %v", e.Topic, e.Seq, err)
	}
	payload := []byte(e.Data)
	if e.DataBase64 != nil {
		if payload, err = base64.StdEncoding.DecodeString(*e.DataBase64); err != nil {
			t.Fatalf("data_base64 of %s/%d: %v", e.Topic, e.Seq, err)
		}
	}
	return archivedRow(e.ID, e.Topic, e.Seq, at.UnixNano(), e.Type, e.Key, e.IdempotencyKey, e.ContentType, e.Headers, e.DataBase64 != nil, payload, e.Partition["org"])
}

// httpRows follows the query's pages (next_cursor) to the end.
func httpRows(t *testing.T, m *Main, params url.Values) []string {
	t.Helper()
	var rows []string
	for pages := 0; ; pages++ {
		status, body, _ := archiveCall(t, m, "GET", "/v1/archives/logs/events?"+params.Encode(), nil)
		if status != http.StatusOK {
			t.Fatalf("GET events: %d %s", status, body)
		}
		var p struct {
			Events     []httpEvent `json:"events"`
			NextCursor string      `json:"next_cursor"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatalf("GET events: %v in %s", err, body)
		}
		for _, e := range p.Events {
			rows = append(rows, e.row(t))
		}
		if p.NextCursor == "" {
			return rows
		}
		if pages > 100 {
			t.Fatalf("more than 100 pages of %s", params.Encode())
		}
		params.Set("cursor", p.NextCursor)
	}
}

// duckRows reads the archive's files with DuckDB as docs/archive.md does:
// Hive partitions as columns, each (topic, seq) once, in (time, topic,
// seq) order.
func duckRows(t *testing.T, db *sql.DB, glob, where string, from, to time.Time) []string {
	t.Helper()
	const duckTime = "2006-01-02 15:04:05.999999999-07"
	rows, err := db.QueryContext(t.Context(), `
		SELECT id, topic, seq, epoch_ns(time), type, key, idempotency_key, content_type, headers, data, data_base64, org
		FROM read_parquet(?, hive_partitioning = true)
		WHERE time >= ? AND time < ? AND `+where+`
		QUALIFY row_number() OVER (PARTITION BY topic, seq) = 1
		ORDER BY time, topic, seq`, glob, from.Format(duckTime), to.Format(duckTime))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, topic, typ, key, idem, ct, headers, data, data64, org string
		var seq, ns int64
		if err := rows.Scan(&id, &topic, &seq, &ns, &typ, &key, &idem, &ct, &headers, &data, &data64, &org); err != nil {
			t.Fatal(err)
		}
		var hs map[string]string
		if headers != "" {
			if err := json.Unmarshal([]byte(headers), &hs); err != nil {
				t.Fatalf("headers of %s/%d: %v", topic, seq, err)
			}
		}
		payload := []byte(data)
		if data == "" {
			if payload, err = base64.StdEncoding.DecodeString(data64); err != nil {
				t.Fatalf("data_base64 of %s/%d: %v", topic, seq, err)
			}
		}
		// The API shows times to the millisecond, as everywhere in
		// Herald's API; the files keep nanoseconds.
		ms := ns / int64(time.Millisecond) * int64(time.Millisecond)
		out = append(out, archivedRow(id, topic, seq, ms, typ, key, idem, ct, hs, data == "", payload, org))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// archivedRow renders one event for comparison; JSON payloads compacted
// (the query returns them compacted, the files keep them as published).
func archivedRow(id, topic string, seq, ns int64, typ, key, idem, ct string, headers map[string]string, binary bool, payload []byte, org string) string {
	var compact bytes.Buffer
	if !binary && json.Compact(&compact, payload) == nil {
		payload = compact.Bytes()
	}
	hs, _ := json.Marshal(headers)
	return fmt.Sprintf("%s %s/%d %d type=%s key=%s idem=%s ct=%s headers=%s binary=%v %q org=%s", id, topic, seq, ns, typ, key, idem, ct, hs, binary, payload, org)
}
