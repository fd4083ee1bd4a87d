// Package bench is Herald's benchmark: the load generator and receiver
// behind "herald bench" and docs/benchmarks.md.
//
// A run creates a fresh topic and webhook subscriptions on a running
// Herald, all pointing at an in-process Sink, publishes events with an
// open-loop or flat-out publisher, waits (with a deadline) until every
// acknowledged event reached every subscription, and reports publish rate
// and latency, delivery rate, end-to-end latency (HdrHistogram, measured
// from each event's intended publish time), lost and duplicated
// deliveries, and the server's memory and CPU. Against several nodes
// sharing one PostgreSQL it spreads the publishes over all of them and
// reports each node's memory and CPU and their sum. Beside them it reports
// the CPU of the database's processes (Config.DBProcess), its own and the
// whole machine's, so a report shows where the machine's CPU went. A raw
// run replaces Herald with a Relay, a minimal in-process HTTP forwarder
// with no storage, so a report can state Herald's delivery rate as a
// fraction of what the same machine, publisher and sink reach with nothing
// in between but HTTP.
//
// Every phase is bounded: publishing by event count and Config.Duration,
// waiting by Config.Timeout. It talks only to loopback addresses unless
// Config.AllowRemote is set.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/webhook"
)

// Run runs the benchmark cfg describes and returns its report. Errors in
// cfg are *herald.Error values with CodeInvalid naming the flag at fault
// (all of them, joined). Failing to set up (the server unreachable, the key
// refused) is an error; what happens once the load runs (failed publishes,
// lost events, a timeout) is in the report, not an error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(ctx); err != nil {
		return nil, err
	}
	rep := &Report{
		Date: time.Now().UTC(),
		Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH,
			GoVersion: runtime.Version(), Load1: loadAverage()},
		Scenario: Scenario{Events: cfg.Events, Rate: cfg.Rate, Workers: cfg.Workers, Batch: cfg.Batch, Size: cfg.Size,
			Subscriptions: cfg.Subscriptions, MaxInFlight: cfg.MaxInFlight, Verification: cfg.Verification,
			FailRate: cfg.FailRate, Backlog: cfg.Backlog},
	}
	if cfg.Backlog > 0 {
		rep.Scenario.BacklogVia = cfg.BacklogVia
	}
	if cfg.Raw || cfg.CompareRaw {
		res, err := cfg.runRaw(ctx)
		if err != nil {
			return nil, err
		}
		rep.Raw = res
	}
	if !cfg.Raw {
		res, err := cfg.runHerald(ctx)
		if err != nil {
			return nil, err
		}
		rep.Herald = res
	}
	if rep.Raw != nil && rep.Herald != nil && rep.Raw.DeliveryRate > 0 {
		rep.RawRatio = rep.Herald.DeliveryRate / rep.Raw.DeliveryRate
	}
	return rep, nil
}

func (c Config) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "bench: "+format+"\n", args...)
	}
}

// runParts is what measure needs of a system under test.
type runParts struct {
	system string
	epoch  time.Time
	sink   *Sink
	target publishTarget
	// servers are the URLs of the servers measured and pids their
	// processes (0: not found), for their RSS and CPU; none for the relay.
	servers []string
	pids    []int
	// hold makes the endpoints stop taking events before a backlog is
	// published, and release makes them take them again; nil when there
	// is no backlog.
	hold, release func(ctx context.Context) error
}

// runRaw measures the raw relay.
func (c Config) runRaw(ctx context.Context) (*Result, error) {
	epoch := time.Now()
	sink := NewSink(SinkConfig{Endpoints: c.Subscriptions, MaxEvents: int64(c.Events), Addr: c.SinkAddr, Epoch: epoch, FailRate: c.FailRate, FailEndpoints: c.FailEndpoints})
	if err := sink.Start(ctx); err != nil {
		return nil, err
	}
	defer stopWithin(sink.Stop)
	base := c.sinkBase(sink)
	rc := RelayConfig{MaxInFlight: c.MaxInFlight, MaxAttempts: c.Retry.MaxAttempts, RetryInitial: c.Retry.Initial, RetryMax: c.Retry.Max}
	for i := range c.Subscriptions {
		secret := webhook.NewSecret()
		if err := sink.SetSecret(i, secret); err != nil {
			return nil, err
		}
		rc.Endpoints = append(rc.Endpoints, base+EndpointPath(i))
		rc.Secrets = append(rc.Secrets, secret)
	}
	relay, err := NewRelay(rc)
	if err != nil {
		return nil, err
	}
	if err := relay.Start(ctx); err != nil {
		return nil, err
	}
	defer stopWithin(relay.Stop)
	c.progress("raw relay at %s forwarding to %d endpoints at %s", relay.URL(), c.Subscriptions, base)
	pubClient := publisherHTTPClient(c.Workers)
	res := c.measure(ctx, runParts{system: "raw", epoch: epoch, sink: sink, target: rawTarget{hc: pubClient, url: relay.URL()}})
	// Close the publisher's connections first: the relay's Shutdown waits
	// for connections that were dialed but never used.
	pubClient.CloseIdleConnections()
	if d := relay.Stats().Dropped; d > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("the relay gave up on %d deliveries after %d attempts", d, c.Retry.MaxAttempts))
	}
	return res, nil
}

