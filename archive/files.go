package archive

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"

	"github.com/heraldhq/herald"
)

// Record is one archived event as a line of a JSON Lines file: the
// event's metadata and its payload, inline under "data" when it is JSON
// (by content type and bytes) and as standard base64 under "data_base64"
// otherwise, as the events API shows events.
type Record struct {
	ID             string            `json:"id"`
	Topic          string            `json:"topic"`
	Seq            int64             `json:"seq"`
	Type           string            `json:"type,omitempty"`
	Key            string            `json:"key,omitempty"`
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	ContentType    string            `json:"content_type"`
	Headers        map[string]string `json:"headers,omitempty"`
	Time           time.Time         `json:"time"`
	Data           json.RawMessage   `json:"data,omitempty"`
	DataBase64     *string           `json:"data_base64,omitempty"`
}

// toRecord renders an event as a record; inline says its payload is
// JSON to keep as it is (see readPayload).
func toRecord(ev *herald.Event, inline bool) Record {
	r := Record{
		ID: ev.ID, Topic: ev.Topic, Seq: ev.Seq, Type: ev.Type, Key: ev.Key, IdempotencyKey: ev.IdempotencyKey,
		ContentType: ev.ContentType, Headers: ev.Headers, Time: ev.Time.UTC(),
	}
	if inline {
		r.Data = ev.Payload
	} else {
		b := base64.StdEncoding.EncodeToString(ev.Payload)
		r.DataBase64 = &b
	}
	return r
}

// Event returns the event the record holds. Inline JSON comes back
// compacted (its meaning kept, not its whitespace).
func (r *Record) Event() (*herald.Event, error) {
	ev := &herald.Event{
		ID: r.ID, Topic: r.Topic, Seq: r.Seq, Type: r.Type, Key: r.Key, IdempotencyKey: r.IdempotencyKey,
		ContentType: r.ContentType, Headers: r.Headers, Time: r.Time,
	}
	switch {
	case r.DataBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*r.DataBase64)
		if err != nil {
			return nil, fmt.Errorf("record %s/%d: data_base64: %w", r.Topic, r.Seq, err)
		}
		ev.Payload = b
	default:
		ev.Payload = []byte(r.Data)
	}
	return ev, nil
}

