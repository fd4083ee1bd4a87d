package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// ChannelConfig is a run of "herald bench --channel": Herald delivering
// to a broker through a channel, beside a bare producer of the same client
// library writing the same events to the same broker with the same
// batching, no Herald in between.
type ChannelConfig struct {
	Server, Key string
	// Channel is one of Channels: "kafka", "redis", "nats" (JetStream),
	// "amqp", "mqtt" or "email" (Mailpit).
	Channel string
	// Broker is the broker's address. "" means, for kafka, a kfake
	// cluster inside this process (no Kafka can be installed here) and,
	// for redis, 127.0.0.1:6379, for nats, nats://127.0.0.1:4222, for
	// amqp, amqp://guest:guest@127.0.0.1:5672/, for mqtt,
	// tcp://127.0.0.1:1883.
	Broker string
	// Partitions of the Kafka topics the bench makes (kfake only).
	Partitions int
	// MailAPI is Mailpit's HTTP API (email only); "" means
	// http://127.0.0.1:8025. Broker is then its SMTP address.
	MailAPI string

	Events  int // events to publish
	Batch   int // events per publish request
	Workers int // publish requests in flight
	Size    int // payload bytes
	Keys    int // distinct event keys, cycled

	// The subscription's delivery settings, and the bare producer's:
	// MaxBatchEvents events per call (0: the channel's default), up to
	// MaxInFlight calls at once, LingerMS for a partial batch.
	MaxBatchEvents int
	MaxInFlight    int
	LingerMS       int

	// Live publishes while Herald delivers, so the delivery rate is at
	// most the publish rate; otherwise (the default) the events are
	// published while the subscription is paused, and the delivery rate
	// is timed from the resume: the channel's own rate, as the bare
	// producer's is.
	Live bool

	Timeout time.Duration // for the deliveries after publishing
	Keep    bool          // leave the topic and subscription in place

	// PID is the server's process, for its CPU time over Herald's
	// delivery; 0 finds the process listening on the server's port when
	// the server is on loopback (and reports no CPU time when none is
	// found). -1 reports none.
	PID int

	Progress io.Writer // progress lines; nil for none
}

// Channels are the channels "herald bench --channel" measures.
var Channels = []string{"kafka", "redis", "nats", "amqp", "mqtt", "email"}

// ChannelDefaults returns the defaults of a channel bench.
func ChannelDefaults() ChannelConfig {
	return ChannelConfig{Partitions: 8, Events: 200_000, Batch: 100, Workers: 4, Size: 256, Keys: 100, MaxInFlight: 16, Timeout: 2 * time.Minute}
}

func (c ChannelConfig) validate() error {
	switch {
	case !slices.Contains(Channels, c.Channel):
		return herald.FieldErrorf("channel", "--channel %q: one of %s", c.Channel, strings.Join(Channels, ", "))
	case c.Events < 1:
		return herald.FieldErrorf("events", "--events must be at least 1")
	case c.Batch < 1 || c.Batch > 1000:
		return herald.FieldErrorf("batch", "--batch must be between 1 and 1000")
	case c.Workers < 1:
		return herald.FieldErrorf("workers", "--workers must be at least 1")
	case c.Size < 16:
		return herald.FieldErrorf("size", "--size must be at least 16 bytes")
	case c.Keys < 1:
		return herald.FieldErrorf("keys", "--keys must be at least 1")
	case c.MaxInFlight < 1 || c.MaxInFlight > herald.MaxMaxInFlight:
		return herald.FieldErrorf("max-in-flight", "--max-in-flight must be between 1 and %d", herald.MaxMaxInFlight)
	case c.PID < -1:
		return herald.FieldErrorf("pid", "--pid must be a process id, 0 to find it, or -1 for none")
	case c.MaxBatchEvents < 0 || c.LingerMS < 0:
		return herald.FieldErrorf("max-batch-events", "--max-batch-events and --linger-ms must not be negative")
	case c.Server == "" || c.Key == "":
		return herald.FieldErrorf("server", "a server URL and an admin key are needed")
	}
	return nil
}

