package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// StreamsConfig describes one run of the realtime-streams benchmark
// ("herald bench streams"): Clients stream connections to one topic of a
// running Herald, and events published to it at Rate, each fanned out to
// every connection. Zero values mean the defaults named on each field;
// RunStreams fills them in and validates the whole.
type StreamsConfig struct {
	// Server is the URL of the Herald to measure and Key an admin API key
	// for it (it creates and deletes the topic).
	Server string
	Key    string

	// Clients is the number of stream connections (default 100, at most
	// MaxStreamClients), each with one subscription to the topic.
	Clients int
	// Proto is the transport of the connections: "ws" (default: WebSocket,
	// GET /v1/stream), "sse" (GET /v1/topics/{topic}/stream) or "mixed"
	// (every other connection SSE).
	Proto string

	// Rate is the open-loop publish rate in events/s (default 10).
	Rate float64
	// Events is the number of events to publish (default Rate × Duration).
	Events int
	// Duration bounds the publishing phase (default 30s, or, when only
	// Events is given, the time Events take at Rate).
	Duration time.Duration
	// Batch is the number of events per publish request (default 1, at
	// most MaxBatch); more than 1 uses the batch endpoint.
	Batch int
	// Workers is the number of concurrent publish requests (default 16).
	Workers int
	// Size is the payload size in bytes (default 200, at least MinSize).
	Size int

	// Idle is how long every connection is held open with nothing
	// published before the server's RSS is read (default 5s; negative:
	// read it at once).
	Idle time.Duration
	// Dialers is the number of connection attempts in flight while
	// connecting (default 64).
	Dialers int
	// Timeout bounds the wait for the last deliveries once publishing
	// ended (default 30s); deliveries still missing then are lost.
	Timeout time.Duration

	// PID is the server's process id, for its RSS and CPU; 0 finds the
	// process listening on the server's port (loopback servers only).
	PID int
	// AllowRemote lets Server be other than loopback.
	AllowRemote bool
	// Keep leaves the topic in place after the run.
	Keep bool
	// Progress, when set, receives a line for each phase of the run.
	Progress io.Writer
}

// Transports of StreamsConfig.Proto.
const (
	ProtoWS    = "ws"
	ProtoSSE   = "sse"
	ProtoMixed = "mixed"
)

// MaxStreamClients bounds StreamsConfig.Clients. Beyond about 28,000
// connections one client address runs out of ephemeral ports, and each
// connection needs a file descriptor on both sides.
const MaxStreamClients = 100_000

// Limits and fixed settings of a streams run.
const (
	// streamsMaxTrackedBits bounds the receivers' memory: one bit per
	// event and connection, 128 MiB at most.
	streamsMaxTrackedBits = 1 << 30
	// streamsShards spreads the connections' latency recording over this
	// many histograms, merged at the end, so that they rarely wait for
	// each other's lock.
	streamsShards = 64
	// streamsReadBuffer is each connection's read buffer: most frames and
	// SSE lines are read in place from it.
	streamsReadBuffer = 4096
	// streamsMaxMessage bounds one message from the server: the largest
	// payload a topic accepts, in base64, with its metadata.
	streamsMaxMessage = 8 << 20
	// streamsConnectTimeout bounds one connection attempt: dial, HTTP
	// exchange and, for WebSocket, the subscription's acknowledgement.
	streamsConnectTimeout = 30 * time.Second
	// streamsRetries is how many times in a row a connection the server
	// ended is reopened before it is given up on.
	streamsRetries = 10
	// streamsMaxReasons bounds the distinct disconnect reasons reported.
	streamsMaxReasons = 16
)

// StreamsDefaults returns the StreamsConfig that RunStreams uses for a
// zero one: every field that has a default set to it.
func StreamsDefaults() StreamsConfig { return StreamsConfig{}.withDefaults() }

func (c StreamsConfig) withDefaults() StreamsConfig {
	if c.Clients == 0 {
		c.Clients = 100
	}
	if c.Proto == "" {
		c.Proto = ProtoWS
	}
	if c.Rate == 0 {
		c.Rate = 10
	}
	switch {
	case c.Duration == 0 && c.Events > 0 && c.Rate > 0:
		// The last event's intended time is (Events-1)/Rate; a second more
		// leaves room for the timer.
		c.Duration = time.Duration(float64(c.Events)/c.Rate*float64(time.Second)) + time.Second
	case c.Duration == 0:
		c.Duration = 30 * time.Second
	}
	if c.Events == 0 && c.Rate > 0 && c.Duration > 0 {
		c.Events = max(1, int(c.Rate*c.Duration.Seconds()+0.5))
	}
	if c.Batch == 0 {
		c.Batch = 1
	}
	if c.Workers == 0 {
		c.Workers = 16
	}
	if c.Size == 0 {
		c.Size = 200
	}
	if c.Idle == 0 {
		c.Idle = 5 * time.Second
	}
	if c.Dialers == 0 {
		c.Dialers = 64
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	return c
}

// validate reports every problem of a StreamsConfig with defaults filled
// in, as *herald.Error values with CodeInvalid naming the flag at fault,
// joined.
func (c StreamsConfig) validate(ctx context.Context) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, herald.FieldErrorf(field, "--"+field+" "+format, args...))
	}
	if c.Clients < 1 || c.Clients > MaxStreamClients {
		bad("clients", "%d: want 1 to %d", c.Clients, MaxStreamClients)
	}
	if c.Proto != ProtoWS && c.Proto != ProtoSSE && c.Proto != ProtoMixed {
		bad("proto", "%q: want ws, sse or mixed", c.Proto)
	}
	if c.Rate <= 0 || c.Rate > 10_000_000 {
		bad("rate", "%g: want more than 0, up to 10000000 events/s", c.Rate)
	}
	if (c.Events != 0 || c.Rate > 0) && (c.Events < 1 || c.Events > MaxEvents) {
		bad("events", "%d: want 1 to %d", c.Events, MaxEvents)
	} else if c.Clients >= 1 && int64(c.Events)*int64(c.Clients) > streamsMaxTrackedBits {
		bad("events", "%d events to %d clients: want at most %d deliveries in one run", c.Events, c.Clients, streamsMaxTrackedBits)
	}
	if c.Duration < 0 {
		bad("duration", "%s: want a positive duration", c.Duration)
	}
	if c.Batch < 1 || c.Batch > MaxBatch {
		bad("batch", "%d: want 1 to %d", c.Batch, MaxBatch)
	}
	if c.Workers < 1 || c.Workers > MaxWorkers {
		bad("workers", "%d: want 1 to %d", c.Workers, MaxWorkers)
	}
	if c.Size < MinSize || c.Size > MaxSize {
		bad("size", "%d: want %d to %d bytes", c.Size, MinSize, MaxSize)
	}
	if c.Dialers < 1 || c.Dialers > 10_000 {
		bad("dialers", "%d: want 1 to 10000", c.Dialers)
	}
	if c.Timeout <= 0 {
		bad("timeout", "%s: want a positive duration", c.Timeout)
	}
	if c.PID < 0 {
		bad("pid", "%d: want a process id", c.PID)
	}
	if !c.AllowRemote {
		if err := checkLoopbackURL(ctx, c.Server); err != nil {
			bad("server", "%v (add --allow-remote to measure a remote server)", err)
		}
	}
	return errors.Join(errs...)
}

