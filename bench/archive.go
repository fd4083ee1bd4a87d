package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/archive"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/client"
)

// ArchiveConfig configures RunArchive: how fast an archive writes and how
// long a query for one organization and one hour takes to its first page.
type ArchiveConfig struct {
	Server, Key string
	// Dir, when set, generates the archive straight into this folder with
	// Herald's archive writer (no server): Events events of one topic,
	// spread evenly over Hours hours and Orgs organizations, written in
	// batches of Batch (as the engine hands the writer a flushed batch),
	// then queried in-process with the code behind
	// GET /v1/archives/{name}/events. Without Dir the bench publishes
	// Events to a fresh topic of the server at Server, creates a Parquet
	// archive of it with "start": "earliest", times its drain, and
	// queries it over HTTP.
	Dir string
	// Events is how many events (default 200,000).
	Events int
	// Orgs and Hours shape the generated archive (default 100 and 24);
	// a running server's events all fall in the hour of the run.
	Orgs, Hours int
	// Batch is events per written batch (generating, default 100,000) or
	// per publish request (server, default 1000); Workers the publish
	// requests in flight (default 4).
	Batch, Workers int
	// Format is parquet (default) or jsonl; Compression zstd or gzip for
	// jsonl.
	Format, Compression string
	// Queries is how many first pages to time (default 50), each for one
	// organization and one hour chosen at random; Limit the page size
	// (default 100).
	Queries, Limit int
	// Timeout bounds the wait for the drain (default 10m).
	Timeout     time.Duration
	PID         int
	AllowRemote bool
	Keep        bool // leave the topic and archive in place (server)
	Progress    io.Writer
}

// ArchiveDefaults returns the defaults of ArchiveConfig.
func ArchiveDefaults() ArchiveConfig {
	return ArchiveConfig{Events: 200_000, Orgs: 100, Hours: 24, Workers: 4, Format: archive.FormatParquet, Queries: 50, Limit: 100, Timeout: 10 * time.Minute}
}

// ArchiveReport is what RunArchive measured.
type ArchiveReport struct {
	Machine Machine `json:"machine"`
	// Mode is "generate" (the writer in this process) or "server".
	Mode        string `json:"mode"`
	Format      string `json:"format"`
	Compression string `json:"compression,omitempty"`
	Events      int64  `json:"events"`
	Orgs        int    `json:"orgs"`
	Hours       int    `json:"hours"`
	Batch       int    `json:"batch"`
	// Publish is the server run's publishing of the events (before the
	// archive exists).
	Publish *SubsOps `json:"publish,omitempty"`
	// WriteSeconds is the time the writer took: generating, the time in
	// its batch writes (not making the events); on a server, from the
	// archive's creation until every event was written. WriteRate is
	// Events over it, WriteCPUCores the writer's process's CPU over it.
	WriteSeconds  float64 `json:"write_seconds"`
	WriteRate     float64 `json:"write_rate"`
	WriteCPUCores float64 `json:"write_cpu_cores"`
	// WriteCPUPerEvent is the writer's CPU time per event, in
	// microseconds: what bounds the rate on a machine whose cores are
	// busy with other work.
	WriteCPUPerEvent float64 `json:"write_cpu_us_per_event"`
	// WriteRunQueueSeconds is the time the writer's threads spent
	// runnable but waiting for a CPU during the writes, summed over its
	// threads (/proc schedstat): large on a loaded machine.
	WriteRunQueueSeconds float64 `json:"write_run_queue_seconds"`
	// Files and Bytes are the data files written (manifests aside);
	// BytesPerEvent is Bytes over Events.
	Files         int64   `json:"files"`
	Bytes         int64   `json:"bytes"`
	BytesPerEvent float64 `json:"bytes_per_event"`
	// EventsPerOrgHour is the average size of the partition a query reads.
	EventsPerOrgHour float64 `json:"events_per_org_hour"`
	// Query is the latency to the first page of one organization and one
	// hour; QueryFiles the files a query read on average.
	Query      Latency  `json:"query"`
	QueryFiles float64  `json:"query_files"`
	QueryPage  int      `json:"query_page"`
	Errors     []string `json:"errors,omitempty"`
}