// ChannelReport is what a channel bench measured.
type ChannelReport struct {
	Date     time.Time `json:"date"`
	Machine  Machine   `json:"machine"`
	Channel  string    `json:"channel"`
	Broker   string    `json:"broker"` // "kfake (in-process)" or the address
	Scenario struct {
		Events         int  `json:"events"`
		Batch          int  `json:"batch"`
		Workers        int  `json:"workers"`
		Size           int  `json:"size"`
		Keys           int  `json:"keys"`
		MaxBatchEvents int  `json:"max_batch_events"`
		MaxInFlight    int  `json:"max_in_flight"`
		LingerMS       int  `json:"linger_ms"`
		Live           bool `json:"live"`
	} `json:"scenario"`
	Bare   ChannelResult `json:"bare"`
	Herald ChannelResult `json:"herald"`
	// Ratio is Herald's delivery rate over the bare producer's.
	Ratio float64 `json:"ratio"`
}

// ChannelResult is one side's figures.
type ChannelResult struct {
	Target     string `json:"target"` // the Kafka topic, Redis stream, NATS subject, AMQP queue or MQTT topic
	Events     int64  `json:"events"` // acknowledged by Herald (herald) or written (bare)
	Delivered  int64  `json:"delivered"`
	Duplicates int64  `json:"duplicates"`
	Lost       int64  `json:"lost"`
	// Seconds runs from the first write (bare), the resume (herald), or
	// the first publish (herald, live) to the last event read back.
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"` // delivered events per second
	// PublishRate is Herald's publish rate (herald only).
	PublishRate float64 `json:"publish_rate,omitempty"`
	// ServerCPU is the server's user and system CPU time over Seconds
	// (herald only, when its process is known), and ServerCPUPerEvent
	// that time over the events delivered, in microseconds: a figure the
	// machine's load changes far less than the rates.
	ServerCPU         float64 `json:"server_cpu_seconds,omitempty"`
	ServerCPUPerEvent float64 `json:"server_cpu_us_per_event,omitempty"`
	Err               string  `json:"error,omitempty"`
}

// broker is one broker kind under the bench: a bare producer, a reader,
// and the subscription config that makes Herald write where the reader
// reads.
type broker interface {
	name() string // for the report
	// config is the channel config of a subscription writing to target.
	config(target string) json.RawMessage
	// prepare makes target exist, if the broker needs that.
	prepare(ctx context.Context, target string) error
	// bare writes events seq 1..n to target as the channel would, with
	// its batching, and returns how many were acknowledged.
	bare(ctx context.Context, target string, n int, payload func(seq int) []byte, key func(seq int) string) (int64, error)
	// read calls seen with the seq of every message target receives,
	// from its start, until ctx ends. It calls ready once nothing written
	// to target from then on can be missed: at once where target keeps
	// what is written to it (a queue, a stream, a log), once subscribed
	// where the broker passes messages only to those already listening.
	read(ctx context.Context, target string, seen func(seq int64), ready func()) error
	cleanup(ctx context.Context, targets ...string)
	close()
}

// timedReader is a broker whose reader knows when the broker received
// each message (Mailpit), so the reader's own delay is not timed.
type timedReader interface {
	readTimed(ctx context.Context, target string, seen func(seq int64, at time.Time), ready func()) error
}