// StreamsReport is the outcome of RunStreams. It marshals to the JSON
// that --json prints.
type StreamsReport struct {
	Date     time.Time       `json:"date"`
	Machine  Machine         `json:"machine"`
	Scenario StreamsScenario `json:"scenario"`
	Topic    string          `json:"topic"`

	Connections StreamsConnections `json:"connections"`
	// Memory is the server's RSS before and after connecting; nil when
	// it could not be read (see Notes).
	Memory *StreamsMemory `json:"server_memory,omitempty"`

	Publishing

	Expected   int64 `json:"expected"`   // published × clients
	Delivered  int64 `json:"delivered"`  // distinct (event, client) pairs received
	Lost       int64 `json:"lost"`       // expected pairs never received
	Duplicates int64 `json:"duplicates"` // pairs received more than once
	// Malformed counts event messages without a benchmark payload; Gaps
	// counts gap notices (events lost to retention).
	Malformed int64 `json:"malformed,omitempty"`
	Gaps      int64 `json:"gaps,omitempty"`
	// DeliverySeconds runs from the first publish to the last delivery;
	// DeliveryRate is Delivered over it.
	DeliverySeconds float64 `json:"delivery_seconds"`
	DeliveryRate    float64 `json:"delivery_rate"`
	// E2E is the latency of first deliveries, from each event's intended
	// publish time to its arrival at a client.
	E2E      Latency `json:"e2e_latency"`
	TimedOut bool    `json:"timed_out"`

	// Disconnects counts connections the server (or the network) ended
	// during the run, by reason; each was reopened from its last seq.
	Disconnects       int64            `json:"disconnects"`
	DisconnectReasons map[string]int64 `json:"disconnect_reasons,omitempty"`
	Reconnects        int64            `json:"reconnects"`

	// Server and Bench are the two processes' CPU over the publish and
	// drain window (WindowSeconds), and their peak RSS over the run.
	WindowSeconds float64      `json:"window_seconds"`
	Server        *StreamsProc `json:"server,omitempty"`
	Bench         *StreamsProc `json:"bench,omitempty"`

	Notes []string `json:"notes,omitempty"`
}

// StreamsScenario is the load a streams run applied, with defaults filled in.
type StreamsScenario struct {
	Clients  int     `json:"clients"`
	Proto    string  `json:"proto"`
	Rate     float64 `json:"rate"` // events/s
	Events   int     `json:"events"`
	Duration float64 `json:"duration_seconds"`
	Batch    int     `json:"batch"`
	Workers  int     `json:"workers"`
	Size     int     `json:"size"`
	Idle     float64 `json:"idle_seconds"`
}

// StreamsConnections describes the connecting phase.
type StreamsConnections struct {
	Wanted int `json:"wanted"`
	Opened int `json:"opened"`
	Failed int `json:"failed"`
	WS     int `json:"ws"`  // connections wanted over WebSocket
	SSE    int `json:"sse"` // and over SSE
	// Error is the first failure, with what to do about it when the server
	// refused the connection for its per-key limit.
	Error string `json:"error,omitempty"`
	// LimitRefused is set when the server refused a connection because
	// the key holds too many streams (HTTP 429).
	LimitRefused bool    `json:"limit_refused,omitempty"`
	Seconds      float64 `json:"seconds"` // from the first dial to the last subscription acknowledged
	// Latency is per connection, from dial to the subscription's
	// acknowledgement (WebSocket) or the response headers (SSE).
	Latency Latency `json:"latency"`
}

// StreamsMemory is the server's resident memory around connecting.
type StreamsMemory struct {
	PID           int   `json:"pid"`
	BaselineBytes int64 `json:"baseline_bytes"` // before connecting
	IdleBytes     int64 `json:"idle_bytes"`     // with every connection open and idle
	// PerConnBytes is (IdleBytes - BaselineBytes) / connections opened.
	PerConnBytes float64 `json:"per_conn_bytes"`
}

// StreamsProc is one process's resource use in a streams run.
type StreamsProc struct {
	PID         int     `json:"pid"`
	RSSMaxBytes int64   `json:"rss_max_bytes"` // the largest resident set sampled, whole run
	CPUSeconds  float64 `json:"cpu_seconds"`   // user + system, publish and drain window
	CPUCores    float64 `json:"cpu_cores"`     // CPUSeconds per second of the window
}