// runHerald measures the Herald at c.Server, or the nodes at c.Servers: it
// creates a topic and the subscriptions through the first, runs the load
// over all of them, and deletes what it created.
func (c Config) runHerald(ctx context.Context) (res *Result, _ error) {
	servers := c.servers()
	clients := make([]*client.Client, len(servers))
	for i, s := range servers {
		// One HTTP client each, so every node gets its own keep-alive pool.
		clients[i] = client.New(s, client.WithKey(c.Key), client.WithUserAgent("herald-bench/"+herald.Version),
			client.WithHTTPClient(publisherHTTPClient(c.Workers)))
		defer clients[i].CloseIdleConnections()
	}
	hc := clients[0]
	epoch := time.Now()
	sink := NewSink(SinkConfig{Endpoints: c.Subscriptions, MaxEvents: int64(c.Events), Addr: c.SinkAddr, Epoch: epoch, FailRate: c.FailRate, FailEndpoints: c.FailEndpoints})
	if err := sink.Start(ctx); err != nil {
		return nil, err
	}
	defer stopWithin(sink.Stop)
	base := c.sinkBase(sink)

	topic := "bench." + randomHex(4)
	settings := client.TopicSettings{Retention: new(24 * time.Hour)}
	if c.Size > herald.DefaultMaxEventBytes {
		settings.MaxEventBytes = &c.Size
	}
	if _, _, err := hc.PutTopic(ctx, topic, settings); err != nil {
		return nil, fmt.Errorf("create topic %s: %w", topic, err)
	}
	var ids []string
	var notes []string
	defer func() {
		if c.Keep {
			notes = append(notes, fmt.Sprintf("kept topic %s and %d subscriptions (--keep)", topic, len(ids)))
		} else if err := cleanup(ctx, hc, topic, ids); err != nil {
			notes = append(notes, "cleanup: "+err.Error())
		}
		if res != nil {
			res.Notes = append(res.Notes, notes...)
		}
	}()
	if c.Subscriptions > 0 {
		c.progress("created topic %s on %s; creating %d subscriptions to %s", topic, hc.BaseURL(), c.Subscriptions, base)
	} else {
		c.progress("created topic %s on %s", topic, hc.BaseURL())
	}
	if len(clients) > 1 {
		c.progress("publishing round robin to %d servers: %s", len(clients), strings.Join(servers, ", "))
	}
	for i := range c.Subscriptions {
		sub, err := hc.CreateSubscription(ctx, client.SubscriptionSpec{
			Topic: topic, URL: base + EndpointPath(i), Description: "herald bench",
			Retry: c.Retry, MaxInFlight: c.MaxInFlight, Verification: c.Verification,
		})
		if err != nil {
			return nil, fmt.Errorf("create subscription %d of %d: %w", i+1, c.Subscriptions, err)
		}
		ids = append(ids, sub.ID)
		if err := sink.SetSecret(i, sub.Secret); err != nil {
			return nil, fmt.Errorf("subscription %s: %w", sub.ID, err)
		}
	}
	if c.Verification == herald.VerifyChallenge {
		if err := waitActive(ctx, hc, ids, c.Timeout); err != nil {
			return nil, err
		}
	}

	var target publishTarget = heraldTarget{c: hc, topic: topic}
	if len(clients) > 1 {
		rr := &roundRobin{}
		for _, c := range clients {
			rr.targets = append(rr.targets, heraldTarget{c: c, topic: topic})
		}
		target = rr
	}
	parts := runParts{system: "herald", epoch: epoch, sink: sink, target: target, servers: servers, pids: make([]int, len(servers))}
	for i, s := range servers {
		pid, err := c.serverPID(i)
		if err != nil {
			if len(servers) > 1 {
				notes = append(notes, fmt.Sprintf("no RSS and CPU of server %s: %v", s, err))
			} else {
				notes = append(notes, "no server RSS and CPU: "+err.Error())
			}
			continue
		}
		parts.pids[i] = pid
	}
	if c.Backlog > 0 {
		switch c.BacklogVia {
		case BacklogRefuse:
			parts.hold = func(context.Context) error { sink.SetRefuse(true); return nil }
			parts.release = func(context.Context) error { sink.SetRefuse(false); return nil }
		case BacklogPause:
			parts.hold = func(ctx context.Context) error {
				for _, id := range ids {
					if _, err := hc.PauseSubscription(ctx, id); err != nil {
						return fmt.Errorf("pause subscription %s: %w", id, err)
					}
				}
				return nil
			}
			parts.release = func(ctx context.Context) error {
				for _, id := range ids {
					if _, err := hc.ResumeSubscription(ctx, id); err != nil {
						return fmt.Errorf("resume subscription %s: %w", id, err)
					}
				}
				return nil
			}
		}
	}
	res = c.measure(ctx, parts)
	res.Topic = topic
	return res, nil
}

