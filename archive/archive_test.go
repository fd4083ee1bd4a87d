package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

var t0 = time.Date(2026, 12, 7, 15, 30, 0, 0, time.UTC)

func newChannel(t *testing.T) (*Channel, string) {
	t.Helper()
	dir := t.TempDir()
	return New(ChannelConfig{Dir: dir}, nil, nil), dir
}

func validConfig(t *testing.T, ch *Channel, raw string) json.RawMessage {
	t.Helper()
	c, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(raw), Internal: true})
	if err != nil {
		t.Fatalf("Validate(%s): %v", raw, err)
	}
	return c
}

func open(t *testing.T, ch *Channel, config json.RawMessage) *sink {
	t.Helper()
	s, err := ch.Open(t.Context(), &herald.Subscription{ID: "sub_test", Config: config})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s.(*sink)
}

func ev(topic string, seq int64, at time.Time, payload string) *herald.Event {
	return &herald.Event{ID: fmt.Sprintf("ev%d", seq), Topic: topic, Seq: seq, Time: at, ContentType: "application/json", Payload: []byte(payload)}
}

func deliver(t *testing.T, s *sink, evs ...*herald.Event) []herald.DeliveryResult {
	t.Helper()
	batch := make([]channel.Delivery, len(evs))
	for i, e := range evs {
		batch[i] = channel.Delivery{Event: e, Attempt: 1}
	}
	return s.DeliverBatch(t.Context(), batch)
}

func deliverCtx(ctx context.Context, s *sink, evs ...*herald.Event) []herald.DeliveryResult {
	batch := make([]channel.Delivery, len(evs))
	for i, e := range evs {
		batch[i] = channel.Delivery{Event: e, Attempt: 1}
	}
	return s.DeliverBatch(ctx, batch)
}

func allDelivered(t *testing.T, rs []herald.DeliveryResult) {
	t.Helper()
	for i, r := range rs {
		if r.Outcome != herald.Delivered {
			t.Fatalf("result %d: %+v, want Delivered", i, r)
		}
	}
}

func query(t *testing.T, ch *Channel, config json.RawMessage, q Query) ([]Hit, Page) {
	t.Helper()
	if err := CheckQuery(config, &q); err != nil {
		t.Fatalf("CheckQuery: %v", err)
	}
	var hits []Hit
	page, err := ch.Run(t.Context(), config, q, func(h Hit) error { hits = append(hits, h); return nil })
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return hits, page
}

func seqs(hits []Hit) string {
	var b []string
	for _, h := range hits {
		b = append(b, fmt.Sprintf("%s/%d", h.Event.Topic, h.Event.Seq))
	}
	return strings.Join(b, " ")
}

const partitioned = `{"partition":[{"key":"env","field":"environment","default":"none"},{"key":"org","field":"org.id"}],"flush":{"max_events":1000,"max_age":"1s"},"destination":{"type":"local","path":"logs"}}`