// RunStreams runs the streams benchmark cfg describes and returns its
// report. It creates a topic bench-streams.<random>, reads the server's
// RSS, opens cfg.Clients connections that each subscribe to the topic from
// its first event (so no event can slip past a connection that opened
// late), holds them idle for cfg.Idle and reads the RSS again, publishes
// with the open-loop publisher, and waits until every acknowledged event
// reached every connection or cfg.Timeout passes. Connections the server
// ends meanwhile (a slow consumer, say) are reopened from their last seq,
// as a real client would, and counted.
//
// Errors in cfg are *herald.Error values with CodeInvalid naming the flag
// at fault, joined. Failing to set up (the server unreachable, the key
// refused) is an error. Once connecting begins, failures are in the
// report: if a connection cannot be opened the run stops there, publishes
// nothing and reports why (StreamsConnections.Error).
func RunStreams(ctx context.Context, cfg StreamsConfig) (rep *StreamsReport, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(ctx); err != nil {
		return nil, err
	}
	hc := client.New(cfg.Server, client.WithKey(cfg.Key), client.WithUserAgent("herald-bench/"+herald.Version),
		client.WithHTTPClient(publisherHTTPClient(cfg.Workers)))
	defer hc.CloseIdleConnections()
	base, err := url.Parse(hc.BaseURL())
	if err != nil || base.Host == "" {
		return nil, herald.FieldErrorf("server", "--server %q is not an http:// or https:// URL", cfg.Server)
	}
	rep = &StreamsReport{
		Date: time.Now().UTC(),
		Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH,
			GoVersion: runtime.Version(), Load1: loadAverage()},
		Scenario: StreamsScenario{Clients: cfg.Clients, Proto: cfg.Proto, Rate: cfg.Rate, Events: cfg.Events,
			Duration: cfg.Duration.Seconds(), Batch: cfg.Batch, Workers: cfg.Workers, Size: cfg.Size,
			Idle: max(cfg.Idle, 0).Seconds()},
	}

	topic := "bench-streams." + randomHex(4)
	settings := client.TopicSettings{Retention: new(24 * time.Hour)}
	if cfg.Size > herald.DefaultMaxEventBytes {
		settings.MaxEventBytes = &cfg.Size
	}
	if _, _, err := hc.PutTopic(ctx, topic, settings); err != nil {
		return nil, fmt.Errorf("create topic %s: %w", topic, err)
	}
	rep.Topic = topic
	cfg.progress("created topic %s on %s", topic, hc.BaseURL())

	epoch := time.Now()
	fleet := newStreamsFleet(cfg, base, topic, epoch)
	defer func() {
		fleet.stop()
		if cfg.Keep {
			rep.Notes = append(rep.Notes, fmt.Sprintf("kept topic %s (--keep)", topic))
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := hc.DeleteTopic(cctx, topic); err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("cleanup: delete topic %s: %v", topic, err))
		}
	}()

	pid, pidErr := cfg.serverPID(base)
	if pidErr != nil {
		rep.Notes = append(rep.Notes, "no server RSS and CPU: "+pidErr.Error())
	} else if pid == os.Getpid() {
		rep.Notes = append(rep.Notes, "the server runs in this process: its RSS and CPU include the bench's")
	}
	server := newStreamsProcWatch(pid)
	self := newStreamsProcWatch(os.Getpid())
	stopSampling := startSampling(server, self)
	defer stopSampling()

	var baseline procSample
	if pid > 0 {
		if baseline, err = readProc(pid); err != nil {
			rep.Notes = append(rep.Notes, "no server RSS: "+err.Error())
			pid = 0
		}
	}

	// Connect.
	rep.Connections = fleet.connect(ctx)
	if rep.Connections.Failed > 0 || ctx.Err() != nil {
		if rep.Connections.Failed == 0 {
			rep.Connections.Error = "interrupted: " + context.Cause(ctx).Error()
		}
		stopSampling()
		rep.Server, rep.Bench = server.result(nil), self.result(nil)
		return rep, nil
	}

	// Hold idle, then read the RSS with every connection open.
	if cfg.Idle > 0 {
		cfg.progress("holding %d connections idle for %s", rep.Connections.Opened, cfg.Idle)
		t := time.NewTimer(cfg.Idle)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	if pid > 0 {
		if idle, err := readProc(pid); err != nil {
			rep.Notes = append(rep.Notes, "no server RSS: "+err.Error())
		} else {
			rep.Memory = &StreamsMemory{PID: pid, BaselineBytes: baseline.rss, IdleBytes: idle.rss}
			if n := rep.Connections.Opened; n > 0 {
				rep.Memory.PerConnBytes = float64(idle.rss-baseline.rss) / float64(n)
			}
			if idle.rss <= baseline.rss {
				rep.Notes = append(rep.Notes, "the server's RSS did not grow while connecting: the memory per connection stands out of the noise "+
					"(memory the runtime already held, or returned meanwhile) only with thousands of connections")
			}
		}
	}

	// Publish, and wait for every delivery.
	server.markWindow()
	self.markWindow()
	windowStart := time.Now()
	acked := newBitset(int64(cfg.Events))
	cfg.progress("publishing %d events at %g/s, %d per request, %d bytes, to %d clients", cfg.Events, cfg.Rate, cfg.Batch, cfg.Size, rep.Connections.Opened)
	pub := publisher{target: heraldTarget{c: hc, topic: topic}, epoch: epoch, events: int64(cfg.Events), batch: cfg.Batch,
		size: cfg.Size, rate: cfg.Rate, workers: cfg.Workers, duration: cfg.Duration, acked: acked}
	ps := pub.run(ctx)
	rep.Publishing = publishing(ps)
	rep.Expected = ps.Acked * int64(cfg.Clients)
	cfg.progress("published %d events in %.2fs; waiting up to %s for %d deliveries", ps.Acked, rep.PublishSeconds, cfg.Timeout, rep.Expected)
	rep.Lost = fleet.waitDelivered(ctx, acked, rep.Expected)
	rep.TimedOut = rep.Lost > 0
	rep.WindowSeconds = time.Since(windowStart).Seconds()
	stopSampling()
	rep.Server, rep.Bench = server.result(&windowStart), self.result(&windowStart)

	st := fleet.stats()
	rep.Delivered = rep.Expected - rep.Lost
	rep.Duplicates, rep.Malformed, rep.Gaps = st.duplicates, st.malformed, st.gaps
	rep.E2E = st.e2e
	rep.Disconnects, rep.DisconnectReasons, rep.Reconnects = st.disconnects, st.reasons, st.reconnects
	if st.last > ps.Start && st.unique > 0 {
		rep.DeliverySeconds = (st.last - ps.Start).Seconds()
		rep.DeliveryRate = float64(rep.Delivered) / rep.DeliverySeconds
	}
	if st.gaveUp > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d connections could not be reopened after the server ended them: %s", st.gaveUp, st.gaveUpErr))
	}
	return rep, nil
}

func (c StreamsConfig) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "bench streams: "+format+"\n", args...)
	}
}

// serverPID returns c.PID, or the process listening on the server's port
// when the server is on loopback.
func (c StreamsConfig) serverPID(base *url.URL) (int, error) {
	if c.PID > 0 {
		return c.PID, nil
	}
	if c.AllowRemote && checkLoopbackURL(context.Background(), base.String()) != nil {
		return 0, errors.New("the server is remote (pass --pid only when it runs here)")
	}
	port, err := strconv.Atoi(streamsPort(base))
	if err != nil {
		return 0, fmt.Errorf("cannot read the port of %q (pass --pid)", base)
	}
	return listenerPID(port)
}

// streamsPort returns the port of a URL, or its scheme's default.
func streamsPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// streamsProcWatch follows one process: its peak RSS over the run, and
// its CPU time from the start of the publish window.
type streamsProcWatch struct {
	pid int

	mu       sync.Mutex
	maxRSS   int64
	startCPU float64
	err      error
}