// measure publishes, waits for the deliveries and builds the result.
func (c Config) measure(ctx context.Context, p runParts) *Result {
	res := &Result{System: p.system}
	since := func() time.Duration { return time.Since(p.epoch) }
	acked := newBitset(int64(c.Events))

	watch := c.newRunWatch(p)
	stopWatch := startSampling(watch)
	dbBefore := dbSize(c.DBPath)

	if p.hold != nil {
		if err := p.hold(ctx); err != nil {
			res.Notes = append(res.Notes, "backlog not held: "+err.Error())
		}
	}
	c.progress("%s: publishing %d events (%s)", p.system, c.Events, c.loadText())
	pub := publisher{target: p.target, epoch: p.epoch, events: int64(c.Events), batch: c.Batch, size: c.Size,
		rate: c.Rate, workers: c.Workers, duration: c.Duration, acked: acked}
	ps := pub.run(ctx)
	res.Publishing = publishing(ps)
	res.Expected = ps.Acked * int64(c.Subscriptions)

	windowStart := time.Duration(-1)
	if p.release != nil {
		c.progress("%s: backlog of %d events published; letting the endpoints take them", p.system, ps.Acked)
		windowStart = since()
		if err := p.release(ctx); err != nil {
			res.Notes = append(res.Notes, "backlog not released: "+err.Error())
		}
	}
	if c.Subscriptions > 0 {
		c.progress("%s: published %d events in %.2fs; waiting up to %s for %d deliveries", p.system, ps.Acked, res.PublishSeconds, c.Timeout, res.Expected)
	}
	res.Lost = c.waitDelivered(ctx, p.sink, acked, ps.Acked)
	res.TimedOut = res.Lost > 0
	if c.Linger > 0 {
		t := time.NewTimer(c.Linger)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	stopWatch()
	watch.finish(res)

	st := p.sink.Stats()
	res.Delivered, res.Duplicates = res.Expected-res.Lost, st.Duplicates
	res.Rejected, res.Injected, res.Refused, res.Malformed = st.Rejected, st.Injected, st.Refused, st.Malformed
	if windowStart < 0 {
		windowStart = st.First
	}
	if st.Unique > 0 && st.Last > windowStart {
		res.DeliverySeconds = (st.Last - windowStart).Seconds()
		res.DeliveryRate = float64(st.Unique) / res.DeliverySeconds
	}
	res.E2E = p.sink.Latency()
	if st.NoSecret > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d requests came before the sink knew the endpoint's secret and were answered 503", st.NoSecret))
	}
	if dbBefore >= 0 && ps.Acked > 0 {
		if after := dbSize(c.DBPath); after >= 0 {
			res.DBBytesPerEvent = float64(after-dbBefore) / float64(ps.Acked)
		}
	}
	return res
}

// waitDelivered waits until every acknowledged event reached every
// endpoint, c.Timeout passes or ctx ends, and returns how many (event,
// endpoint) pairs are still missing.
func (c Config) waitDelivered(ctx context.Context, sink *Sink, acked *bitset, nacked int64) int64 {
	return waitAll(ctx, c.Timeout, nacked*int64(c.Subscriptions), c.progress,
		func() int64 { return sink.Stats().Unique },
		func() int64 {
			var m int64
			for i := range c.Subscriptions {
				m += sink.missing(i, acked)
			}
			return m
		})
}