// RunArchive measures an archive's write rate and query latency; see
// ArchiveConfig.
func RunArchive(ctx context.Context, cfg ArchiveConfig) (*ArchiveReport, error) {
	switch {
	case cfg.Events <= 0 || cfg.Orgs <= 0 || cfg.Hours <= 0 || cfg.Queries <= 0 || cfg.Workers <= 0 || cfg.Timeout <= 0:
		return nil, herald.Errorf(herald.CodeInvalid, "--events, --orgs, --hours, --queries, --workers and --timeout must be positive")
	case cfg.Limit < 1 || cfg.Limit > archive.MaxLimit:
		return nil, herald.FieldErrorf("limit", "--limit %d: want 1 to %d", cfg.Limit, archive.MaxLimit)
	case cfg.Format != archive.FormatParquet && cfg.Format != archive.FormatJSONL:
		return nil, herald.FieldErrorf("format", "--format is %s or %s", archive.FormatParquet, archive.FormatJSONL)
	}
	rep := &ArchiveReport{
		Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version(), Load1: loadAverage()},
		Format:  cfg.Format, Compression: cfg.Compression, Events: int64(cfg.Events), Orgs: cfg.Orgs, Hours: cfg.Hours, QueryPage: cfg.Limit,
	}
	if cfg.Dir != "" {
		return rep, runArchiveGenerate(ctx, cfg, rep)
	}
	return rep, runArchiveServer(ctx, cfg, rep)
}

// archiveSpec is the archive's settings: partitioned by organization.
func archiveSpec(cfg ArchiveConfig, path string, maxEvents int) map[string]any {
	flush := map[string]any{"max_events": maxEvents, "max_bytes": archive.MaxMaxBytes, "max_age": "1s"}
	spec := map[string]any{
		"partition":   []map[string]string{{"key": "org", "field": "organization.id"}},
		"format":      cfg.Format,
		"flush":       flush,
		"destination": map[string]any{"type": "local", "path": path},
	}
	if cfg.Compression != "" {
		spec["compression"] = cfg.Compression
	}
	return spec
}

// logLine is the payload of the n-th event: a log line of one organization.
func logLine(n, org int) []byte {
	return fmt.Appendf(nil, `{"environment":"prod","organization":{"id":"org-%03d"},"log_type":"access","status":%d,"path":"/api/v1/items/%d","latency_ms":%d}`,
		org, []int{200, 200, 200, 201, 404, 500}[n%6], n, n%997)
}