func newStreamsProcWatch(pid int) *streamsProcWatch {
	w := &streamsProcWatch{pid: pid}
	w.sample()
	return w
}

func (w *streamsProcWatch) sample() {
	w.read(func(s procSample) { w.maxRSS = max(w.maxRSS, s.rss) })
}

// markWindow records the CPU time at the start of the window.
func (w *streamsProcWatch) markWindow() {
	w.read(func(s procSample) { w.startCPU = s.cpu })
}

// read reads the process and hands the sample to use under the lock, or
// records the error.
func (w *streamsProcWatch) read(use func(procSample)) {
	if w.pid <= 0 {
		return
	}
	s, err := readProc(w.pid)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.err = err
		return
	}
	use(s)
}

// result returns the process's figures; windowStart nil: no window (CPU
// left out). It returns nil when the process could not be read.
func (w *streamsProcWatch) result(windowStart *time.Time) *StreamsProc {
	if w.pid <= 0 {
		return nil
	}
	s, err := readProc(w.pid)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil || w.err != nil {
		return nil
	}
	p := &StreamsProc{PID: w.pid, RSSMaxBytes: max(w.maxRSS, s.rss)}
	if windowStart != nil {
		p.CPUSeconds = s.cpu - w.startCPU
		if wall := time.Since(*windowStart).Seconds(); wall > 0 {
			p.CPUCores = p.CPUSeconds / wall
		}
	}
	return p
}

// streamsFleet owns the stream connections of a run: it opens them,
// each read by a goroutine of its own, records what they receive, and
// closes them in stop.
type streamsFleet struct {
	cfg     StreamsConfig
	base    *url.URL
	topic   string
	epoch   time.Time
	ctx     context.Context // ends at stop: cancels connection attempts
	cancel  context.CancelFunc
	clients []*streamsClient
	shards  [streamsShards]*streamsShard
	wg      sync.WaitGroup
	closing atomic.Bool

	mu          sync.Mutex
	disconnects int64
	reasons     map[string]int64
	reconnects  int64
	gaveUp      int64
	gaveUpErr   string
}

// streamsShard holds what a share of the connections received.
type streamsShard struct {
	mu         sync.Mutex
	e2e        *histogram
	unique     int64
	duplicates int64
	malformed  int64
	gaps       int64
	last       time.Duration // since epoch, of the last unique delivery
	_          [64]byte      // keep shards off each other's cache lines
}

func newStreamsFleet(cfg StreamsConfig, base *url.URL, topic string, epoch time.Time) *streamsFleet {
	f := &streamsFleet{cfg: cfg, base: base, topic: topic, epoch: epoch, reasons: map[string]int64{}}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	for i := range f.shards {
		f.shards[i] = &streamsShard{e2e: newHistogram()}
	}
	return f
}

// connect opens every connection, cfg.Dialers at a time, and returns once
// each is subscribed, or at the first failure (the attempts in flight are
// cancelled and no more are made), or when ctx ends.
func (f *streamsFleet) connect(ctx context.Context) StreamsConnections {
	res := StreamsConnections{Wanted: f.cfg.Clients}
	for i := range f.cfg.Clients {
		if f.cfg.Proto == ProtoSSE || (f.cfg.Proto == ProtoMixed && i%2 == 1) {
			res.SSE++
		} else {
			res.WS++
		}
	}
	f.cfg.progress("opening %d connections (%d WebSocket, %d SSE), %d at a time", res.Wanted, res.WS, res.SSE, f.cfg.Dialers)
	var (
		hist     = newHistogram()
		opened   atomic.Int64
		failed   atomic.Int64
		errOnce  sync.Once
		firstErr error
		pending  sync.WaitGroup
	)
	cctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	stopOnCtx := context.AfterFunc(ctx, cancel)
	defer stopOnCtx()

	sem := make(chan struct{}, f.cfg.Dialers)
	start := time.Now()
	lastNote := start
dial:
	for i := range f.cfg.Clients {
		select {
		case sem <- struct{}{}:
		case <-cctx.Done():
			break dial
		}
		if time.Since(lastNote) >= 5*time.Second {
			lastNote = time.Now()
			f.cfg.progress("connecting: %d of %d open", opened.Load(), res.Wanted)
		}
		c := &streamsClient{f: f, i: i, ws: !(f.cfg.Proto == ProtoSSE || (f.cfg.Proto == ProtoMixed && i%2 == 1)),
			shard: f.shards[i%streamsShards], got: newBitset(int64(f.cfg.Events))}
		f.clients = append(f.clients, c)
		pending.Add(1)
		f.wg.Go(func() {
			t0 := time.Now()
			err := c.connect(cctx)
			if err == nil {
				hist.record(time.Since(t0))
				opened.Add(1)
			} else if cctx.Err() == nil { // not one of the attempts cancelled after a failure
				failed.Add(1)
				errOnce.Do(func() { firstErr = err })
				cancel()
			}
			<-sem
			pending.Done()
			if err == nil {
				c.serve()
			}
		})
	}
	pending.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.Opened, res.Failed = int(opened.Load()), int(failed.Load())
	res.Latency = hist.summary()
	if firstErr != nil {
		res.Error, res.LimitRefused = f.explain(firstErr)
		f.cfg.progress("a connection failed with %d of %d open: %s", res.Opened, res.Wanted, res.Error)
	} else {
		f.cfg.progress("opened %d connections in %.2fs", res.Opened, res.Seconds)
	}
	return res
}

// explain turns a connection failure into a message that says what to
// do, and reports whether it was the server's per-key limit.
func (f *streamsFleet) explain(err error) (string, bool) {
	msg := err.Error()
	if p, ok := errors.AsType[*client.Problem](err); ok && p.Status == http.StatusTooManyRequests {
		return fmt.Sprintf("%s; the server limits open streams per API key: raise its stream.max-conns-per-key setting "+
			"(flag --stream.max-conns-per-key, env HERALD_STREAM_MAX_CONNS_PER_KEY) to at least %d, plus the key's other streams", msg, f.cfg.Clients), true
	}
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
		return msg + "; this process ran out of file descriptors: raise its limit (ulimit -n)", false
	}
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		return msg + "; this machine ran out of ephemeral ports (net.ipv4.ip_local_port_range)", false
	}
	return msg, false
}

// stop closes every connection and waits for their goroutines. It is
// idempotent.
func (f *streamsFleet) stop() {
	f.closing.Store(true)
	f.cancel()
	for _, c := range f.clients {
		c.close()
	}
	f.wg.Wait()
}