// isJSON reports whether a content type is JSON ("application/json", any
// "+json" type).
func isJSON(ct string) bool {
	if ct == "application/json" {
		return true // most payloads: no need to parse it
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// extension is the file name ending of the config's files.
func extension(c Config) string {
	switch {
	case c.Format == FormatParquet:
		return ".parquet"
	case c.Compression == CompressionGzip:
		return ".jsonl.gz"
	}
	return ".jsonl.zst"
}

// encode writes the records as one file of the config's format; pt and
// payloads are the payload columns of Parquet files (see encodeParquet).
func encode(c Config, recs []Record, pt *colType, payloads []any) ([]byte, error) {
	if c.Format == FormatParquet {
		return encodeParquet(recs, pt, payloads)
	}
	var buf bytes.Buffer
	var w io.WriteCloser
	if c.Compression == CompressionGzip {
		zw := gzipWriters.Get().(*gzip.Writer)
		defer gzipWriters.Put(zw)
		zw.Reset(&buf)
		w = zw
	} else {
		zw := zstdWriters.Get().(*zstd.Encoder)
		defer zstdWriters.Put(zw)
		zw.Reset(&buf)
		w = zw
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for i := range recs {
		if err := enc.Encode(&recs[i]); err != nil {
			return nil, fmt.Errorf("encode %s/%d: %w", recs[i].Topic, recs[i].Seq, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Compressors are reused: a new zstd encoder allocates and clears
// megabytes of tables, more than compressing a file of a few thousand
// events costs (docs/benchmarks.md). An encoder is Reset before each use,
// which also clears a failed write's state. An idle one keeps its last
// file's buffer until it is reused or the GC empties the pool.
var (
	zstdWriters = sync.Pool{New: func() any {
		zw, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		if err != nil {
			panic(err) // only bad options fail, and these are fixed
		}
		return zw
	}}
	gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}
)

// decode reads the records of a file, by its name's ending.
func decode(name string, data []byte) ([]Record, error) {
	var r io.Reader
	switch {
	case strings.HasSuffix(name, ".parquet"):
		return decodeParquet(data)
	case strings.HasSuffix(name, ".jsonl.gz"):
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		r = zr
	case strings.HasSuffix(name, ".jsonl.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, fmt.Errorf("%s: not an archive file", name)
	}
	dec := json.NewDecoder(r)
	var out []Record
	for {
		var rec Record
		err := dec.Decode(&rec)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: record %d: %w", name, len(out)+1, err)
		}
		out = append(out, rec)
	}
}

// readPayload reads an event's payload once: the value of each
// partition key (from the payload when it is JSON, or has no content
// type, and the field holds a string, number or bool; the key's default
// otherwise), and whether the payload is JSON (by content type, UTF-8
// and syntax) to keep inline in data.
func (s *sink) readPayload(ev *herald.Event) (vals []string, inline bool) {
	typed := isJSON(ev.ContentType)
	if typed || len(s.paths) > 0 && ev.ContentType == "" {
		var valid bool
		vals, valid = scanPayload(ev.Payload, s.paths)
		inline = typed && valid && utf8.Valid(ev.Payload)
	} else {
		vals = make([]string, len(s.paths))
	}
	for i, k := range s.cfg.Partition {
		if len(vals[i]) > maxPartitionValueLen {
			vals[i] = vals[i][:maxPartitionValueLen]
		}
		if vals[i] == "" {
			vals[i] = k.Default
		}
	}
	return vals, inline
}

// escapeValue makes a partition value safe as a folder name the way Hive
// does: every byte but letters, digits, '_', '-' and '.' (not first)
// becomes %XX.
func escapeValue(s string) string { return string(appendEscaped(nil, s)) }

func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' && i > 0 {
			b = append(b, c)
		} else {
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
	}
	return b
}

// partitionPath is the folder of the partition: key=value/.../hour=HH/.
func partitionPath(keys []PartitionKey, vals []string, t time.Time) string {
	return string(appendPartitionPath(nil, keys, vals, t))
}

func appendPartitionPath(b []byte, keys []PartitionKey, vals []string, t time.Time) []byte {
	for i, k := range keys {
		b = append(b, k.Key...)
		b = append(b, '=')
		b = appendEscaped(b, vals[i])
		b = append(b, '/')
	}
	t = t.UTC()
	y, m, d := t.Date()
	b = append(b, "year="...)
	b = appendPadded(b, y, 4)
	b = append(b, "/month="...)
	b = appendPadded(b, int(m), 2)
	b = append(b, "/day="...)
	b = appendPadded(b, d, 2)
	b = append(b, "/hour="...)
	b = appendPadded(b, t.Hour(), 2)
	return append(b, '/')
}

// appendPadded appends n in decimal, zero-padded to width digits (as
// %0*d: a negative year keeps its sign).
func appendPadded(b []byte, n, width int) []byte {
	if n < 0 {
		b = append(b, '-')
		n = -n
		width--
	}
	d := strconv.Itoa(n)
	for range width - len(d) {
		b = append(b, '0')
	}
	return append(b, d...)
}

// partitionBuilder builds the partition folders of one batch, each folder
// name allocated once however many events it holds.
type partitionBuilder struct {
	buf  []byte
	seen map[string]string
}

func (pb *partitionBuilder) path(keys []PartitionKey, vals []string, t time.Time) string {
	pb.buf = appendPartitionPath(pb.buf[:0], keys, vals, t)
	if d, ok := pb.seen[string(pb.buf)]; ok {
		return d
	}
	if pb.seen == nil {
		pb.seen = map[string]string{}
	}
	d := string(pb.buf)
	pb.seen[d] = d
	return d
}

// fileName names a file of one topic's events from first to last seq:
// the same events always get the same name, so a batch written again
// after a crash replaces its file rather than doubling it.
func fileName(topic string, first, last int64, ext string) string {
	return fmt.Sprintf("%s-%020d-%020d%s", topic, first, last, ext)
}

// manifestName is the index of a partition's files.
const manifestName = "_manifest.json"

// manifest lists a partition's files, so readers need no listing.
type manifest struct {
	Files []manifestFile `json:"files"`
}

// manifestFile is one file of a partition.
type manifestFile struct {
	Name     string    `json:"name"`
	Topic    string    `json:"topic"`
	FirstSeq int64     `json:"first_seq"`
	LastSeq  int64     `json:"last_seq"`
	Events   int       `json:"events"`
	Bytes    int       `json:"bytes"`
	MinTime  time.Time `json:"min_time"`
	MaxTime  time.Time `json:"max_time"`
	// SchemaVersion is the version of the topic's schema the file's
	// payload columns come from (Parquet only); 0: none.
	SchemaVersion int `json:"schema_version,omitempty"`
}