// genStart is the generated archive's first hour.
var genStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func runArchiveGenerate(ctx context.Context, cfg ArchiveConfig, rep *ArchiveReport) error {
	rep.Mode = "generate"
	if cfg.Batch == 0 {
		cfg.Batch = archive.DefaultMaxEvents
	}
	if cfg.Batch < 1 || cfg.Batch > archive.MaxMaxEvents {
		return herald.FieldErrorf("batch", "--batch %d: want 1 to %d", cfg.Batch, archive.MaxMaxEvents)
	}
	rep.Batch = cfg.Batch
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	ch := archive.New(archive.ChannelConfig{Dir: cfg.Dir}, nil, nil)
	raw, _ := json.Marshal(archiveSpec(cfg, "", cfg.Batch))
	config, err := ch.Validate(ctx, channel.ValidateParams{Config: raw, Internal: true})
	if err != nil {
		return err
	}
	snk, err := ch.Open(ctx, &herald.Subscription{ID: "sub_bench_archive", Config: config})
	if err != nil {
		return err
	}
	w, ok := snk.(channel.Batcher)
	if !ok {
		return fmt.Errorf("the archive writer takes no batches")
	}
	span := time.Duration(cfg.Hours) * time.Hour
	step := span / time.Duration(cfg.Events)
	cfg.progress("generating %d events over %d hours and %d organizations into %s, batches of %d", cfg.Events, cfg.Hours, cfg.Orgs, cfg.Dir, cfg.Batch)
	self := os.Getpid()
	var busy time.Duration
	var cpu float64
	batch := make([]channel.Delivery, 0, cfg.Batch)
	for n := 0; n < cfg.Events; n++ {
		org := int(uint64(n) * 2654435761 % uint64(cfg.Orgs)) // spread, not in turn
		batch = append(batch, channel.Delivery{Attempt: 1, Event: &herald.Event{
			ID: fmt.Sprintf("0193%028x", n), Topic: "logs.app", Seq: int64(n + 1), Time: genStart.Add(time.Duration(n) * step),
			Type: "log.line", ContentType: "application/json", Payload: logLine(n, org),
		}})
		if len(batch) < cfg.Batch && n < cfg.Events-1 {
			continue
		}
		c0, d0, t0 := mustProc(self), runDelay(self), time.Now()
		for _, r := range w.DeliverBatch(ctx, batch) {
			if r.Outcome != herald.Delivered {
				return fmt.Errorf("write batch ending at %d: %s %s", n, r.Err, r.Detail)
			}
		}
		busy += time.Since(t0)
		cpu += mustProc(self).cpu - c0.cpu
		rep.WriteRunQueueSeconds += runDelay(self) - d0
		batch = batch[:0]
		if err := ctx.Err(); err != nil {
			return err
		}
		cfg.progress("written %d of %d (%.0f events/s)", n+1, cfg.Events, float64(n+1)/busy.Seconds())
	}
	rep.WriteSeconds = busy.Seconds()
	rep.WriteRate = float64(cfg.Events) / rep.WriteSeconds
	rep.WriteCPUCores = cpu / rep.WriteSeconds
	rep.WriteCPUPerEvent = cpu / float64(cfg.Events) * 1e6
	rep.Files, rep.Bytes = dataFiles(cfg.Dir)
	rep.BytesPerEvent = float64(rep.Bytes) / float64(cfg.Events)
	rep.EventsPerOrgHour = float64(cfg.Events) / float64(cfg.Orgs*cfg.Hours)

	// First pages of one organization and one hour, in-process.
	rnd := rand.New(rand.NewPCG(1, 2))
	hist := newHistogram()
	var files int
	for range cfg.Queries {
		hour := genStart.Add(time.Duration(rnd.IntN(cfg.Hours)) * time.Hour)
		q := archive.Query{From: hour, To: hour.Add(time.Hour), Limit: cfg.Limit,
			Partition: map[string]string{"org": fmt.Sprintf("org-%03d", rnd.IntN(cfg.Orgs))}}
		if err := archive.CheckQuery(config, &q); err != nil {
			return err
		}
		t0 := time.Now()
		got := 0
		page, err := ch.Run(ctx, config, q, func(archive.Hit) error { got++; return nil })
		if err != nil {
			return err
		}
		hist.record(time.Since(t0))
		files += page.Files
		if got == 0 {
			rep.Errors = append(rep.Errors, fmt.Sprintf("the query of %s %s found nothing", q.Partition["org"], hour.Format(time.RFC3339)))
		}
	}
	rep.Query = hist.summary()
	rep.QueryFiles = float64(files) / float64(cfg.Queries)
	return nil
}

// dataFiles counts the archive's data files (not manifests) and their
// bytes.
func dataFiles(dir string) (n, bytes int64) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), "_") || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		if info, err := d.Info(); err == nil {
			n++
			bytes += info.Size()
		}
		return nil
	})
	return n, bytes
}