// waitDelivered waits until every acknowledged event reached every
// connection, cfg.Timeout passes or ctx ends, and returns how many
// (event, connection) pairs are still missing.
func (f *streamsFleet) waitDelivered(ctx context.Context, acked *bitset, want int64) int64 {
	return waitAll(ctx, f.cfg.Timeout, want, f.cfg.progress, f.unique, func() int64 {
		var m int64
		for _, c := range f.clients {
			m += c.got.missing(acked)
		}
		return m
	})
}

func (f *streamsFleet) unique() int64 {
	var n int64
	for _, s := range f.shards {
		s.mu.Lock()
		n += s.unique
		s.mu.Unlock()
	}
	return n
}

// streamsStats is what the fleet's connections received.
type streamsStats struct {
	unique, duplicates, malformed, gaps int64
	last                                time.Duration
	e2e                                 Latency
	disconnects, reconnects, gaveUp     int64
	gaveUpErr                           string
	reasons                             map[string]int64
}

func (f *streamsFleet) stats() streamsStats {
	var st streamsStats
	merged := newHistogram()
	for _, s := range f.shards {
		s.mu.Lock()
		st.unique += s.unique
		st.duplicates += s.duplicates
		st.malformed += s.malformed
		st.gaps += s.gaps
		st.last = max(st.last, s.last)
		s.e2e.mu.Lock()
		merged.h.Merge(s.e2e.h)
		s.e2e.mu.Unlock()
		s.mu.Unlock()
	}
	st.e2e = merged.summary()
	f.mu.Lock()
	defer f.mu.Unlock()
	st.disconnects, st.reconnects, st.gaveUp, st.gaveUpErr = f.disconnects, f.reconnects, f.gaveUp, f.gaveUpErr
	if len(f.reasons) > 0 {
		st.reasons = maps.Clone(f.reasons)
	}
	return st
}

// disconnected counts a connection the server or the network ended.
func (f *streamsFleet) disconnected(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disconnects++
	if _, ok := f.reasons[reason]; !ok && len(f.reasons) >= streamsMaxReasons {
		reason = "other"
	}
	f.reasons[reason]++
}

// streamsClient is one stream connection. Its fields after the first
// block are used only by its own goroutine, except nc under mu.
type streamsClient struct {
	f     *streamsFleet
	i     int
	ws    bool
	shard *streamsShard
	got   *bitset // event numbers received

	mu sync.Mutex
	nc net.Conn // the open connection; nil between connections

	br      *bufio.Reader
	lastSeq int64  // the seq of the last event received: where to resume
	msg     []byte // a message in fragments, or an SSE line too long for br
	big     []byte // a frame too large for br
	out     []byte // scratch for frames to the server
	sseKind sseKind
	sseID   int64 // the pending SSE "id:"; -1: none
	ended   string
}

// sseKind is the kind of SSE message being read, from its "event:" line.
type sseKind uint8

const (
	sseEvent sseKind = iota // an event of the topic
	sseGap
	sseDisconnect
	sseOther // an event of Herald's the bench does not know
)

// errStreamsClosing ends a connection attempt the run no longer wants.
var errStreamsClosing = errors.New("the run is ending")

// connect opens the connection and subscribes, from the first event or,
// on a reconnection, after the last one received.
func (c *streamsClient) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, streamsConnectTimeout)
	defer cancel()
	nc, err := c.f.dial(ctx)
	if err != nil {
		return err
	}
	// Until the subscription is in place, the attempt's context and
	// deadline bound every read and write.
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	if d, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(d)
	}
	if c.br == nil {
		c.br = bufio.NewReaderSize(nc, streamsReadBuffer)
	} else {
		c.br.Reset(nc)
	}
	if c.ws {
		err = c.handshakeWS(nc)
	} else {
		err = c.handshakeSSE(nc)
	}
	if !stop() && err == nil {
		err = context.Cause(ctx)
	}
	if err != nil {
		_ = nc.Close()
		// When the attempt ran out of time or was cancelled, the read error
		// says only that the connection closed.
		if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%s: no answer from the server within %s", c.proto(), streamsConnectTimeout)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", c.proto(), context.Cause(ctx))
		}
		return fmt.Errorf("%s: %w", c.proto(), err)
	}
	_ = nc.SetDeadline(time.Time{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f.closing.Load() {
		_ = nc.Close()
		return errStreamsClosing
	}
	c.nc = nc
	return nil
}

func (c *streamsClient) proto() string {
	if c.ws {
		return "WebSocket"
	}
	return "SSE"
}

// close closes the connection, which ends its reader.
func (c *streamsClient) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		_ = c.nc.Close()
	}
}

// serve reads the connection until the run ends, reopening it (from the
// last seq received) when the server or the network ends it.
func (c *streamsClient) serve() {
	for {
		var reason string
		if c.ws {
			reason = c.readWS()
		} else {
			reason = c.readSSE()
		}
		c.mu.Lock()
		_ = c.nc.Close()
		c.nc = nil
		c.mu.Unlock()
		if c.f.closing.Load() {
			return
		}
		c.f.disconnected(reason)
		if !c.reconnect() {
			return
		}
	}
}

// reconnect reopens the connection with a growing pause, up to
// streamsRetries times; it reports whether it succeeded.
func (c *streamsClient) reconnect() bool {
	wait := 50 * time.Millisecond
	var err error
	for range streamsRetries {
		t := time.NewTimer(wait + rand.N(wait))
		select {
		case <-t.C:
		case <-c.f.ctx.Done():
			t.Stop()
			return false
		}
		if err = c.connect(c.f.ctx); err == nil {
			c.f.mu.Lock()
			c.f.reconnects++
			c.f.mu.Unlock()
			return true
		}
		if c.f.closing.Load() {
			return false
		}
		wait = min(2*wait, 2*time.Second)
	}
	msg, _ := c.f.explain(err)
	c.f.mu.Lock()
	c.f.gaveUp++
	if c.f.gaveUpErr == "" {
		c.f.gaveUpErr = msg
	}
	c.f.mu.Unlock()
	return false
}

