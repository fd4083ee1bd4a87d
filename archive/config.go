package archive

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Formats and compressions of archive files.
const (
	FormatJSONL   = "jsonl"
	FormatParquet = "parquet"

	CompressionZstd = "zstd"
	CompressionGzip = "gzip"
)

// Destination types.
const (
	DestinationLocal = "local"
	DestinationS3    = "s3"
)

// Flush policy defaults and bounds. A batch is one file per partition and
// topic; the engine holds a batch's events in memory until it is written,
// so the bounds keep that memory bounded.
const (
	DefaultMaxBytes  = 64 << 20
	DefaultMaxEvents = 100_000
	DefaultMaxAge    = 5 * time.Minute
	MaxMaxBytes      = 256 << 20
	MaxMaxEvents     = 1_000_000
	MinMaxAge        = 100 * time.Millisecond
	MaxMaxAge        = time.Hour
	MaxPartitionKeys = 8
	// DefaultPartitionValue is the value of a partition key whose field
	// is missing from an event and which names no default: Hive's own.
	DefaultPartitionValue = "__HIVE_DEFAULT_PARTITION__"
	// maxPartitionValueLen bounds a value taken from a payload; a longer
	// one is cut (a folder name has its limits).
	maxPartitionValueLen = 128
)

// reservedKeys are the partition keys Herald adds itself.
var reservedKeys = map[string]bool{"year": true, "month": true, "day": true, "hour": true}

// Config is the archive channel's config: how and where an archive
// writes. It is the "archive" subscription's config, stored as canonical
// JSON; the API builds it from PUT /v1/archives/{name}.
type Config struct {
	// Partition are the keys of the Hive-style folders, in order, before
	// year, month, day and hour, which Herald always adds (UTC, from the
	// event's time).
	Partition   []PartitionKey `json:"partition"`
	Format      string         `json:"format"`                // jsonl (default) or parquet
	Compression string         `json:"compression,omitempty"` // jsonl: zstd (default) or gzip
	Flush       Flush          `json:"flush"`
	Destination Destination    `json:"destination"`
}

// PartitionKey is one folder level: key=value, the value taken from the
// payload field (a dotted path into a JSON object payload), or Default.
type PartitionKey struct {
	Key     string `json:"key"`
	Field   string `json:"field"`
	Default string `json:"default"`
}

// Flush is when a batch is written: whichever bound is reached first.
type Flush struct {
	MaxBytes  int    `json:"max_bytes"`
	MaxEvents int    `json:"max_events"`
	MaxAge    string `json:"max_age"`
}

// Destination is where the files go.
type Destination struct {
	Type string `json:"type"` // local or s3
	// Path is, for local, a folder under the server's archive directory;
	// for s3, a key prefix in the bucket. Optional.
	Path string `json:"path,omitempty"`

	Bucket   string `json:"bucket,omitempty"`
	Endpoint string `json:"endpoint,omitempty"` // https://host[:port]; empty = AWS
	Region   string `json:"region,omitempty"`
	// PathStyle addresses the bucket as endpoint/bucket rather than
	// bucket.endpoint (MinIO and most S3-compatible servers want it).
	PathStyle bool `json:"path_style,omitempty"`
	// Credentials are write-only: Public removes them.
	AccessKeyID     string `json:"access_key_id,omitempty"`
	SecretAccessKey string `json:"secret_access_key,omitempty"`
	SessionToken    string `json:"session_token,omitempty"`
}

// MaxAgeDuration is the flush policy's max age.
func (f Flush) MaxAgeDuration() time.Duration {
	d, _ := herald.ParseDuration(f.MaxAge)
	return d
}

// parseConfig reads a stored (canonical) config.
func parseConfig(raw json.RawMessage) (Config, error) {
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return Config{}, fmt.Errorf("archive config: %w", err)
	}
	return c, nil
}