func runArchiveServer(ctx context.Context, cfg ArchiveConfig, rep *ArchiveReport) error {
	rep.Mode = "server"
	if cfg.Batch == 0 {
		cfg.Batch = 1000
	}
	if cfg.Batch < 1 || cfg.Batch > MaxBatch {
		return herald.FieldErrorf("batch", "--batch %d: want 1 to %d", cfg.Batch, MaxBatch)
	}
	rep.Batch, rep.Hours = archive.DefaultMaxEvents, 1
	base, err := url.Parse(cfg.Server)
	if err != nil {
		return herald.FieldErrorf("server", "%v", err)
	}
	if !cfg.AllowRemote {
		if err := checkLoopbackURL(ctx, cfg.Server); err != nil {
			return err
		}
	}
	pid, err := StreamsConfig{PID: cfg.PID, AllowRemote: cfg.AllowRemote}.serverPID(base)
	if err != nil {
		return fmt.Errorf("find the server's process: %w", err)
	}
	c := client.New(cfg.Server, client.WithKey(cfg.Key))
	id := time.Now().UnixNano() % 1e9
	topic, name := fmt.Sprintf("bench-archive.%d", id), fmt.Sprintf("bench-archive-%d", id)
	if _, _, err := c.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	if !cfg.Keep {
		defer func() { _ = c.DeleteTopic(context.WithoutCancel(ctx), topic) }()
	}
	requests := (cfg.Events + cfg.Batch - 1) / cfg.Batch
	var acked atomic.Int64
	cfg.progress("publishing %d events into %s", cfg.Events, topic)
	hour := time.Now().UTC().Truncate(time.Hour)
	ops := runOps(ctx, requests, cfg.Workers, func(ctx context.Context, j int) error {
		from, to := j*cfg.Batch, min((j+1)*cfg.Batch, cfg.Events)
		events := make([]client.BatchEvent, 0, to-from)
		for n := from; n < to; n++ {
			events = append(events, client.BatchEvent{ContentType: "application/json", Type: "log.line", Payload: logLine(n, n%cfg.Orgs)})
		}
		if _, err := c.PublishBatch(ctx, topic, events); err != nil {
			return err
		}
		acked.Add(int64(len(events)))
		return nil
	})
	ops.Calls, ops.PerSec = int(acked.Load()), float64(acked.Load())/ops.Seconds
	rep.Publish, rep.Events = &ops, acked.Load()
	if ops.Failed > 0 {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d of %d publish requests failed", ops.Failed, requests))
	}
	cfg.progress("published %d in %.1f s; creating archive %s", acked.Load(), ops.Seconds, name)

	events0, _ := metricValue(ctx, cfg.Server, "herald_archive_events_written_total")
	files0, _ := metricValue(ctx, cfg.Server, "herald_archive_files_written_total")
	bytes0, _ := metricValue(ctx, cfg.Server, "herald_archive_bytes_written_total")
	// The server's archive flushes at the default 100,000 events (or a
	// second), as an archive left at its defaults would, but sooner.
	spec := archiveSpec(cfg, name, archive.DefaultMaxEvents)
	spec["topics"], spec["start"] = topic, "earliest"
	raw, _ := json.Marshal(spec)
	cpu0, d0, t0 := mustProc(pid), runDelay(pid), time.Now()
	if _, _, err := c.PutArchive(ctx, name, raw); err != nil {
		return fmt.Errorf("create archive: %w", err)
	}
	if !cfg.Keep {
		defer func() { _ = c.DeleteArchive(context.WithoutCancel(ctx), name) }()
	}
	deadline := t0.Add(cfg.Timeout)
	var written float64
	for {
		v, _ := metricValue(ctx, cfg.Server, "herald_archive_events_written_total")
		written = v - events0
		if written >= float64(acked.Load()) || time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	cpu1, t1 := mustProc(pid), time.Now()
	rep.WriteRunQueueSeconds = runDelay(pid) - d0
	rep.WriteSeconds = t1.Sub(t0).Seconds()
	rep.WriteRate = written / rep.WriteSeconds
	rep.WriteCPUCores = (cpu1.cpu - cpu0.cpu) / rep.WriteSeconds
	rep.WriteCPUPerEvent = (cpu1.cpu - cpu0.cpu) / max(written, 1) * 1e6
	if written < float64(acked.Load()) {
		rep.Errors = append(rep.Errors, fmt.Sprintf("only %.0f of %d events archived after %s (other archives on the server count too)", written, acked.Load(), cfg.Timeout))
	}
	files1, _ := metricValue(ctx, cfg.Server, "herald_archive_files_written_total")
	bytes1, _ := metricValue(ctx, cfg.Server, "herald_archive_bytes_written_total")
	rep.Files, rep.Bytes = int64(files1-files0), int64(bytes1-bytes0)
	rep.BytesPerEvent = float64(rep.Bytes) / max(written, 1)
	rep.EventsPerOrgHour = float64(acked.Load()) / float64(cfg.Orgs)
	cfg.progress("archived %.0f in %.1f s (%.0f events/s); querying", written, rep.WriteSeconds, rep.WriteRate)

	// First pages of one organization and the hour the publishing began,
	// over HTTP.
	rnd := rand.New(rand.NewPCG(1, 2))
	hist := newHistogram()
	from, to := hour, hour.Add(time.Hour)
	for range cfg.Queries {
		params := url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}, "limit": {fmt.Sprint(cfg.Limit)},
			"partition.org": {fmt.Sprintf("org-%03d", rnd.IntN(cfg.Orgs))}}
		q0 := time.Now()
		body, err := c.QueryArchive(ctx, name, params)
		if err != nil {
			return fmt.Errorf("query: %w", err)
		}
		hist.record(time.Since(q0))
		if !strings.Contains(string(body), `"seq"`) {
			rep.Errors = append(rep.Errors, "a query found nothing: "+params.Encode())
		}
	}
	rep.Query = hist.summary()
	return nil
}