// dial opens a TCP (or, for https, TLS) connection to the server.
func (f *streamsFleet) dial(ctx context.Context) (net.Conn, error) {
	host := f.base.Hostname()
	addr := net.JoinHostPort(host, streamsPort(f.base))
	d := net.Dialer{Timeout: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if f.base.Scheme != "https" {
		return nc, nil
	}
	tc := tls.Client(nc, &tls.Config{ServerName: host, NextProtos: []string{"http/1.1"}})
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}

// writeRequest writes a GET request for path (below the server's base
// path) with the API key and extra header lines ("Name: value\r\n").
func (c *streamsClient) writeRequest(nc net.Conn, path, extra string) error {
	f := c.f
	var b strings.Builder
	b.WriteString("GET " + strings.TrimRight(f.base.EscapedPath(), "/") + path + " HTTP/1.1\r\n")
	b.WriteString("Host: " + f.base.Host + "\r\n")
	b.WriteString("User-Agent: herald-bench/" + herald.Version + "\r\n")
	if f.cfg.Key != "" {
		b.WriteString("Authorization: Bearer " + f.cfg.Key + "\r\n")
	}
	b.WriteString(extra)
	b.WriteString("\r\n")
	_, err := io.WriteString(nc, b.String())
	return err
}

// streamsRefusal reads a refused stream's problem (or status) as an error.
func streamsRefusal(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	p := &client.Problem{}
	if json.Unmarshal(body, p) != nil || p.Status == 0 {
		p = &client.Problem{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode), Detail: strings.TrimSpace(string(body))}
		if len(p.Detail) > 200 {
			p.Detail = p.Detail[:200] + "..."
		}
	}
	return fmt.Errorf("the server refused the stream: %w", p)
}

// wsGUID is the RFC 6455 constant of the opening handshake.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// WebSocket opcodes.
const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xA
)

// handshakeWS upgrades the connection, subscribes to the topic, and reads
// until the subscription is acknowledged.
//
// The bench speaks WebSocket itself rather than through a library: one
// client machine holds tens of thousands of connections and reads
// hundreds of thousands of frames a second, so each frame is read in place
// from the connection's buffer, with no allocation, no context and no
// goroutine of its own.
func (c *streamsClient) handshakeWS(nc net.Conn) error {
	var nonce [16]byte
	binary.LittleEndian.PutUint64(nonce[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(nonce[8:], rand.Uint64())
	key := base64.StdEncoding.EncodeToString(nonce[:])
	extra := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n"
	if err := c.writeRequest(nc, "/v1/stream", extra); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return fmt.Errorf("read the upgrade response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return streamsRefusal(resp)
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return errors.New("the server's upgrade response has a wrong Sec-WebSocket-Accept")
	}
	sub := fmt.Appendf(nil, `{"op":"subscribe","id":"b","topic":%q,"since":%d}`, c.f.topic, c.lastSeq)
	if err := c.writeFrame(nc, wsText, sub); err != nil {
		return err
	}
	for {
		msg, err := c.nextMessage(nc)
		if err != nil {
			return err
		}
		acked, err := c.wsMessage(msg)
		if err != nil || acked {
			return err
		}
	}
}

// readWS reads messages until the connection ends and returns why it did.
func (c *streamsClient) readWS() string {
	nc := c.conn()
	for {
		msg, err := c.nextMessage(nc)
		if err != nil {
			return c.endReason(err)
		}
		if _, err := c.wsMessage(msg); err != nil {
			return err.Error()
		}
	}
}

func (c *streamsClient) conn() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nc
}

// errStreamsServerClosed reports a close frame; c.ended has its code and reason.
var errStreamsServerClosed = errors.New("closed by the server")

// endReason names why a connection ended: the server's close code and
// reason, its herald.disconnect event, or the read error.
func (c *streamsClient) endReason(err error) string {
	if c.ended != "" {
		r := c.ended
		c.ended = ""
		return r
	}
	if errors.Is(err, io.EOF) {
		return "connection closed by the server without a reason"
	}
	return err.Error()
}

// nextMessage returns the next text message, answering pings and
// assembling fragments on the way. The message is valid until the next
// call.
func (c *streamsClient) nextMessage(nc net.Conn) ([]byte, error) {
	fragmented := false
	for {
		op, fin, p, err := c.readFrame()
		if err != nil {
			return nil, err
		}
		switch op {
		case wsPing:
			if err := c.writeFrame(nc, wsPong, p); err != nil {
				return nil, err
			}
		case wsPong:
		case wsClose:
			reason := "close without a status"
			if len(p) >= 2 {
				reason = fmt.Sprintf("close %d", binary.BigEndian.Uint16(p))
				if len(p) > 2 {
					reason += ": " + string(p[2:])
				}
				_ = c.writeFrame(nc, wsClose, p[:2]) // echo the code, as the protocol asks
			}
			c.ended = reason
			return nil, errStreamsServerClosed
		case wsText, wsBinary:
			if fin && !fragmented {
				return p, nil
			}
			c.msg = append(c.msg[:0], p...)
			fragmented = true
		case wsContinuation:
			if !fragmented {
				return nil, errors.New("a continuation frame without a message to continue")
			}
			if len(c.msg)+len(p) > streamsMaxMessage {
				return nil, fmt.Errorf("a message of more than %d bytes", streamsMaxMessage)
			}
			c.msg = append(c.msg, p...)
			if fin {
				return c.msg, nil
			}
		default:
			return nil, fmt.Errorf("unknown WebSocket opcode %#x", op)
		}
	}
}

// readFrame reads one frame. Its payload is valid until the next read:
// it lies in the read buffer when it fits there, else in c.big.
func (c *streamsClient) readFrame() (op byte, fin bool, p []byte, err error) {
	h, err := c.br.Peek(2)
	if err != nil {
		return 0, false, nil, err
	}
	b0, b1 := h[0], h[1]
	_, _ = c.br.Discard(2)
	if b1&0x80 != 0 {
		return 0, false, nil, errors.New("the server sent a masked frame")
	}
	n := uint64(b1 & 0x7f)
	switch n {
	case 126:
		x, err := c.br.Peek(2)
		if err != nil {
			return 0, false, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(x))
		_, _ = c.br.Discard(2)
	case 127:
		x, err := c.br.Peek(8)
		if err != nil {
			return 0, false, nil, err
		}
		n = binary.BigEndian.Uint64(x)
		_, _ = c.br.Discard(8)
	}
	if n > streamsMaxMessage {
		return 0, false, nil, fmt.Errorf("a frame of %d bytes; the bench reads at most %d", n, streamsMaxMessage)
	}
	if int(n) <= c.br.Size() {
		p, err = c.br.Peek(int(n))
		if err != nil {
			return 0, false, nil, err
		}
		_, _ = c.br.Discard(int(n))
	} else {
		// Rare: larger than the read buffer.
		c.big = slices.Grow(c.big[:0], int(n))[:n]
		if _, err := io.ReadFull(c.br, c.big); err != nil {
			return 0, false, nil, err
		}
		p = c.big
	}
	return b0 & 0x0f, b0&0x80 != 0, p, nil
}

// writeFrame writes one masked frame, as a client must.
func (c *streamsClient) writeFrame(nc net.Conn, op byte, payload []byte) error {
	c.out = appendClientFrame(c.out[:0], op, payload)
	_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := nc.Write(c.out)
	return err
}

// appendClientFrame appends a final frame with the payload masked by a
// random key.
func appendClientFrame(b []byte, op byte, payload []byte) []byte {
	b = append(b, 0x80|op)
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	b = append(b, key[:]...)
	for i, x := range payload {
		b = append(b, x^key[i&3])
	}
	return b
}

// Prefixes of the WebSocket messages the bench reads.
var (
	wsEventPrefix = []byte(`{"op":"event",`)
	wsSeqKey      = []byte(`"seq":`)
	wsDataKey     = []byte(`"data":`)
)

// wsMessage handles one message from the server: it records an event, and
// reports whether the message acknowledged the subscription. An error
// message is returned as an error (a *client.Problem).
func (c *streamsClient) wsMessage(msg []byte) (acked bool, err error) {
	if bytes.HasPrefix(msg, wsEventPrefix) {
		c.wsEvent(msg)
		return false, nil
	}
	var m struct {
		Op    string          `json:"op"`
		Error *client.Problem `json:"error"`
	}
	if err := json.Unmarshal(msg, &m); err != nil {
		return false, fmt.Errorf("a message that is not JSON: %.100q", msg)
	}
	switch m.Op {
	case "subscribed":
		return true, nil
	case "error":
		if m.Error == nil {
			m.Error = &client.Problem{Detail: "an error message without a problem"}
		}
		return false, fmt.Errorf("the server refused the subscription: %w", m.Error)
	case "gap":
		c.shard.mu.Lock()
		c.shard.gaps++
		c.shard.mu.Unlock()
	}
	return false, nil
}

// wsEvent records an event frame: it finds the seq and the payload (the
// JSON object under "data", which the server writes after every other
// field but headers) by scanning, not decoding.
func (c *streamsClient) wsEvent(msg []byte) {
	if i := bytes.Index(msg, wsSeqKey); i >= 0 {
		if seq, ok := streamsScanUint(msg[i+len(wsSeqKey):]); ok {
			c.lastSeq = max(c.lastSeq, seq)
		}
	}
	i := bytes.Index(msg, wsDataKey)
	if i < 0 {
		c.malformed()
		return
	}
	p, ok := parsePayload(msg[i+len(wsDataKey):])
	if !ok {
		c.malformed()
		return
	}
	c.record(p)
}

// streamsScanUint reads the decimal digits that start b.
func streamsScanUint(b []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(b) && i < 19 && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int64(b[i]-'0')
	}
	return n, i > 0
}

