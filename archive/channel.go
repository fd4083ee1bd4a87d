// Package archive keeps events for years in date-partitioned files that
// Herald and standard tools (DuckDB, Athena, Trino, Spark) read: JSON Lines
// compressed with zstd or gzip, or Parquet, in Hive-style folders
// (key=value/.../year=YYYY/month=MM/day=DD/hour=HH/) on the local disk or in
// S3-compatible object storage.
//
// An archive is a channel: the API writes an internal subscription of the
// "archive" channel for each archive, so the engine delivers to it as to
// any subscription, with its cursors, leases, retries and pause/resume. The
// engine hands the Sink batches (the flush policy is the batch limits);
// each batch becomes one file per partition and topic, written under a
// temporary name and made visible only when complete, and DeliverBatch
// reports the events delivered only then: the cursor moves after the file
// is durable. A crash before the cursor moved writes the batch again; the
// file name carries the topic and first and last seq, so the same batch
// replaces its file, and a batch cut differently after a restart leaves
// duplicates of at most one batch, which the query API removes (by topic
// and seq).
package archive

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/schema"
)

// Name is the channel's name.
const Name = "archive"

// ChannelConfig are the server's settings for archives.
type ChannelConfig struct {
	// Dir is the folder local destinations live in; "" refuses them.
	Dir string
	// AllowPrivate lets S3 endpoints be private, loopback or link-local
	// addresses.
	AllowPrivate bool
	// Schemas gives topics' schemas, from which Parquet files get typed
	// payload columns; nil: payloads are in data only.
	Schemas Schemas
}

// Schemas are the topics' schemas (schema.Registry).
type Schemas interface {
	// Get returns the topic's newest schema, or nil when it has none.
	Get(ctx context.Context, topic string) (*schema.Compiled, error)
}