func TestValidate(t *testing.T) {
	t.Parallel()
	ch, _ := newChannel(t)
	if _, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(partitioned)}); !herald.IsCode(err, herald.CodeInvalid) {
		t.Fatalf("Validate without Internal: %v, want CodeInvalid", err)
	}
	c := validConfig(t, ch, partitioned)
	want := `{"partition":[{"key":"env","field":"environment","default":"none"},{"key":"org","field":"org.id","default":"__HIVE_DEFAULT_PARTITION__"}],"format":"jsonl","compression":"zstd","flush":{"max_bytes":67108864,"max_events":1000,"max_age":"1s"},"destination":{"type":"local","path":"logs"}}`
	if string(c) != want {
		t.Fatalf("canonical config:\n got %s\nwant %s", c, want)
	}
	for _, bad := range []struct{ config, field string }{
		{`{"destination":{"type":"local","path":"../etc"}}`, "destination.path"},
		{`{"destination":{"type":"local","path":"/etc"}}`, "destination.path"},
		{`{"destination":{"type":"ftp"}}`, "destination.type"},
		{`{"format":"csv","destination":{"type":"local"}}`, "format"},
		{`{"compression":"lz4","destination":{"type":"local"}}`, "compression"},
		{`{"flush":{"max_events":-1},"destination":{"type":"local"}}`, "flush.max_events"},
		{`{"flush":{"max_age":"2h"},"destination":{"type":"local"}}`, "flush.max_age"},
		{`{"partition":[{"key":"year"}],"destination":{"type":"local"}}`, "partition[0].key"},
		{`{"partition":[{"key":"Org"}],"destination":{"type":"local"}}`, "partition[0].key"},
		{`{"destination":{"type":"s3","bucket":"b"}}`, "destination.bucket"},
		{`{"destination":{"type":"s3","bucket":"logs","endpoint":"http://127.0.0.1:9000"}}`, "destination.endpoint"},
		{`{"destination":{"type":"s3","bucket":"logs","access_key_id":"a"}}`, "destination.secret_access_key"},
		{`{"nope":1,"destination":{"type":"local"}}`, "nope"},
	} {
		_, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(bad.config), Internal: true})
		e, ok := errors.AsType[*herald.Error](err)
		if !ok || e.Code != herald.CodeInvalid || e.Field != bad.field {
			t.Errorf("Validate(%s) = %v, want CodeInvalid on %s", bad.config, err, bad.field)
		}
	}
}

func TestSecretsWriteOnly(t *testing.T) {
	t.Parallel()
	ch := New(ChannelConfig{AllowPrivate: true}, nil, nil)
	c := validConfig(t, ch, `{"destination":{"type":"s3","bucket":"logs","endpoint":"http://127.0.0.1:9000","access_key_id":"AKIA1","secret_access_key":"s3cr3t"}}`)
	if pub := string(ch.Public(c)); strings.Contains(pub, "s3cr3t") || strings.Contains(pub, "AKIA1") {
		t.Fatalf("Public shows credentials: %s", pub)
	}
	// An update without credentials keeps them.
	next, err := ch.Validate(t.Context(), channel.ValidateParams{Config: ch.Public(c), Previous: c, Internal: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(next), "s3cr3t") {
		t.Fatalf("update dropped the stored credentials: %s", next)
	}
}

func TestWriteAndQuery(t *testing.T) {
	t.Parallel()
	ch, dir := newChannel(t)
	config := validConfig(t, ch, partitioned)
	s := open(t, ch, config)
	late := t0.Add(-2 * time.Hour) // an event of an earlier hour, in the same batch
	allDelivered(t, deliver(t, s,
		ev("logs.app", 1, t0, `{"environment":"prod","org":{"id":"acme"},"n":1}`),
		ev("logs.app", 2, t0.Add(time.Second), `{"environment":"prod","org":{"id":"globex"},"n":2}`),
		ev("logs.app", 3, late, `{"environment":"prod","org":{"id":"acme"},"n":3}`),
		ev("logs.audit", 1, t0.Add(2*time.Second), `{"org":{"id":"acme/eu"},"n":4}`),
	))
	for _, f := range []string{
		"logs/env=prod/org=acme/year=2026/month=12/day=07/hour=15/logs.app-00000000000000000001-00000000000000000001.jsonl.zst",
		"logs/env=prod/org=acme/year=2026/month=12/day=07/hour=13/logs.app-00000000000000000003-00000000000000000003.jsonl.zst",
		"logs/env=prod/org=globex/year=2026/month=12/day=07/hour=15/_manifest.json",
		"logs/env=none/org=acme%2Feu/year=2026/month=12/day=07/hour=15/logs.audit-00000000000000000001-00000000000000000001.jsonl.zst",
	} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	// No temporary file is left behind.
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if strings.HasSuffix(p, ".tmp") {
			t.Errorf("temporary file left: %s", p)
		}
		return err
	})

	hits, page := query(t, ch, config, Query{From: t0.Add(-3 * time.Hour), To: t0.Add(time.Hour)})
	if got, want := seqs(hits), "logs.app/3 logs.app/1 logs.app/2 logs.audit/1"; got != want {
		t.Fatalf("query: %s, want %s", got, want)
	}
	if page.Next != "" {
		t.Fatalf("Next = %q on the last page", page.Next)
	}
	if hits[3].Partition["org"] != "acme/eu" || hits[3].Partition["env"] != "none" {
		t.Fatalf("partition of the audit event: %v", hits[3].Partition)
	}
	if string(hits[0].Event.Payload) != `{"environment":"prod","org":{"id":"acme"},"n":3}` || hits[0].Event.ID != "ev3" {
		t.Fatalf("event read back: %+v", hits[0].Event)
	}

	// Pruning: one org, one hour reads one partition's one file.
	hits, page = query(t, ch, config, Query{From: t0.Truncate(time.Hour), To: t0.Truncate(time.Hour).Add(time.Hour), Partition: map[string]string{"env": "prod", "org": "acme"}})
	if got := seqs(hits); got != "logs.app/1" || page.Files != 1 || page.Partitions != 1 {
		t.Fatalf("pruned query: %s, %d files, %d partitions; want logs.app/1 from 1 file of 1 partition", got, page.Files, page.Partitions)
	}

	// Paging with the cursor, and a filter.
	var all []string
	cursor := ""
	for range 10 {
		hits, page = query(t, ch, config, Query{From: t0.Add(-3 * time.Hour), To: t0.Add(time.Hour), Limit: 1, Cursor: cursor})
		all = append(all, seqs(hits))
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	if got := strings.Join(all, " "); got != "logs.app/3 logs.app/1 logs.app/2 logs.audit/1" {
		t.Fatalf("pages: %s", got)
	}
}

