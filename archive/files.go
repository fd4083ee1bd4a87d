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

// toRecord renders an event as a record.
func toRecord(ev *herald.Event) Record {
	r := Record{
		ID: ev.ID, Topic: ev.Topic, Seq: ev.Seq, Type: ev.Type, Key: ev.Key, IdempotencyKey: ev.IdempotencyKey,
		ContentType: ev.ContentType, Headers: ev.Headers, Time: ev.Time.UTC(),
	}
	if isJSON(ev.ContentType) && len(ev.Payload) > 0 && utf8.Valid(ev.Payload) && json.Valid(ev.Payload) {
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
	var err error
	if c.Compression == CompressionGzip {
		w = gzip.NewWriter(&buf)
	} else if w, err = zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1)); err != nil {
		return nil, err
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

// partitionValues returns the value of each partition key for the event.
func partitionValues(keys []PartitionKey, ev *herald.Event) []string {
	vals := make([]string, len(keys))
	var doc map[string]any
	if len(keys) > 0 && (ev.ContentType == "" || isJSON(ev.ContentType)) {
		dec := json.NewDecoder(bytes.NewReader(ev.Payload))
		dec.UseNumber()
		_ = dec.Decode(&doc) // a payload that is no JSON object takes the defaults
	}
	for i, k := range keys {
		vals[i] = k.Default
		var v any = doc
		for part := range strings.SplitSeq(k.Field, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = m[part]
		}
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case json.Number:
			s = x.String()
		case bool:
			s = strconv.FormatBool(x)
		}
		if s != "" {
			if len(s) > maxPartitionValueLen {
				s = s[:maxPartitionValueLen]
			}
			vals[i] = s
		}
	}
	return vals
}

// escapeValue makes a partition value safe as a folder name the way Hive
// does: every byte but letters, digits, '_', '-' and '.' (not first)
// becomes %XX.
func escapeValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' && i > 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// partitionPath is the folder of the partition: key=value/.../hour=HH/.
func partitionPath(keys []PartitionKey, vals []string, t time.Time) string {
	var b strings.Builder
	for i, k := range keys {
		b.WriteString(k.Key + "=" + escapeValue(vals[i]) + "/")
	}
	t = t.UTC()
	fmt.Fprintf(&b, "year=%04d/month=%02d/day=%02d/hour=%02d/", t.Year(), int(t.Month()), t.Day(), t.Hour())
	return b.String()
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