// Channel writes archives. It is safe for concurrent use.
type Channel struct {
	cfg     ChannelConfig
	log     *slog.Logger
	metrics *metrics

	// types caches the payload column types of schemas, by topic and
	// version (a schema is immutable once stored).
	typesMu sync.Mutex
	types   map[schemaVersion]*colType
	// dial replaces the S3 client's dialer in tests.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

var _ channel.Channel = (*Channel)(nil)

// New returns the archive channel, registering its metrics on reg.
func New(cfg ChannelConfig, log *slog.Logger, reg prometheus.Registerer) *Channel {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Channel{cfg: cfg, log: log, metrics: newMetrics(reg)}
}

// Name is "archive".
func (ch *Channel) Name() string { return Name }

// Validate checks an archive's config. Only archives may use the channel:
// a config from /v1/subscriptions (not Internal) is refused.
func (ch *Channel) Validate(ctx context.Context, p channel.ValidateParams) (json.RawMessage, error) {
	if !p.Internal {
		return nil, herald.FieldErrorf("", "the archive channel belongs to archives: create one with PUT /v1/archives/{name}")
	}
	var c Config
	if err := channel.DecodeConfig(p.Config, &c); err != nil {
		return nil, err
	}
	var prev *Config
	if p.Previous != nil {
		pc, err := parseConfig(p.Previous)
		if err != nil {
			return nil, err
		}
		prev = &pc
	}
	if err := ch.validate(&c, prev); err != nil {
		return nil, err
	}
	return canonical(c)
}

// Public returns the config without its credentials.
func (ch *Channel) Public(config json.RawMessage) json.RawMessage {
	c, err := parseConfig(config)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	c.Destination.AccessKeyID, c.Destination.SecretAccessKey, c.Destination.SessionToken = "", "", ""
	out, err := canonical(c)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	return out
}

// Destination is the archive's own: writes to one archive never wait for
// another's.
func (ch *Channel) Destination(config json.RawMessage) string { return "" }

// Open returns the archive's writer.
func (ch *Channel) Open(ctx context.Context, sub *herald.Subscription) (channel.Sink, error) {
	c, err := parseConfig(sub.Config)
	if err != nil {
		return nil, err
	}
	objs, err := ch.objects(c)
	if err != nil {
		return nil, err
	}
	return &sink{ch: ch, sub: sub.ID, cfg: c, objs: objs, paths: newFieldPaths(c.Partition)}, nil
}

// objects returns where the config's files go.
func (ch *Channel) objects(c Config) (objects, error) {
	switch c.Destination.Type {
	case DestinationLocal:
		if ch.cfg.Dir == "" {
			return nil, fmt.Errorf("archive: this server has no archive directory (--archive-dir) for local destinations")
		}
		return &localObjects{root: filepath.Join(ch.cfg.Dir, filepath.FromSlash(c.Destination.Path))}, nil
	case DestinationS3:
		return newS3Objects(c.Destination, ch.cfg.AllowPrivate, ch.dial)
	}
	return nil, fmt.Errorf("archive: unknown destination type %q", c.Destination.Type)
}

// sink writes one archive's batches. Batches of one archive are written
// one at a time (its manifests are read, changed and written back).
type sink struct {
	ch   *Channel
	sub  string
	cfg  Config
	objs objects
	// paths are the partition keys' fields, split once.
	paths fieldPaths
	mu    sync.Mutex
}

var _ channel.Batcher = (*sink)(nil)

func (s *sink) BatchLimits() channel.BatchLimits {
	return channel.BatchLimits{MaxEvents: s.cfg.Flush.MaxEvents, MaxBytes: s.cfg.Flush.MaxBytes, Linger: s.cfg.Flush.MaxAgeDuration()}
}

func (s *sink) Deliver(ctx context.Context, ev *herald.Event, attempt int) herald.DeliveryResult {
	return s.DeliverBatch(ctx, []channel.Delivery{{Event: ev, Attempt: attempt}})[0]
}

func (s *sink) Close(ctx context.Context) error { return nil }

// fileGroup is the events of one batch that go into one file.
type fileGroup struct {
	dir     string // partition folder, ending in "/"
	topic   string
	indexes []int // into the batch
}

// DeliverBatch writes the batch: one file per partition and topic, then
// each touched partition's manifest. An event is Delivered once its file
// and the manifest that lists it are durable; the events of a file or
// manifest that could not be written are Failed (and retried).
func (s *sink) DeliverBatch(ctx context.Context, batch []channel.Delivery) []herald.DeliveryResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	results := make([]herald.DeliveryResult, len(batch))
	type groupKey struct{ dir, topic string }
	groups := map[groupKey]*fileGroup{}
	// Each payload is read once, for its partition values and whether
	// it is JSON to keep inline.
	inline := make([]bool, len(batch))
	var pb partitionBuilder
	for i, d := range batch {
		vals, isJSONData := s.readPayload(d.Event)
		inline[i] = isJSONData
		dir := pb.path(s.cfg.Partition, vals, d.Event.Time)
		k := groupKey{dir, d.Event.Topic}
		g := groups[k]
		if g == nil {
			g = &fileGroup{dir: dir, topic: d.Event.Topic}
			groups[k] = g
		}
		g.indexes = append(g.indexes, i)
	}
	keys := slices.SortedFunc(maps.Keys(groups), func(a, b groupKey) int {
		return cmp.Or(strings.Compare(a.dir, b.dir), strings.Compare(a.topic, b.topic))
	})
	fail := func(idx []int, err error) {
		for _, i := range idx {
			results[i] = herald.DeliveryResult{Outcome: herald.Failed, Err: "archive-write-failed", Detail: err.Error(), Latency: time.Since(start)}
		}
	}
	// Files are encoded and written in parallel (the writes of one batch
	// wait mostly on fsync), then each partition's manifest, also in
	// parallel: a manifest only after its partition's files.
	type groupDone struct {
		mf  manifestFile
		err error
	}
	done := make([]groupDone, len(keys))
	parallel(len(keys), func(n int) {
		g := groups[keys[n]]
		mf, err := s.writeFile(ctx, batch, inline, g)
		done[n] = groupDone{mf, err}
	})
	written := map[string][]manifestFile{} // partition -> new files
	waiting := map[string][]int{}          // partition -> events of its new files
	for n, k := range keys {
		g := groups[k]
		if err := done[n].err; err != nil {
			fail(g.indexes, err)
			continue
		}
		written[g.dir] = append(written[g.dir], done[n].mf)
		waiting[g.dir] = append(waiting[g.dir], g.indexes...)
	}
	dirs := slices.Sorted(maps.Keys(written))
	errs := make([]error, len(dirs))
	parallel(len(dirs), func(n int) { errs[n] = s.addToManifest(ctx, dirs[n], written[dirs[n]]) })
	for n, dir := range dirs {
		if err := errs[n]; err != nil {
			s.ch.metrics.failures.Inc()
			fail(waiting[dir], err)
			continue
		}
		for _, i := range waiting[dir] {
			results[i] = herald.DeliveryResult{Outcome: herald.Delivered, Latency: time.Since(start)}
		}
		s.ch.metrics.events.Add(float64(len(waiting[dir])))
	}
	s.ch.metrics.flush.Observe(time.Since(start).Seconds())
	return results
}

// schemaVersion names one version of a topic's schema.
type schemaVersion struct {
	topic   string
	version int
}

// maxCachedTypes bounds the column type cache; past it, it starts over.
const maxCachedTypes = 1000

// payloadType returns the payload columns of the topic's files (nil when
// the format is not Parquet, or the topic has no schema with fields) and
// the schema they come from.
func (ch *Channel) payloadType(ctx context.Context, c Config, topic string) (*colType, *schema.Compiled, error) {
	if c.Format != FormatParquet || ch.cfg.Schemas == nil {
		return nil, nil, nil
	}
	comp, err := ch.cfg.Schemas.Get(ctx, topic)
	if err != nil || comp == nil {
		return nil, nil, err
	}
	k := schemaVersion{topic, comp.Schema.Version}
	ch.typesMu.Lock()
	defer ch.typesMu.Unlock()
	t, ok := ch.types[k]
	if !ok {
		t = payloadType(comp)
		if ch.types == nil || len(ch.types) >= maxCachedTypes {
			ch.types = map[schemaVersion]*colType{}
		}
		ch.types[k] = t
	}
	if t == nil {
		return nil, nil, nil
	}
	return t, comp, nil
}