func TestBatchWrittenAgainIsNotDoubled(t *testing.T) {
	t.Parallel()
	ch, _ := newChannel(t)
	config := validConfig(t, ch, `{"destination":{"type":"local"}}`)
	s := open(t, ch, config)
	batch := []*herald.Event{ev("a", 1, t0, `{}`), ev("a", 2, t0, `{}`), ev("a", 3, t0, `{}`)}
	allDelivered(t, deliver(t, s, batch...))
	// The cursor did not move (a crash): the same batch again keeps its
	// file name, and a batch cut differently after a restart leaves a
	// duplicate file, which the query drops.
	allDelivered(t, deliver(t, s, batch...))
	allDelivered(t, deliver(t, s, batch[1:]...))
	m, err := readManifest(t.Context(), s.objs, partitionPath(nil, nil, t0))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 2 {
		t.Fatalf("manifest lists %d files, want 2: %+v", len(m.Files), m.Files)
	}
	hits, _ := query(t, ch, config, Query{From: t0.Add(-time.Hour), To: t0.Add(time.Hour)})
	if got := seqs(hits); got != "a/1 a/2 a/3" {
		t.Fatalf("query: %s, want each event once", got)
	}
}

// failing fails the Put of keys that contain a string.
type failing struct {
	objects
	on string
}

func (f failing) Put(ctx context.Context, key string, data []byte) error {
	if strings.Contains(key, f.on) {
		return errors.New("disk full")
	}
	return f.objects.Put(ctx, key, data)
}