// RunChannel runs a channel bench.
func RunChannel(ctx context.Context, cfg ChannelConfig) (*ChannelReport, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, format+"\n", args...)
		}
	}
	var (
		b   broker
		err error
	)
	switch cfg.Channel {
	case "kafka":
		b, err = newKafkaBroker(cfg)
	case "nats":
		b, err = newNATSBroker(cfg)
	case "amqp":
		b, err = newAMQPBroker(cfg)
	case "mqtt":
		b, err = newMQTTBroker(cfg)
	case "email":
		b, err = newEmailBroker(cfg)
	default:
		b, err = newRedisBroker(cfg)
	}
	if err != nil {
		return nil, err
	}
	defer b.close()
	rep := &ChannelReport{Date: time.Now().UTC(), Channel: cfg.Channel, Broker: b.name(),
		Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version(), Load1: loadAverage()}}
	s := &rep.Scenario
	s.Events, s.Batch, s.Workers, s.Size, s.Keys, s.MaxBatchEvents, s.MaxInFlight, s.LingerMS, s.Live =
		cfg.Events, cfg.Batch, cfg.Workers, cfg.Size, cfg.Keys, cfg.MaxBatchEvents, cfg.MaxInFlight, cfg.LingerMS, cfg.Live

	id := randomHex(4)
	payload := func(seq int) []byte { return benchPayload(seq, cfg.Size) }
	key := func(seq int) string { return "k" + strconv.Itoa(seq%cfg.Keys) }

	// The bare producer first, then Herald, against the same broker.
	bareTarget := "bench-bare-" + id
	progress("bare %s producer: %d events to %s", cfg.Channel, cfg.Events, bareTarget)
	rep.Bare = runBare(ctx, cfg, b, bareTarget, payload, key)
	progress("bare: %.0f events/s", rep.Bare.Rate)

	heraldTarget := "bench-herald-" + id
	progress("herald -> %s: %d events to %s", cfg.Channel, cfg.Events, heraldTarget)
	rep.Herald = runHeraldChannel(ctx, cfg, b, "bench.ch"+id, heraldTarget, payload, key, progress)
	if rep.Bare.Rate > 0 {
		rep.Ratio = rep.Herald.Rate / rep.Bare.Rate
	}
	if !cfg.Keep {
		b.cleanup(context.WithoutCancel(ctx), bareTarget, heraldTarget)
	}
	return rep, nil
}

// batchOf is the batch size of the channel and the bare producer:
// --max-batch-events, or the channel's default.
func batchOf(cfg ChannelConfig, def int) int {
	if cfg.MaxBatchEvents > 0 {
		return cfg.MaxBatchEvents
	}
	return def
}

// withBatching adds the bench's batch settings to a subscription config.
func withBatching(cfg ChannelConfig, m map[string]any) map[string]any {
	m["linger_ms"] = cfg.LingerMS
	if cfg.MaxBatchEvents > 0 {
		m["max_batch_events"] = cfg.MaxBatchEvents
	}
	return m
}

// benchPayload is a JSON payload of size bytes holding seq.
func benchPayload(seq, size int) []byte {
	p := fmt.Appendf(make([]byte, 0, size), `{"seq":%d,"pad":"`, seq)
	for len(p) < size-2 {
		p = append(p, 'x')
	}
	return append(p, '"', '}')
}

// tally counts what a reader saw, by seq (1..n).
type tally struct {
	mu         sync.Mutex
	seen       []bool
	distinct   int64
	duplicates int64
	last       time.Time
	done       chan struct{}
}

func newTally(n int) *tally { return &tally{seen: make([]bool, n+1), done: make(chan struct{})} }

func (t *tally) add(seq int64) { t.addAt(seq, time.Now()) }

// addAt counts seq as read at the time at, which may be earlier than
// now: the time a broker says it received the message.
func (t *tally) addAt(seq int64, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq < 1 || seq >= int64(len(t.seen)) {
		return
	}
	if t.seen[seq] {
		t.duplicates++
		return
	}
	t.seen[seq] = true
	t.distinct++
	if at.After(t.last) {
		t.last = at
	}
	if t.distinct == int64(len(t.seen)-1) {
		close(t.done)
	}
}

func (t *tally) counts() (distinct, dups int64, last time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.distinct, t.duplicates, t.last
}

// readAll starts a reader of target into a tally of n events, and returns
// once the reader misses nothing written from then on (or has failed: the
// tally then counts what never arrived as lost).
func readAll(ctx context.Context, b broker, target string, n int) (*tally, func()) {
	t := newTally(n)
	rctx, cancel := context.WithCancel(ctx)
	ready := make(chan struct{})
	markReady := sync.OnceFunc(func() { close(ready) })
	var wg sync.WaitGroup
	wg.Go(func() {
		defer markReady()
		if tr, ok := b.(timedReader); ok {
			_ = tr.readTimed(rctx, target, t.addAt, markReady)
			return
		}
		_ = b.read(rctx, target, t.add, markReady)
	})
	select {
	case <-ready:
	case <-ctx.Done():
	}
	return t, func() { cancel(); wg.Wait() }
}

func waitTally(ctx context.Context, t *tally, timeout time.Duration) {
	select {
	case <-t.done:
	case <-time.After(timeout):
	case <-ctx.Done():
	}
}