// maxParallelWrites bounds the files (or manifests) of one batch written
// at once.
const maxParallelWrites = 16

// parallel calls f(0) to f(n-1), at most maxParallelWrites at a time, and
// returns when all have.
func parallel(n int, f func(int)) {
	if n == 1 {
		f(0)
		return
	}
	sem := make(chan struct{}, maxParallelWrites)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

// writeFile encodes the group's events as one file and writes it; the
// returned entry is for the partition's manifest.
func (s *sink) writeFile(ctx context.Context, batch []channel.Delivery, inline []bool, g *fileGroup) (manifestFile, error) {
	recs := make([]Record, len(g.indexes))
	mf := manifestFile{Topic: g.topic, FirstSeq: batch[g.indexes[0]].Event.Seq, LastSeq: batch[g.indexes[0]].Event.Seq, Events: len(recs)}
	for j, i := range g.indexes {
		ev := batch[i].Event
		recs[j] = toRecord(ev, inline[i])
		mf.FirstSeq, mf.LastSeq = min(mf.FirstSeq, ev.Seq), max(mf.LastSeq, ev.Seq)
		if mf.MinTime.IsZero() || ev.Time.Before(mf.MinTime) {
			mf.MinTime = ev.Time.UTC()
		}
		if ev.Time.After(mf.MaxTime) {
			mf.MaxTime = ev.Time.UTC()
		}
	}
	pt, comp, err := s.ch.payloadType(ctx, s.cfg, g.topic)
	if err != nil {
		return mf, err
	}
	var payloads []any
	if pt != nil {
		payloads = make([]any, len(g.indexes))
		for j, i := range g.indexes {
			payloads[j] = pt.payloadValue(comp, batch[i].Event.Payload, batch[i].Event.ContentType)
		}
		mf.SchemaVersion = comp.Schema.Version
	}
	data, err := encode(s.cfg, recs, pt, payloads)
	if err != nil {
		return mf, err
	}
	mf.Name, mf.Bytes = fileName(g.topic, mf.FirstSeq, mf.LastSeq, extension(s.cfg)), len(data)
	if err := s.objs.Put(ctx, g.dir+mf.Name, data); err != nil {
		s.ch.metrics.failures.Inc()
		return mf, fmt.Errorf("write %s: %w", path.Join(s.objs.Where(), g.dir, mf.Name), err)
	}
	s.ch.metrics.files.Inc()
	s.ch.metrics.bytes.Add(float64(len(data)))
	return mf, nil
}

// addToManifest lists the files in the partition's manifest, replacing
// entries of the same name (a batch written again).
func (s *sink) addToManifest(ctx context.Context, dir string, files []manifestFile) error {
	m, err := readManifest(ctx, s.objs, dir)
	if err != nil {
		return err
	}
	for _, f := range files {
		i := slices.IndexFunc(m.Files, func(x manifestFile) bool { return x.Name == f.Name })
		if i >= 0 {
			m.Files[i] = f
		} else {
			m.Files = append(m.Files, f)
		}
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := s.objs.Put(ctx, dir+manifestName, data); err != nil {
		return fmt.Errorf("write manifest %s: %w", path.Join(s.objs.Where(), dir, manifestName), err)
	}
	return nil
}

// readManifest returns a partition's manifest; an empty one when there is
// none yet.
func readManifest(ctx context.Context, objs objects, dir string) (manifest, error) {
	var m manifest
	data, err := objs.Get(ctx, dir+manifestName)
	if isNotExist(err) {
		return m, nil
	}
	if err != nil {
		return m, fmt.Errorf("read manifest %s: %w", path.Join(objs.Where(), dir, manifestName), err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("read manifest %s: %w", path.Join(objs.Where(), dir, manifestName), err)
	}
	return m, nil
}

// trimSlash is a prefix without its slashes at either end.
func trimSlash(s string) string { return strings.Trim(s, "/") }

// metrics are the archive writer's.
type metrics struct {
	files, bytes, events, failures prometheus.Counter
	flush                          prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		files:    prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_archive_files_written_total", Help: "Archive files written and made visible."}),
		bytes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_archive_bytes_written_total", Help: "Bytes of archive files written."}),
		events:   prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_archive_events_written_total", Help: "Events written to archives (their files and manifests durable)."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_archive_write_failures_total", Help: "Archive files or manifests that could not be written (their events are retried)."}),
		flush:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "herald_archive_flush_seconds", Help: "Time to write one batch of an archive.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
	}
	if reg != nil {
		m.files = register(reg, m.files)
		m.bytes = register(reg, m.bytes)
		m.events = register(reg, m.events)
		m.failures = register(reg, m.failures)
		m.flush = register(reg, m.flush)
	}
	return m
}

// register registers c, or returns the collector registered under its
// name already (a second channel on the same registry shares it).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