func TestCrashBeforeManifestRetries(t *testing.T) {
	t.Parallel()
	ch, _ := newChannel(t)
	config := validConfig(t, ch, `{"format":"jsonl","compression":"gzip","destination":{"type":"local"}}`)
	s := open(t, ch, config)
	good := s.objs
	s.objs = failing{objects: good, on: manifestName}
	batch := []*herald.Event{ev("a", 1, t0, `{}`), ev("a", 2, t0.Add(time.Hour), "not json")}
	for i, r := range deliver(t, s, batch...) {
		if r.Outcome != herald.Failed || r.Err == "" {
			t.Fatalf("result %d with the manifest unwritable: %+v, want Failed", i, r)
		}
	}
	hits, _ := query(t, ch, config, Query{From: t0.Add(-time.Hour), To: t0.Add(2 * time.Hour)})
	if len(hits) != 0 {
		t.Fatalf("a file no manifest lists is visible to queries: %s", seqs(hits))
	}
	s.objs = good
	allDelivered(t, deliver(t, s, batch...))
	hits, _ = query(t, ch, config, Query{From: t0.Add(-time.Hour), To: t0.Add(2 * time.Hour)})
	if got := seqs(hits); got != "a/1 a/2" {
		t.Fatalf("after the retry: %s", got)
	}
	if p := string(hits[1].Event.Payload); p != "not json" {
		t.Fatalf("binary payload read back as %q", p)
	}
}

func TestParquetRoundTrip(t *testing.T) {
	t.Parallel()
	ch, dir := newChannel(t)
	config := validConfig(t, ch, `{"format":"parquet","partition":[{"key":"org"}],"destination":{"type":"local"}}`)
	s := open(t, ch, config)
	e := ev("a", 7, t0.Add(123456789*time.Nanosecond), `{"org":"acme","x":[1,2]}`)
	e.Headers, e.Key, e.Type = map[string]string{"h": "v"}, "k1", "log.line"
	allDelivered(t, deliver(t, s, e, ev("a", 8, t0, "\x00\x01")))
	matches, _ := filepath.Glob(filepath.Join(dir, "org=acme", "*", "*", "*", "*", "*.parquet"))
	if len(matches) != 1 {
		t.Fatalf("parquet files: %v", matches)
	}
	hits, _ := query(t, ch, config, Query{From: t0.Add(-time.Hour), To: t0.Add(time.Hour)})
	if got := seqs(hits); got != "a/8 a/7" {
		t.Fatalf("query: %s", got)
	}
	got := hits[1].Event
	if !got.Time.Equal(e.Time) || got.Headers["h"] != "v" || got.Key != "k1" || got.Type != "log.line" || string(got.Payload) != `{"org":"acme","x":[1,2]}` {
		t.Fatalf("read back %+v, want %+v", got, e)
	}
	if string(hits[0].Event.Payload) != "\x00\x01" {
		t.Fatalf("binary payload read back as %q", hits[0].Event.Payload)
	}
}

func TestPartitionValues(t *testing.T) {
	t.Parallel()
	keys := []PartitionKey{{Key: "org", Field: "org.id", Default: "none"}, {Key: "n", Field: "n", Default: "d"}, {Key: "b", Field: "a.b.c", Default: "d"}, {Key: "s", Field: "s", Default: "d"}}
	for _, c := range []struct{ payload, ct, want string }{
		{`{"org":{"id":"acme"},"n":12.50,"a":{"b":{"c":true}},"s":"x\/y"}`, "application/json", "acme 12.50 true x/y"},
		{`{"org":{"id":7},"n":-1e3,"a":{"b":{"c":false}},"s":null}`, "", "7 -1e3 false d"},
		{`{"org":"acme","n":[1],"a":{"b":1},"s":{}}`, "application/json", "none d d d"},
		{`[1,2]`, "application/json", "none d d d"},
		{`{"org":{"id":"acme"}}`, "text/plain", "none d d d"},
		{`not json`, "application/json", "none d d d"},
	} {
		s := &sink{cfg: Config{Partition: keys}, paths: newFieldPaths(keys)}
		vals, _ := s.readPayload(&herald.Event{ContentType: c.ct, Payload: []byte(c.payload)})
		got := strings.Join(vals, " ")
		if got != c.want {
			t.Errorf("%s (%s): %q, want %q", c.payload, c.ct, got, c.want)
		}
	}
}