func runBare(ctx context.Context, cfg ChannelConfig, b broker, target string, payload func(int) []byte, key func(int) string) ChannelResult {
	res := ChannelResult{Target: target}
	if err := b.prepare(ctx, target); err != nil {
		res.Err = err.Error()
		return res
	}
	t, stop := readAll(ctx, b, target, cfg.Events)
	defer stop()
	start := time.Now()
	acked, err := b.bare(ctx, target, cfg.Events, payload, key)
	res.Events = acked
	if err != nil {
		res.Err = err.Error()
	}
	waitTally(ctx, t, cfg.Timeout)
	finish(&res, t, start, int64(cfg.Events))
	return res
}

func finish(res *ChannelResult, t *tally, start time.Time, want int64) {
	distinct, dups, last := t.counts()
	res.Delivered, res.Duplicates, res.Lost = distinct, dups, want-distinct
	if distinct > 0 {
		res.Seconds = last.Sub(start).Seconds()
		res.Rate = float64(distinct) / res.Seconds
	}
}

func runHeraldChannel(ctx context.Context, cfg ChannelConfig, b broker, topic, target string, payload func(int) []byte, key func(int) string, progress func(string, ...any)) ChannelResult {
	res := ChannelResult{Target: target}
	fail := func(err error) ChannelResult { res.Err = err.Error(); return res }
	hc := client.New(cfg.Server, client.WithKey(cfg.Key))
	if err := b.prepare(ctx, target); err != nil {
		return fail(err)
	}
	if _, _, err := hc.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
		return fail(fmt.Errorf("create topic %s: %w", topic, err))
	}
	spec := client.SubscriptionSpec{Topic: topic, Channel: cfg.Channel, Config: b.config(target),
		MaxInFlight: cfg.MaxInFlight, Retry: herald.RetryPolicy{Initial: 100 * time.Millisecond, Max: time.Second}}
	if v, ok := b.(interface{ verification() string }); ok {
		spec.Verification = v.verification() // people's channels: active at once (admin)
	}
	sub, err := hc.CreateSubscription(ctx, spec)
	if err != nil {
		return fail(fmt.Errorf("create the %s subscription: %w", cfg.Channel, err))
	}
	if !cfg.Keep {
		defer func() {
			ctx := context.WithoutCancel(ctx)
			_ = hc.DeleteSubscription(ctx, sub.ID)
			_ = hc.DeleteTopic(ctx, topic)
		}()
	}
	if !cfg.Live {
		if _, err := hc.PauseSubscription(ctx, sub.ID); err != nil {
			return fail(fmt.Errorf("pause the subscription: %w", err))
		}
	}
	t, stop := readAll(ctx, b, target, cfg.Events)
	defer stop()
	pid := channelServerPID(cfg)

	start, cpu0 := time.Now(), serverCPU(pid)
	var next, acked atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Go(func() {
			evs := make([]client.BatchEvent, 0, cfg.Batch)
			for {
				from := int(next.Add(int64(cfg.Batch))) - cfg.Batch + 1
				if from > cfg.Events || ctx.Err() != nil {
					return
				}
				evs = evs[:0]
				for seq := from; seq < from+cfg.Batch && seq <= cfg.Events; seq++ {
					evs = append(evs, client.BatchEvent{Key: key(seq), ContentType: "application/json", Payload: payload(seq)})
				}
				if _, err := hc.PublishBatch(ctx, topic, evs); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				acked.Add(int64(len(evs)))
			}
		})
	}
	wg.Wait()
	published := time.Since(start)
	res.Events = acked.Load()
	res.PublishRate = float64(res.Events) / published.Seconds()
	progress("published %d events in %.1fs; waiting for the deliveries", res.Events, published.Seconds())
	if firstErr != nil {
		res.Err = "publish: " + firstErr.Error()
	}
	if !cfg.Live {
		start, cpu0 = time.Now(), serverCPU(pid) // the backlog drains from here
		if _, err := hc.ResumeSubscription(ctx, sub.ID); err != nil {
			return fail(fmt.Errorf("resume the subscription: %w", err))
		}
	}
	waitTally(ctx, t, cfg.Timeout)
	cpu1 := serverCPU(pid)
	// The events' seqs are 1..n in the fresh topic: the tally counts by seq.
	finish(&res, t, start, res.Events)
	if cpu0 >= 0 && cpu1 >= cpu0 && res.Delivered > 0 {
		res.ServerCPU = cpu1 - cpu0
		res.ServerCPUPerEvent = res.ServerCPU / float64(res.Delivered) * 1e6
	}
	return res
}