// validate applies defaults and checks c; previous, when not nil, is the
// stored config, whose credentials c keeps when it leaves them out.
func (ch *Channel) validate(c *Config, previous *Config) error {
	if len(c.Partition) > MaxPartitionKeys {
		return herald.FieldErrorf("partition", "at most %d partition keys, got %d", MaxPartitionKeys, len(c.Partition))
	}
	seen := map[string]bool{}
	for i := range c.Partition {
		k := &c.Partition[i]
		f := fmt.Sprintf("partition[%d]", i)
		if !validKey(k.Key) {
			return herald.FieldErrorf(f+".key", "a partition key is 1 to 64 lower-case letters, digits and '_', starting with a letter; got %q", k.Key)
		}
		if reservedKeys[k.Key] {
			return herald.FieldErrorf(f+".key", "%q is added by Herald from the event time; choose another key", k.Key)
		}
		if seen[k.Key] {
			return herald.FieldErrorf(f+".key", "partition key %q is repeated", k.Key)
		}
		seen[k.Key] = true
		if k.Field == "" {
			k.Field = k.Key
		}
		if len(k.Field) > 256 || strings.Contains(k.Field, "..") || strings.HasPrefix(k.Field, ".") || strings.HasSuffix(k.Field, ".") {
			return herald.FieldErrorf(f+".field", "field is a dotted path into the payload such as organization.id; got %q", k.Field)
		}
		if k.Default == "" {
			k.Default = DefaultPartitionValue
		}
		if len(k.Default) > maxPartitionValueLen {
			return herald.FieldErrorf(f+".default", "default is at most %d bytes", maxPartitionValueLen)
		}
	}
	if c.Partition == nil {
		c.Partition = []PartitionKey{}
	}

	switch c.Format {
	case "", FormatJSONL:
		c.Format = FormatJSONL
		switch c.Compression {
		case "", CompressionZstd:
			c.Compression = CompressionZstd
		case CompressionGzip:
		default:
			return herald.FieldErrorf("compression", "compression is %q or %q, got %q", CompressionZstd, CompressionGzip, c.Compression)
		}
	case FormatParquet:
		if c.Compression != "" && c.Compression != CompressionZstd {
			return herald.FieldErrorf("compression", "Parquet files are compressed with zstd inside; leave compression out")
		}
		c.Compression = CompressionZstd
	default:
		return herald.FieldErrorf("format", "format is %q or %q, got %q", FormatJSONL, FormatParquet, c.Format)
	}

	if c.Flush.MaxBytes == 0 {
		c.Flush.MaxBytes = DefaultMaxBytes
	}
	if c.Flush.MaxBytes < 1024 || c.Flush.MaxBytes > MaxMaxBytes {
		return herald.FieldErrorf("flush.max_bytes", "flush.max_bytes is between 1024 and %d, got %d", MaxMaxBytes, c.Flush.MaxBytes)
	}
	if c.Flush.MaxEvents == 0 {
		c.Flush.MaxEvents = DefaultMaxEvents
	}
	if c.Flush.MaxEvents < 1 || c.Flush.MaxEvents > MaxMaxEvents {
		return herald.FieldErrorf("flush.max_events", "flush.max_events is between 1 and %d, got %d", MaxMaxEvents, c.Flush.MaxEvents)
	}
	age := DefaultMaxAge
	if c.Flush.MaxAge != "" {
		d, err := herald.ParseDuration(c.Flush.MaxAge)
		if err != nil || d < MinMaxAge || d > MaxMaxAge {
			return herald.FieldErrorf("flush.max_age", "flush.max_age is a duration between %s and %s, got %q", MinMaxAge, herald.FormatDuration(MaxMaxAge), c.Flush.MaxAge)
		}
		age = d
	}
	c.Flush.MaxAge = herald.FormatDuration(age)

	d := &c.Destination
	switch d.Type {
	case DestinationLocal:
		if d.Path != "" {
			clean := path.Clean(d.Path)
			if path.IsAbs(d.Path) || clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsAny(d.Path, "\\\x00") {
				return herald.FieldErrorf("destination.path", "a local destination's path is a folder inside the server's archive directory (--archive-dir), such as \"logs\"; got %q", d.Path)
			}
			d.Path = clean
		}
		if d.Bucket != "" || d.Endpoint != "" || d.Region != "" || d.AccessKeyID != "" || d.SecretAccessKey != "" || d.SessionToken != "" || d.PathStyle {
			return herald.FieldErrorf("destination", "bucket, endpoint, region, path_style and credentials are settings of s3 destinations")
		}
		if ch.cfg.Dir == "" {
			return herald.FieldErrorf("destination.type", "this server has no archive directory for local destinations (--archive-dir)")
		}
	case DestinationS3:
		if !validBucket(d.Bucket) {
			return herald.FieldErrorf("destination.bucket", "bucket is 3 to 63 lower-case letters, digits, '.' and '-', got %q", d.Bucket)
		}
		d.Path = strings.Trim(d.Path, "/")
		if d.Endpoint != "" {
			u, err := url.Parse(d.Endpoint)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
				return herald.FieldErrorf("destination.endpoint", "endpoint is an http(s)://host[:port] URL with no path, got %q", d.Endpoint)
			}
			if err := channel.CheckHost(u.Hostname(), ch.cfg.AllowPrivate, "destination.endpoint", "the endpoint's host"); err != nil {
				return err
			}
			d.Endpoint = u.Scheme + "://" + u.Host
		}
		if previous != nil && previous.Destination.Type == DestinationS3 && d.AccessKeyID == "" && d.SecretAccessKey == "" && d.SessionToken == "" &&
			previous.Destination.Endpoint == d.Endpoint && previous.Destination.Bucket == d.Bucket {
			// Credentials are write-only: an update that leaves them out
			// keeps the stored ones for the same bucket.
			d.AccessKeyID, d.SecretAccessKey, d.SessionToken = previous.Destination.AccessKeyID, previous.Destination.SecretAccessKey, previous.Destination.SessionToken
		}
		if (d.AccessKeyID == "") != (d.SecretAccessKey == "") {
			return herald.FieldErrorf("destination.secret_access_key", "give access_key_id and secret_access_key together, or neither")
		}
	case "":
		return herald.FieldErrorf("destination.type", "destination.type is %q or %q", DestinationLocal, DestinationS3)
	default:
		return herald.FieldErrorf("destination.type", "destination.type is %q or %q, got %q", DestinationLocal, DestinationS3, d.Type)
	}
	return nil
}

func validKey(k string) bool {
	if k == "" || len(k) > 64 || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// canonical encodes a config.
func canonical(c Config) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode archive config: %w", err)
	}
	return json.RawMessage(bytes.TrimSpace(buf.Bytes())), nil
}