// record counts the delivery of an event and its latency.
func (c *streamsClient) record(p payload) {
	now := time.Since(c.f.epoch)
	added, ok := c.got.add(p.N)
	s := c.shard
	s.mu.Lock()
	switch {
	case !ok:
		s.malformed++
	case added:
		s.unique++
		s.last = max(s.last, now)
		s.e2e.record(now - time.Duration(p.T))
	default:
		s.duplicates++
	}
	s.mu.Unlock()
}

func (c *streamsClient) malformed() {
	c.shard.mu.Lock()
	c.shard.malformed++
	c.shard.mu.Unlock()
}

// handshakeSSE requests the stream, after the last seq received (0: from
// the first event); the stream is subscribed once the response headers
// come.
func (c *streamsClient) handshakeSSE(nc net.Conn) error {
	path := "/v1/topics/" + c.f.topic + "/stream?since=" + strconv.FormatInt(c.lastSeq, 10)
	if err := c.writeRequest(nc, path, "Accept: text/event-stream\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return fmt.Errorf("read the stream's response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return streamsRefusal(resp)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return fmt.Errorf("the stream's response is %q, not text/event-stream", ct)
	}
	if len(resp.TransferEncoding) > 0 {
		// Chunked (a proxy in between): read the decoded body. Herald
		// itself sends a plain stream, read straight from the buffer.
		c.br = bufio.NewReaderSize(resp.Body, streamsReadBuffer)
	}
	c.sseKind, c.sseID = sseEvent, -1
	return nil
}

// SSE field prefixes.
var (
	sseData  = []byte("data:")
	sseEvt   = []byte("event:")
	sseIDKey = []byte("id:")
)

// readSSE reads the stream until it ends and returns why it did.
func (c *streamsClient) readSSE() string {
	for {
		line, err := c.readLine()
		if err != nil {
			return c.endReason(err)
		}
		switch {
		case len(line) == 0: // the end of a message
			if c.sseID >= 0 {
				c.lastSeq = c.sseID
			}
			c.sseKind, c.sseID = sseEvent, -1
		case line[0] == ':': // a heartbeat
		case bytes.HasPrefix(line, sseData):
			c.sseDataLine(sseFieldValue(line[len(sseData):]))
		case bytes.HasPrefix(line, sseEvt):
			switch v := sseFieldValue(line[len(sseEvt):]); {
			case string(v) == "herald.disconnect":
				c.sseKind = sseDisconnect
			case string(v) == "herald.gap":
				c.sseKind = sseGap
			case bytes.HasPrefix(v, []byte("herald.")):
				c.sseKind = sseOther
			default:
				c.sseKind = sseEvent
			}
		case bytes.HasPrefix(line, sseIDKey):
			if n, ok := streamsScanUint(sseFieldValue(line[len(sseIDKey):])); ok {
				c.sseID = n
			}
		}
	}
}

// sseDataLine handles a "data:" line of the current message. Benchmark
// payloads are one line of JSON.
func (c *streamsClient) sseDataLine(v []byte) {
	switch c.sseKind {
	case sseEvent:
		p, ok := parsePayload(v)
		if !ok {
			c.malformed()
			return
		}
		c.record(p)
	case sseGap:
		c.shard.mu.Lock()
		c.shard.gaps++
		c.shard.mu.Unlock()
	case sseDisconnect:
		var d struct{ Code, Reason string }
		if json.Unmarshal(v, &d) == nil {
			c.ended = "herald.disconnect " + d.Code + ": " + d.Reason
		} else {
			c.ended = "herald.disconnect"
		}
	}
}

// sseFieldValue strips the one space that may follow an SSE field's colon.
func sseFieldValue(v []byte) []byte {
	if len(v) > 0 && v[0] == ' ' {
		return v[1:]
	}
	return v
}