func (c ArchiveConfig) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "bench archive: "+format+"\n", args...)
	}
}

// WriteJSON writes the report as JSON.
func (r *ArchiveReport) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteText writes the report for a person.
func (r *ArchiveReport) WriteText(w io.Writer) error {
	var b strings.Builder
	format := r.Format
	if r.Compression != "" {
		format += "+" + r.Compression
	}
	fmt.Fprintf(&b, "archive (%s) %s, %d events, %d orgs x %d hours (%.0f events per org-hour); %s, %d cores, load %.1f\n",
		r.Mode, format, r.Events, r.Orgs, r.Hours, r.EventsPerOrgHour, r.Machine.OS, r.Machine.CPUs, r.Machine.Load1)
	if r.Publish != nil {
		fmt.Fprintf(&b, "published      %d in %.1f s: %.0f events/s (before the archive existed)\n", r.Publish.Calls, r.Publish.Seconds, r.Publish.PerSec)
	}
	fmt.Fprintf(&b, "written        %d in %.2f s: %.0f events/s, %.2f cores, %.1f µs CPU/event (batches of %d)\n", r.Events, r.WriteSeconds, r.WriteRate, r.WriteCPUCores, r.WriteCPUPerEvent, r.Batch)
	if r.WriteRunQueueSeconds > 0 {
		fmt.Fprintf(&b, "waiting        its threads waited %.1f s in all for a CPU (run queue) while writing\n", r.WriteRunQueueSeconds)
	}
	fmt.Fprintf(&b, "on disk        %d files, %s: %.1f bytes/event\n", r.Files, mib(r.Bytes), r.BytesPerEvent)
	fmt.Fprintf(&b, "first page     of %d, one org and one hour: p50 %s  p90 %s  p99 %s  max %s", r.QueryPage, ms(r.Query.P50), ms(r.Query.P90), ms(r.Query.P99), ms(r.Query.Max))
	if r.QueryFiles > 0 {
		fmt.Fprintf(&b, " (%.1f files read)", r.QueryFiles)
	}
	b.WriteString("\n")
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "error          %s\n", e)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Problems names what went wrong.
func (r *ArchiveReport) Problems() []string { return r.Errors }