// waitAll waits until want distinct deliveries arrived and missing finds
// none absent, timeout passes or ctx ends, noting progress every 5 s, and
// returns what missing last found. unique counts the distinct deliveries
// so far: it reaching want is necessary for none to be missing, so only
// then is missing, which reads every bitset, worth calling.
func waitAll(ctx context.Context, timeout time.Duration, want int64, progress func(string, ...any), unique, missing func() int64) int64 {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	lastNote := time.Now()
	for {
		if unique() >= want {
			if m := missing(); m == 0 {
				return 0
			}
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return missing()
		case <-ctx.Done():
			return missing()
		}
		if time.Since(lastNote) >= 5*time.Second {
			lastNote = time.Now()
			progress("waiting: %d of %d deliveries so far", unique(), want)
		}
	}
}

// waitActive waits until every subscription answered its challenge.
func waitActive(ctx context.Context, hc *client.Client, ids []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for _, id := range ids {
		for {
			s, err := hc.GetSubscription(ctx, id)
			if err != nil {
				return fmt.Errorf("wait for subscription %s to be verified: %w", id, err)
			}
			if s.State == herald.StateActive {
				break
			}
			if s.State != herald.StatePending {
				return fmt.Errorf("subscription %s is %s, not active: %s", id, s.State, s.StateReason)
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return fmt.Errorf("subscription %s did not answer its challenge within %s (does the server allow private destinations?)", id, timeout)
			}
		}
	}
	return nil
}

// cleanup deletes the subscriptions and the topic, even when ctx has ended.
func cleanup(ctx context.Context, hc *client.Client, topic string, ids []string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var errs []error
	for _, id := range ids {
		if err := hc.DeleteSubscription(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("delete subscription %s: %w", id, err))
		}
	}
	if err := hc.DeleteTopic(ctx, topic); err != nil {
		errs = append(errs, fmt.Errorf("delete topic %s: %w", topic, err))
	}
	return errors.Join(errs...)
}

// serverPID returns the process id of server i of c.servers(): the one
// given in c.PIDs (or c.PID), or the process listening on its port.
func (c Config) serverPID(i int) (int, error) {
	switch {
	case i < len(c.PIDs) && c.PIDs[i] > 0:
		return c.PIDs[i], nil
	case i == 0 && c.PID > 0:
		return c.PID, nil
	}
	server := c.servers()[i]
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		u, err = url.Parse("http://" + server)
		if err != nil {
			return 0, fmt.Errorf("cannot read the port of %q (pass --pid)", server)
		}
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return 0, fmt.Errorf("cannot read the port of %q (pass --pid)", server)
	}
	if !c.AllowRemote || checkLoopbackHost(context.Background(), u.Hostname()) == nil {
		return listenerPID(n)
	}
	return 0, errors.New("the server is remote (pass --pid only when it runs here)")
}

// sinkBase returns the base URL Herald reaches the sink at.
func (c Config) sinkBase(s *Sink) string {
	if c.SinkURL != "" {
		return strings.TrimRight(c.SinkURL, "/")
	}
	return s.Addr()
}

func (c Config) loadText() string {
	how := "flat out"
	if c.Rate > 0 {
		how = fmt.Sprintf("open loop at %g events/s", c.Rate)
	}
	return fmt.Sprintf("%s, %d workers, %d per request, %d bytes, %d subscriptions", how, c.Workers, c.Batch, c.Size, c.Subscriptions)
}