// readLine returns the next line without its end ("\n" or "\r\n"), valid
// until the next read.
func (c *streamsClient) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		c.msg = append(c.msg[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(c.msg) > streamsMaxMessage {
				return nil, fmt.Errorf("an SSE line of more than %d bytes", streamsMaxMessage)
			}
			line, err = c.br.ReadSlice('\n')
			c.msg = append(c.msg, line...)
		}
		line = c.msg
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// Summary returns the report in one line, such as
// "streams: 1000 ws clients, 100 events at 10/s: 100000 of 100000 delivered (lost 0, duplicates 0), 9994/s, e2e p50 1.20 ms p99 4.10 ms max 12.0 ms, server 14.2 KiB/conn, CPU server 0.41 cores, bench 0.22 cores".
func (r *StreamsReport) Summary() string {
	var b strings.Builder
	cn := r.Connections
	fmt.Fprintf(&b, "streams: %d %s clients", cn.Wanted, r.Scenario.Proto)
	if cn.Failed > 0 || cn.Opened < cn.Wanted {
		fmt.Fprintf(&b, ": %d opened, %d failed: %s", cn.Opened, cn.Failed, cn.Error)
		return b.String() + "\n"
	}
	fmt.Fprintf(&b, ", %d events at %s/s: %d of %d delivered (lost %d, duplicates %d), %s/s, e2e p50 %s p99 %s max %s",
		r.Published, rate(r.Scenario.Rate), r.Delivered, r.Expected, r.Lost, r.Duplicates,
		rate(r.DeliveryRate), ms(r.E2E.P50), ms(r.E2E.P99), ms(r.E2E.Max))
	if r.Disconnects > 0 {
		fmt.Fprintf(&b, ", %d disconnects", r.Disconnects)
	}
	if r.Memory != nil {
		fmt.Fprintf(&b, ", server %s/conn", streamsKiB(r.Memory.PerConnBytes))
	}
	if r.Server != nil || r.Bench != nil {
		b.WriteString(", CPU")
		if r.Server != nil {
			fmt.Fprintf(&b, " server %.2f cores", r.Server.CPUCores)
		}
		if r.Bench != nil {
			fmt.Fprintf(&b, " bench %.2f cores", r.Bench.CPUCores)
		}
	}
	return b.String() + "\n"
}

// WriteText writes the summary line, a table of the figures, and the notes.
func (r *StreamsReport) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString(r.Summary())
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(name, format string, args ...any) { fmt.Fprintf(tw, name+"\t"+format+"\n", args...) }
	cn := r.Connections
	row("topic", "%s", r.Topic)
	row("connections", "%d of %d opened (%d WebSocket, %d SSE), %d failed, in %.2f s", cn.Opened, cn.Wanted, cn.WS, cn.SSE, cn.Failed, cn.Seconds)
	row("connect p50/p99/max", "%s", triple(cn.Latency))
	if cn.Error != "" {
		row("connect error", "%s", cn.Error)
	}
	if m := r.Memory; m != nil {
		row("server RSS", "%s before, %s idle with every connection open", mib(m.BaselineBytes), mib(m.IdleBytes))
		row("server RSS per conn", "%s", streamsKiB(m.PerConnBytes))
	}
	if cn.Failed == 0 && cn.Opened == cn.Wanted {
		s := fmt.Sprintf("%d events", r.Published)
		if r.PublishFailed > 0 {
			s += fmt.Sprintf(" (%d failed: %s)", r.PublishFailed, r.PublishError)
		}
		row("published", "%s in %.2f s, %s/s, %d per request", s, r.PublishSeconds, rate(r.PublishRate), r.Scenario.Batch)
		row("publish p50/p99/max", "%s", triple(r.PublishLatency))
		row("delivered", "%d of %d", r.Delivered, r.Expected)
		row("lost", "%d", r.Lost)
		row("duplicates", "%d", r.Duplicates)
		if r.Malformed > 0 || r.Gaps > 0 {
			row("malformed / gaps", "%d / %d", r.Malformed, r.Gaps)
		}
		row("delivery rate", "%s/s over %.2f s", rate(r.DeliveryRate), r.DeliverySeconds)
		row("e2e p50/p90/p99", "%s / %s / %s", ms(r.E2E.P50), ms(r.E2E.P90), ms(r.E2E.P99))
		row("e2e p99.9/max", "%s / %s", ms(r.E2E.P999), ms(r.E2E.Max))
		row("disconnects", "%d (%d reopened)", r.Disconnects, r.Reconnects)
		for _, k := range slices.Sorted(maps.Keys(r.DisconnectReasons)) {
			row("  disconnect reason", "%d × %s", r.DisconnectReasons[k], k)
		}
	}
	proc := func(name string, p *StreamsProc) {
		if p == nil {
			row(name, "-")
			return
		}
		if r.WindowSeconds > 0 {
			row(name, "%.2f cores (%.1f s CPU over %.1f s), RSS max %s", p.CPUCores, p.CPUSeconds, r.WindowSeconds, mib(p.RSSMaxBytes))
		} else {
			row(name, "RSS max %s", mib(p.RSSMaxBytes))
		}
	}
	proc("server", r.Server)
	proc("bench", r.Bench)
	_ = tw.Flush()
	fmt.Fprintf(&b, "\nmachine: %d CPUs, %s/%s, %s, load %.2f at start; %s\n",
		r.Machine.CPUs, r.Machine.OS, r.Machine.Arch, r.Machine.GoVersion, r.Machine.Load1, r.Date.UTC().Format(time.RFC3339))
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as indented JSON.
func (r *StreamsReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// Problems returns what went wrong in the run, one phrase each: failed
// connections, failed publishes, lost deliveries; none when nothing did.
func (r *StreamsReport) Problems() []string {
	var out []string
	cn := r.Connections
	if cn.Failed > 0 || cn.Opened < cn.Wanted {
		msg := fmt.Sprintf("%d of %d connections opened", cn.Opened, cn.Wanted)
		if cn.Error != "" {
			msg += ": " + cn.Error
		}
		return append(out, msg)
	}
	switch {
	case r.PublishFailed > 0:
		out = append(out, fmt.Sprintf("%d events failed to publish: %s", r.PublishFailed, r.PublishError))
	case r.Published == 0:
		out = append(out, "nothing was published")
	}
	if r.Lost > 0 {
		out = append(out, fmt.Sprintf("%d of %d deliveries lost", r.Lost, r.Expected))
	}
	return out
}

func streamsKiB(b float64) string { return fmt.Sprintf("%.1f KiB", b/(1<<10)) }
