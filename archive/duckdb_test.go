//go:build duckdb

// The DuckDB parity test needs cgo and links DuckDB (slow to build), so it
// is behind the duckdb build tag; .ci/run runs it: go test -tags duckdb
// -run DuckDB ./archive/.

package archive

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/schema"
)

// TestDuckDBParity writes a Parquet archive with the real writer (late
// events, a non-JSON payload, headers, a batch written twice cut
// differently, as after a crash) and checks that DuckDB, reading the files
// as docs/archive.md tells users to, returns the same rows as Herald's
// query (the engine behind GET /v1/archives/{name}/events) for one
// organization and one hour.
func TestDuckDBParity(t *testing.T) {
	ch, dir := newChannel(t)
	config := validConfig(t, ch, `{"partition":[{"key":"org","field":"org.id","default":"none"}],"format":"parquet","destination":{"type":"local","path":"logs"}}`)
	s := open(t, ch, config)
	h0 := time.Date(2026, 12, 7, 14, 0, 0, 0, time.UTC)
	var evs []*herald.Event
	for i := range 60 {
		org := []string{"acme", "globex", "acme", "initech"}[i%4]
		at := h0.Add(time.Duration(i) * 3 * time.Minute) // 14:00 to 16:57
		if i%7 == 6 {
			at = at.Add(-70 * time.Minute) // late: its own (earlier) hour
		}
		e := ev("logs.app", int64(i+1), at, fmt.Sprintf(`{"org":{"id":%q},"n":%d,"msg":"line \"%d\""}`, org, i, i))
		e.ID = fmt.Sprintf("01JEV%05d", i)
		e.Type, e.Key = "log.line", org
		if i%5 == 0 {
			e.Headers = map[string]string{"trace": fmt.Sprintf("t-%d", i)}
		}
		evs = append(evs, e)
	}
	bin := ev("logs.bin", 1, h0.Add(75*time.Minute), "")
	bin.ContentType, bin.Payload, bin.ID = "application/octet-stream", []byte{0, 1, 2, 0xff}, "01JEVBIN"
	evs = append(evs, bin)
	// Written in batches of 25; the second batch is written again cut
	// at another place, as after a crash before its cursor moved.
	allDelivered(t, deliver(t, s, evs[:25]...))
	allDelivered(t, deliver(t, s, evs[25:50]...))
	allDelivered(t, deliver(t, s, evs[30:]...))

	from, to := h0.Add(time.Hour), h0.Add(2*time.Hour) // 15:00 to 16:00
	var want []string
	q := Query{From: from, To: to, Partition: map[string]string{"org": "acme"}, Limit: 1000}
	hits, _ := query(t, ch, config, q)
	for _, h := range hits {
		want = append(want, row(h.Event.ID, h.Event.Topic, h.Event.Seq, h.Event.Time, h.Event.Type, h.Event.Key, h.Event.ContentType, h.Event.Headers, h.Event.Payload, h.Partition["org"]))
	}
	if len(want) < 5 {
		t.Fatalf("Herald's query found %d events; the test wants more to compare", len(want))
	}

	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The query of docs/archive.md: the files under the archive's folder,
	// Hive partitions as columns, each (topic, seq) once.
	glob := filepath.Join(dir, "logs") + "/**/*.parquet"
	rows, err := db.QueryContext(t.Context(), `
		SELECT id, topic, seq, epoch_ns(time), type, key, content_type, headers, data, data_base64, org
		FROM read_parquet(?, hive_partitioning = true)
		WHERE org = 'acme' AND time >= ? AND time < ?
		QUALIFY row_number() OVER (PARTITION BY topic, seq) = 1
		ORDER BY time, topic, seq`, glob, from.Format(duckTime), to.Format(duckTime))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var id, topic, typ, key, ct, headers, data, data64, org string
		var seq, ns int64
		if err := rows.Scan(&id, &topic, &seq, &ns, &typ, &key, &ct, &headers, &data, &data64, &org); err != nil {
			t.Fatal(err)
		}
		var hs map[string]string
		if headers != "" {
			if err := json.Unmarshal([]byte(headers), &hs); err != nil {
				t.Fatalf("headers of %s/%d: %v", topic, seq, err)
			}
		}
		r := Record{Data: json.RawMessage(data)}
		if data == "" {
			r.Data, r.DataBase64 = nil, &data64
		}
		e, err := r.Event()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, row(id, topic, seq, time.Unix(0, ns), typ, key, ct, hs, e.Payload, org))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("DuckDB's rows differ from Herald's query:\nDuckDB:\n%s\nHerald:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The session of docs/archive.md, as pasted, in the archive directory.
	doc, err := os.ReadFile("../docs/archive.md")
	if err != nil {
		t.Fatal(err)
	}
	_, session, ok := strings.Cut(string(doc), "<!-- duckdb-session")
	if !ok {
		t.Fatal("docs/archive.md has no duckdb-session block")
	}
	_, session, _ = strings.Cut(session, "```sql\n")
	session, _, _ = strings.Cut(session, "```")
	session = strings.ReplaceAll(session, "'logs/", "'"+filepath.Join(dir, "logs")+"/")
	stmts := strings.Split(strings.TrimSpace(session), ";\n")
	if len(stmts) != 3 {
		t.Fatalf("the docs' session has %d statements, want 3:\n%s", len(stmts), session)
	}
	if _, err := db.ExecContext(t.Context(), stmts[0]); err != nil {
		t.Fatalf("%s: %v", stmts[0], err)
	}
	// DESCRIBE shows the columns the docs' table lists.
	desc, err := db.QueryContext(t.Context(), stmts[1])
	if err != nil {
		t.Fatalf("%s: %v", stmts[1], err)
	}
	var cols []string
	for desc.Next() {
		var name, typ string
		var null, key, def, extra sql.NullString
		if err := desc.Scan(&name, &typ, &null, &key, &def, &extra); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, name+" "+typ)
	}
	desc.Close()
	wantCols := "id VARCHAR, topic VARCHAR, seq BIGINT, time TIMESTAMPTZ_NS, type VARCHAR, key VARCHAR, idempotency_key VARCHAR, content_type VARCHAR, headers VARCHAR, data VARCHAR, data_base64 VARCHAR, day INTEGER, hour INTEGER, month INTEGER, org VARCHAR, year INTEGER"
	if strings.Join(cols, ", ") != wantCols {
		t.Fatalf("DESCRIBE logs:\n got %s\nwant %s", strings.Join(cols, ", "), wantCols)
	}
	sel, err := db.QueryContext(t.Context(), strings.Replace(stmts[2], "SELECT time,", "SELECT epoch_ns(time),", 1))
	if err != nil {
		t.Fatalf("%s: %v", stmts[2], err)
	}
	var fromDocs []string
	for sel.Next() {
		var ns, seq int64
		var topic, typ string
		var msg sql.NullString
		if err := sel.Scan(&ns, &topic, &seq, &typ, &msg); err != nil {
			t.Fatal(err)
		}
		fromDocs = append(fromDocs, fmt.Sprintf("%s/%d %s %s %s", topic, seq, time.Unix(0, ns).UTC().Format(time.RFC3339Nano), typ, msg.String))
	}
	sel.Close()
	var fromHerald []string
	for _, h := range hits {
		var p struct{ Msg string }
		_ = json.Unmarshal(h.Event.Payload, &p)
		fromHerald = append(fromHerald, fmt.Sprintf("%s/%d %s %s %s", h.Event.Topic, h.Event.Seq, h.Event.Time.UTC().Format(time.RFC3339Nano), h.Event.Type, p.Msg))
	}
	if strings.Join(fromDocs, "\n") != strings.Join(fromHerald, "\n") {
		t.Fatalf("the docs' session differs from Herald's query:\nDuckDB:\n%s\nHerald:\n%s", strings.Join(fromDocs, "\n"), strings.Join(fromHerald, "\n"))
	}

	// Every event once in all, and the binary payload back byte for byte.
	var n, distinct int
	if err := db.QueryRowContext(t.Context(), `SELECT count(*), count(DISTINCT (topic, seq)) FROM read_parquet(?, hive_partitioning = true)`, glob).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if distinct != len(evs) || n <= distinct {
		t.Fatalf("DuckDB sees %d rows, %d distinct; want %d distinct and the rewritten batch's duplicates", n, distinct, len(evs))
	}
	var b64 string
	if err := db.QueryRowContext(t.Context(), `SELECT data_base64 FROM read_parquet(?, hive_partitioning = true) WHERE topic = 'logs.bin'`, glob).Scan(&b64); err != nil || b64 != "AAEC/w==" {
		t.Fatalf("the binary payload in DuckDB: %q, %v", b64, err)
	}
}