func BenchmarkPartitionValues(b *testing.B) {
	keys := []PartitionKey{{Key: "env", Field: "environment"}, {Key: "org", Field: "organization.id"}, {Key: "type", Field: "log_type"}}
	ev := &herald.Event{ContentType: "application/json", Payload: []byte(`{"environment":"prod","organization":{"id":"org-042","name":"Acme Corporation"},"log_type":"access","status":200,"path":"/api/v1/items/123456","latency_ms":17,"user_agent":"Mozilla/5.0 (X11; Linux x86_64)","tags":["a","b","c"]}`)}
	s := &sink{cfg: Config{Partition: keys}, paths: newFieldPaths(keys)}
	for b.Loop() {
		s.readPayload(ev)
	}
}

// TestFirstPageReadsWhatItNeeds writes one partition-hour in many batches
// (so many files), with late events that land in the first batch's
// minutes and a batch written twice, and checks that every page, walked
// with the cursor, returns the hour in (time, topic, seq) order with each
// event once (the late events' files are read before the events after
// them go out); and that without late events a first page reads one file
// of five.
func TestFirstPageReadsWhatItNeeds(t *testing.T) {
	t.Parallel()
	ch, _ := newChannel(t)
	config := validConfig(t, ch, `{"format":"parquet","destination":{"type":"local"}}`)
	s := open(t, ch, config)
	h := t0.Truncate(time.Hour)
	var want []string
	seq := int64(0)
	for b := range 10 {
		var batch []*herald.Event
		for i := range 10 {
			seq++
			at := h.Add(time.Duration(b*10+i) * 30 * time.Second)
			if b > 0 && i == 9 {
				at = h.Add(time.Duration(b) * time.Second) // late: among the first batch's minutes
			}
			batch = append(batch, ev("logs.app", seq, at, fmt.Sprintf(`{"n":%d}`, seq)))
		}
		allDelivered(t, deliver(t, s, batch...))
		if b == 4 {
			allDelivered(t, deliver(t, s, batch[3:]...)) // written again, cut elsewhere
		}
	}
	hits, _ := query(t, ch, config, Query{From: h, To: h.Add(time.Hour), Limit: 1000})
	for _, x := range hits {
		want = append(want, fmt.Sprintf("%s/%d", x.Event.Time.Format(time.TimeOnly), x.Event.Seq))
	}
	if len(want) != 100 {
		t.Fatalf("the hour holds %d events, want 100 (each once)", len(want))
	}
	for i := 1; i < len(hits); i++ {
		if hits[i].Event.Time.Before(hits[i-1].Event.Time) {
			t.Fatalf("out of order at %d: %s", i, strings.Join(want, " "))
		}
	}
	// Pages of 7, walked with the cursor, give the hour once in order.
	var got []string
	cursor := ""
	for range 30 {
		hits, page := query(t, ch, config, Query{From: h, To: h.Add(time.Hour), Limit: 7, Cursor: cursor})
		for _, x := range hits {
			got = append(got, fmt.Sprintf("%s/%d", x.Event.Time.Format(time.TimeOnly), x.Event.Seq))
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("pages of 7:\n got %s\nwant %s", strings.Join(got, " "), strings.Join(want, " "))
	}

	// Without late events a first page reads one file.
	ch2, _ := newChannel(t)
	s2 := open(t, ch2, config)
	for b := range 5 {
		var batch []*herald.Event
		for i := range 10 {
			batch = append(batch, ev("logs.app", int64(b*10+i+1), h.Add(time.Duration(b*10+i)*time.Minute/2), `{}`))
		}
		allDelivered(t, deliver(t, s2, batch...))
	}
	if hits, page := query(t, ch2, config, Query{From: h, To: h.Add(time.Hour), Limit: 5}); len(hits) != 5 || page.Files != 1 {
		t.Fatalf("first page: %d events from %d files; want 5 from 1", len(hits), page.Files)
	}
}