// channelServerPID is the server's process for its CPU time: --pid, or
// the process listening on the server's port when the server is on
// loopback; 0 when there is none to read.
func channelServerPID(cfg ChannelConfig) int {
	if cfg.PID != 0 {
		return max(cfg.PID, 0)
	}
	u, err := url.Parse(cfg.Server)
	if err != nil || checkLoopbackURL(context.Background(), cfg.Server) != nil {
		return 0
	}
	port, err := strconv.Atoi(streamsPort(u))
	if err != nil {
		return 0
	}
	pid, err := listenerPID(port)
	if err != nil {
		return 0
	}
	return pid
}

// serverCPU is the process's CPU time so far in seconds, or -1 when pid
// is 0 or its CPU time cannot be read.
func serverCPU(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	s, err := readProc(pid)
	if err != nil {
		return -1
	}
	return s.cpu
}

// WriteJSON writes the report as JSON.
func (r *ChannelReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as a table.
func (r *ChannelReport) WriteText(w io.Writer) error {
	s := r.Scenario
	how := "backlog: published while paused, timed from the resume"
	if s.Live {
		how = "live: timed from the first publish"
	}
	fmt.Fprintf(w, "channel %s, broker %s: %d events of %d bytes, %d keys; published %d per request by %d workers; channel batches of %d (0: default), %d in flight, linger %dms; %s\n",
		r.Channel, r.Broker, s.Events, s.Size, s.Keys, s.Batch, s.Workers, s.MaxBatchEvents, s.MaxInFlight, s.LingerMS, how)
	fmt.Fprintf(w, "machine: %d CPUs, %s/%s, %s, load %.2f, %s\n\n", r.Machine.CPUs, r.Machine.OS, r.Machine.Arch, r.Machine.GoVersion, r.Machine.Load1, r.Date.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tbare producer\therald")
	row := func(name string, f func(x ChannelResult) string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, f(r.Bare), f(r.Herald))
	}
	row("target", func(x ChannelResult) string { return x.Target })
	row("events", func(x ChannelResult) string { return strconv.FormatInt(x.Events, 10) })
	row("delivered (distinct)", func(x ChannelResult) string { return strconv.FormatInt(x.Delivered, 10) })
	row("lost", func(x ChannelResult) string { return strconv.FormatInt(x.Lost, 10) })
	row("duplicates", func(x ChannelResult) string { return strconv.FormatInt(x.Duplicates, 10) })
	row("seconds", func(x ChannelResult) string { return fmt.Sprintf("%.2f", x.Seconds) })
	row("delivered events/s", func(x ChannelResult) string { return fmt.Sprintf("%.0f", x.Rate) })
	row("publish events/s", func(x ChannelResult) string {
		if x.PublishRate == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", x.PublishRate)
	})
	row("server CPU s", func(x ChannelResult) string {
		if x.ServerCPU == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", x.ServerCPU)
	})
	row("server CPU µs/event", func(x ChannelResult) string {
		if x.ServerCPUPerEvent == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", x.ServerCPUPerEvent)
	})
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nherald / bare: %.2f\n", r.Ratio)
	for _, p := range r.Problems() {
		fmt.Fprintln(w, "problem:", p)
	}
	return err
}

// Problems names what went wrong: errors, lost events.
func (r *ChannelReport) Problems() []string {
	var out []string
	for _, x := range []struct {
		name string
		res  ChannelResult
	}{{"bare", r.Bare}, {"herald", r.Herald}} {
		if x.res.Err != "" {
			out = append(out, x.name+": "+x.res.Err)
		}
		if x.res.Lost > 0 {
			out = append(out, fmt.Sprintf("%s: %d events lost", x.name, x.res.Lost))
		}
	}
	return out
}