// duckTime writes a time as DuckDB reads a TIMESTAMPTZ_NS literal (the
// time column); a TIMESTAMPTZ value would need a cast, and the Go driver
// cannot scan TIMESTAMPTZ_NS, so the test reads epoch_ns(time).
const duckTime = "2006-01-02 15:04:05.999999999-07"

// row renders one event for comparison; JSON payloads compacted.
func row(id, topic string, seq int64, at time.Time, typ, key, ct string, headers map[string]string, payload []byte, org string) string {
	var compact bytes.Buffer
	if json.Compact(&compact, payload) == nil {
		payload = compact.Bytes()
	}
	hs, _ := json.Marshal(headers)
	return fmt.Sprintf("%s %s/%d %s %s %s %s %s %q org=%s", id, topic, seq, at.UTC().Format(time.RFC3339Nano), typ, key, ct, hs, payload, org)
}

// TestDuckDBSchemaColumns checks the payload columns of topics with a
// schema (a JSON Schema and a protobuf message) as DuckDB reads them: a
// STRUCT of typed fields beside the raw payload, the same values as the
// events, and files of topics with and without a schema read together.
func TestDuckDBSchemaColumns(t *testing.T) {
	dir := t.TempDir()
	schemas := typedSchemas(t)
	ch := New(ChannelConfig{Dir: dir, Schemas: schemas}, nil, nil)
	config := validConfig(t, ch, `{"format":"parquet","partition":[{"key":"org","field":"org.id","default":"none"}],"destination":{"type":"local","path":"orders"}}`)
	s := open(t, ch, config)
	allDelivered(t, deliver(t, s, typedEvents(t, schemas)...))
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	root := filepath.Join(dir, "orders")

	one := func(q string, args ...any) string {
		t.Helper()
		var v sql.NullString
		if err := db.QueryRowContext(t.Context(), q, args...).Scan(&v); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return v.String
	}
	// The typed columns, as DuckDB sees them.
	orders := root + "/**/orders-*.parquet"
	if got, want := one(`SELECT typeof(payload) FROM read_parquet(?) LIMIT 1`, orders),
		`STRUCT(amount DOUBLE, "at" TIMESTAMPTZ_NS, extra VARCHAR, lines STRUCT(qty BIGINT, sku VARCHAR)[], org STRUCT(id VARCHAR), paid BOOLEAN, status BIGINT, tags VARCHAR[])`; got != want {
		t.Errorf("orders payload type\n got %s\nwant %s", got, want)
	}
	if got, want := one(`SELECT string_agg(concat_ws(' ', seq, payload.status, payload.org.id, payload.amount, payload.paid, epoch_ns(payload.at),
			array_to_string(payload.tags, '+'), payload.lines[1].sku, payload.lines[2].qty IS NULL, payload.extra->>'$.k[1]'), ' | ' ORDER BY seq)
		FROM read_parquet(?)`, orders),
		"1 200 acme 12.5 true 1796655662500000000 a+b x1 true 2 | 2 404 acme true | 3 true"; got != want {
		t.Errorf("orders payload values\n got %s\nwant %s", got, want)
	}
	payments := root + "/**/payments-*.parquet"
	if got, want := one(`SELECT typeof(payload) FROM read_parquet(?) LIMIT 1`, payments),
		`STRUCT(id VARCHAR, cents BIGINT, state VARCHAR, "at" TIMESTAMPTZ_NS, "ref" BLOB, labels VARCHAR, lines STRUCT(sku VARCHAR, qty BIGINT)[])`; got != want {
		t.Errorf("payments payload type\n got %s\nwant %s", got, want)
	}
	if got, want := one(`SELECT concat_ws(' ', payload.id, payload.cents, payload.state, epoch_ns(payload."at"), hex(payload.ref), payload.labels->>'a', payload.lines[1].sku, payload.lines[1].qty)
		FROM read_parquet(?)`, payments), "p1 9007199254740993 SETTLED 1796655900000000000 000102 b z 3"; got != want {
		t.Errorf("payments payload values\n got %s\nwant %s", got, want)
	}
	// A second version of the orders schema adds a field: its files have
	// one more payload field, and union_by_name reads both versions.
	v2, err := schema.Compile(herald.Schema{Topic: "orders", Version: 2, Kind: herald.SchemaJSON,
		Definition: []byte(strings.Replace(ordersSchema, `"status": {"type": "integer"},`, `"status": {"type": "integer"}, "region": {"type": "string"},`, 1))})
	if err != nil {
		t.Fatal(err)
	}
	schemas["orders"] = v2
	allDelivered(t, deliver(t, s, ev("orders", 4, t0.Add(10*time.Minute), `{"org":{"id":"acme"},"status":201,"region":"eu"}`)))
	if got, want := one(`SELECT string_agg(concat_ws(' ', seq, payload.status, payload.region), ' | ' ORDER BY seq)
		FROM read_parquet(?, hive_partitioning = true, union_by_name = true)`, orders),
		"1 200 | 2 404 | 3 | 4 201 eu"; got != want {
		t.Errorf("orders v1 and v2\n got %s\nwant %s", got, want)
	}
	// The query of docs/archive.md, as pasted.
	doc, err := os.ReadFile("../docs/archive.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(doc), "<!-- duckdb-typed")
	if !ok {
		t.Fatal("docs/archive.md has no duckdb-typed block")
	}
	_, block, _ = strings.Cut(block, "```sql\n")
	block, _, _ = strings.Cut(block, "```")
	block = strings.ReplaceAll(block, "'orders/", "'"+root+"/")
	rows, err := db.QueryContext(t.Context(), block)
	if err != nil {
		t.Fatalf("%s: %v", block, err)
	}
	var got []string
	for rows.Next() {
		var org sql.NullString
		var status, n int64
		if err := rows.Scan(&org, &status, &n); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %d %d", org.String, status, n))
	}
	rows.Close()
	if strings.Join(got, " | ") != "acme 404 1" {
		t.Errorf("the docs' typed query: %q", got)
	}

	// Every topic at once, the event columns only.
	if got, want := one(`SELECT string_agg(concat_ws(' ', topic, seq, org), ' | ' ORDER BY topic, seq)
		FROM read_parquet(?, hive_partitioning = true)`, root+"/**/*.parquet"),
		"orders 1 acme | orders 2 acme | orders 3 none | orders 4 acme | payments 1 none | plain 1 acme"; got != want {
		t.Errorf("all topics\n got %s\nwant %s", got, want)
	}
}

// TestDuckDBTableDDL checks the Athena/Trino table definition (TableDDL,
// shown in docs/archive.md) against DuckDB's reading of files the writer
// wrote: the same data columns in order and the same partition columns,
// each DuckDB type the one the Hive type stands for, and the partition
// folders' values read as the integers the definition declares.
func TestDuckDBTableDDL(t *testing.T) {
	root, _ := writtenParquet(t)
	ch := New(ChannelConfig{Dir: t.TempDir()}, nil, nil)
	c, err := parseConfig(validConfig(t, ch, `{"format":"parquet","partition":[{"key":"env","field":"environment"},{"key":"org","field":"organization.id"},{"key":"log_type","field":"log_type"}],"destination":{"type":"local"}}`))
	if err != nil {
		t.Fatal(err)
	}
	data, partition := parseDDL(t, TableDDL("logs", "s3://bucket/logs/", c))
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	from := fmt.Sprintf(`read_parquet('%s/**/*.parquet', hive_partitioning = true,
		hive_types = {'year': INTEGER, 'month': INTEGER, 'day': INTEGER, 'hour': INTEGER})`, root)
	rows, err := db.QueryContext(t.Context(), `DESCRIBE SELECT * FROM `+from)
	if err != nil {
		t.Fatal(err)
	}
	hive := map[string]string{"VARCHAR": "string", "BIGINT": "bigint", "INTEGER": "int", "TIMESTAMP WITH TIME ZONE": "timestamp",
		"TIMESTAMPTZ_NS": "timestamp", "TIMESTAMP_NS": "timestamp", "TIMESTAMP": "timestamp", "BOOLEAN": "boolean", "DOUBLE": "double", "BLOB": "binary"}
	var got []ddlColumn
	for rows.Next() {
		var name, typ string
		var null, key, def, extra sql.NullString
		if err := rows.Scan(&name, &typ, &null, &key, &def, &extra); err != nil {
			t.Fatal(err)
		}
		ht, ok := hive[typ]
		if !ok {
			ht = "DuckDB " + typ
		}
		got = append(got, ddlColumn{name, ht})
	}
	rows.Close()
	if len(got) != len(data)+len(partition) {
		t.Fatalf("DuckDB reads %d columns %v; the DDL has %d and %d partition columns", len(got), got, len(data), len(partition))
	}
	for i, d := range data {
		if got[i] != d {
			t.Errorf("column %d: DuckDB reads %s %s, the DDL says %s %s", i+1, got[i].name, got[i].typ, d.name, d.typ)
		}
	}
	// DuckDB lists the partition columns by name.
	slices.SortFunc(partition, func(a, b ddlColumn) int { return strings.Compare(a.name, b.name) })
	if !slices.Equal(got[len(data):], partition) {
		t.Errorf("partition columns: DuckDB reads %v, the DDL says %v", got[len(data):], partition)
	}
	var at string
	if err := db.QueryRowContext(t.Context(), `SELECT DISTINCT format('{}-{}-{} {}h', year, month, day, hour) FROM `+from).Scan(&at); err != nil || at != "2026-12-7 15h" {
		t.Errorf("the date partitions as integers: %q, %v", at, err)
	}
}