// stopWithin calls stop with a context of a few seconds, for deferred
// shutdowns. By then the run has its figures: a peer's connection that was
// dialed but never used (net/http waits up to 5s for those) must not hold
// the report back.
func stopWithin(stop func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = stop(ctx) // a forced close is all that is left to do
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// dbSize returns the size of the SQLite file and its -wal file, or -1
// when path is "" or unreadable.
func dbSize(path string) int64 {
	if path == "" {
		return -1
	}
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	n := fi.Size()
	if wal, err := os.Stat(path + "-wal"); err == nil {
		n += wal.Size()
	}
	return n
}

// procWatch samples a process's RSS to find its peak, and its CPU time at
// the start and end of a run.
type procWatch struct {
	pid     int
	start   procSample
	maxRSS  int64
	lastRSS int64 // at the last sample
	err     error
	began   time.Time
}

func newProcWatch(pid int) *procWatch {
	w := &procWatch{pid: pid, began: time.Now()}
	if pid > 0 {
		w.start, w.err = readProc(pid)
		w.maxRSS, w.lastRSS = w.start.rss, w.start.rss
	}
	return w
}

func (w *procWatch) sample() {
	if w.pid <= 0 || w.err != nil {
		return
	}
	if s, err := readProc(w.pid); err == nil {
		w.maxRSS = max(w.maxRSS, s.rss)
		w.lastRSS = s.rss
	}
}

func (w *procWatch) finish() *ProcStats {
	if w.pid <= 0 || w.err != nil {
		return nil
	}
	end, err := readProc(w.pid)
	if err != nil {
		return nil
	}
	wall := time.Since(w.began).Seconds()
	ps := &ProcStats{PID: w.pid, RSSMaxBytes: max(w.maxRSS, end.rss), RSSEndBytes: end.rss, CPUSeconds: end.cpu - w.start.cpu}
	if wall > 0 {
		ps.CPUCores = ps.CPUSeconds / wall
	}
	return ps
}

// runWatch watches everything that uses the machine's CPU during a
// measured window: the servers, the database's processes, this process,
// and the machine as a whole.
type runWatch struct {
	began   time.Time
	urls    []string
	servers []*procWatch // one per URL; pid 0 when not found
	maxSum  int64        // the peak of the servers' summed RSS
	self    *procWatch
	db      *groupWatch // nil without Config.DBProcess
	host    float64     // the machine's busy CPU seconds at the start
	hostErr error
	notes   []string
}

// newRunWatch takes the first samples of a run.
func (c Config) newRunWatch(p runParts) *runWatch {
	w := &runWatch{began: time.Now(), urls: p.servers}
	w.host, w.hostErr = hostCPU()
	for i, pid := range p.pids {
		pw := newProcWatch(pid)
		if pw.err != nil {
			if len(p.pids) > 1 {
				w.notes = append(w.notes, fmt.Sprintf("no RSS and CPU of server %s: %v", p.servers[i], pw.err))
			} else {
				w.notes = append(w.notes, "no server RSS and CPU: "+pw.err.Error())
			}
		}
		w.servers = append(w.servers, pw)
		w.maxSum += pw.lastRSS
	}
	w.self = newProcWatch(os.Getpid())
	if c.DBProcess != "" {
		w.db = newGroupWatch(c.DBProcess)
	}
	return w
}

func (w *runWatch) sample() {
	var sum int64
	for _, s := range w.servers {
		s.sample()
		sum += s.lastRSS
	}
	w.maxSum = max(w.maxSum, sum)
	w.self.sample()
	if w.db != nil {
		w.db.sample()
	}
}

// finish takes the last samples and sets the result's figures and notes.
func (w *runWatch) finish(res *Result) {
	res.Notes = append(res.Notes, w.notes...)
	wall := time.Since(w.began).Seconds()
	var total ProcStats
	found := 0
	for i, s := range w.servers {
		ps := s.finish()
		if len(w.servers) > 1 {
			res.Servers = append(res.Servers, ServerStats{URL: w.urls[i], ProcStats: ps})
		}
		if ps == nil {
			continue
		}
		found++
		res.Server = ps
		total.RSSEndBytes += ps.RSSEndBytes
		total.CPUSeconds += ps.CPUSeconds
	}
	if len(w.servers) > 1 && found > 0 {
		total.RSSMaxBytes = max(w.maxSum, total.RSSEndBytes)
		if wall > 0 {
			total.CPUCores = total.CPUSeconds / wall
		}
		res.Server = &total
		if found < len(w.servers) {
			res.Notes = append(res.Notes, fmt.Sprintf("the servers' RSS and CPU cover %d of %d servers", found, len(w.servers)))
		}
	}
	res.Bench = w.self.finish()
	if w.db != nil {
		u, err := w.db.finish()
		if err != nil {
			res.Notes = append(res.Notes, "no database CPU: "+err.Error())
		}
		res.DB = u
	}
	if w.hostErr == nil {
		if end, err := hostCPU(); err == nil && wall > 0 {
			res.Host = &CPUUse{CPUSeconds: end - w.host, CPUCores: (end - w.host) / wall}
		}
	}
}

// sampler is something startSampling samples.
type sampler interface{ sample() }

// startSampling calls sample on each of ss every 100ms in a goroutine until
// the returned function is called; that function returns once the
// goroutine has, and may be called more than once.
func startSampling(ss ...sampler) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, s := range ss {
					s.sample()
				}
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}
