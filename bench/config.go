package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// Config describes one benchmark run. Zero values mean the defaults named
// on each field; Run fills them in and validates the whole.
type Config struct {
	// Server is the URL of the Herald to measure and Key an admin API key
	// for it. Unused when Raw is set.
	Server string
	Key    string
	// Servers, when set, replaces Server: the URLs of several Herald nodes
	// that share one store (PostgreSQL). The publisher spreads its requests
	// round robin over them, each with its own keep-alive connections; the
	// topic and subscriptions are created and deleted through the first.
	// At most MaxServers, no URL twice.
	Servers []string

	// Raw measures the in-process raw relay instead of Herald.
	Raw bool
	// CompareRaw measures the raw relay first, then Herald with the same
	// settings, and reports Herald's delivery rate as a fraction of it.
	CompareRaw bool

	// Events is the number of events to publish (default 10000, at most
	// MaxEvents). Backlog, when set, replaces it.
	Events int
	// Duration bounds the publishing phase (default 1m): publishing stops
	// then even if events remain.
	Duration time.Duration
	// Rate is the open-loop publish rate in events/s; 0 publishes flat out.
	Rate float64
	// Workers is the number of concurrent publish requests (default 64).
	// In open loop it bounds the requests in flight; a send that finds no
	// free worker waits, and its latency counts from its intended time.
	Workers int
	// Batch is the number of events per publish request (default 1, at
	// most 1000); more than 1 uses the batch endpoint.
	Batch int
	// Size is the payload size in bytes (default 200, at least MinSize).
	Size int

	// Subscriptions is the number of webhook subscriptions, each with its
	// own sink endpoint (default 1, at most 1000).
	Subscriptions int
	// PublishOnly creates no subscriptions, to measure publishing alone.
	PublishOnly bool
	// MaxInFlight is each subscription's max_in_flight (0: the server's
	// default, 16; the raw relay uses the same).
	MaxInFlight int
	// Verification is "none" (default: the subscriptions start active,
	// which needs an admin key) or "challenge" (the sink answers them).
	Verification string
	// Retry is the subscriptions' retry policy (and the raw relay's).
	// Default: 100 attempts from 100ms up to 2s, so that injected failures
	// and backlog refusals are retried within a run.
	Retry herald.RetryPolicy
	// FailRate is the fraction of deliveries the sink answers 500, in
	// [0, 0.9]; each attempt fails independently, so retries get through.
	FailRate float64
	// FailEndpoints limits FailRate to the first N endpoints; 0: all.
	FailEndpoints int

	// Backlog, when positive, publishes that many events while the
	// endpoints do not take them, then lets them take them and measures
	// how fast the backlog drains.
	Backlog int
	// BacklogVia is how the endpoints stop taking events: "refuse" (the
	// default: the sink answers 503 and Herald retries) or "pause" (the
	// subscriptions are paused, then resumed).
	BacklogVia string

	// Timeout bounds the wait for every delivery after publishing ends
	// (default 2m); events still missing then are reported lost.
	Timeout time.Duration
	// Linger is how long to keep counting after the last expected
	// delivery, to catch late duplicates (default 0).
	Linger time.Duration

	// PID is the server's process id, for its RSS and CPU; 0 finds the
	// process listening on the server's port (loopback servers only).
	// PIDs replaces it.
	PID int
	// PIDs are the servers' process ids in the order of Servers (or of
	// Server alone); a 0, or a missing one at the end, finds the process
	// listening on that server's port.
	PIDs []int
	// DBProcess, when set, is the command name of the database's
	// processes as /proc/<pid>/comm spells it ("postgres"): the CPU time of
	// all of them together during the run is reported beside the servers'.
	// It is summed from samples every 100ms: a process that starts during
	// the run counts from its start, one that exits counts up to the last
	// sample that saw it, and one that lives between two samples is missed.
	DBProcess string
	// DBPath, when set, is the server's SQLite file; its growth (with the
	// -wal file) per published event is reported.
	DBPath string
	// Keep leaves the topic and subscriptions in place after the run.
	Keep bool
	// AllowRemote lets Server, Servers, SinkAddr and SinkURL be other than loopback.
	AllowRemote bool
	// SinkAddr is the sink's listen address (default 127.0.0.1:0) and
	// SinkURL the base URL Herald reaches it at (default: the address it
	// listens on).
	SinkAddr string
	SinkURL  string

	// Progress, when set, receives a line for each phase of the run.
	Progress io.Writer
}

// Limits of a Config.
const (
	MaxEvents        = 10_000_000
	MaxSubscriptions = 1000
	MaxBatch         = 1000
	MaxWorkers       = 4096
	MaxServers       = 64
	MinSize          = 64
	MaxSize          = 1 << 20
	// maxTrackedBits bounds the sink's memory: one bit per event and
	// endpoint, 128 MiB at most.
	maxTrackedBits = 1 << 30
)

// Backlog modes.
const (
	BacklogRefuse = "refuse"
	BacklogPause  = "pause"
)

// Defaults returns the Config that Run uses for a zero Config: every
// field that has a default set to it.
func Defaults() Config { return Config{}.withDefaults() }

func (c Config) withDefaults() Config {
	if c.Backlog > 0 {
		c.Events = c.Backlog
	}
	if c.Events == 0 {
		c.Events = 10000
	}
	if c.Duration == 0 {
		c.Duration = time.Minute
	}
	if c.Workers == 0 {
		c.Workers = 64
	}
	if c.Batch == 0 {
		c.Batch = 1
	}
	if c.Size == 0 {
		c.Size = 200
	}
	if c.PublishOnly {
		c.Subscriptions = 0
	} else if c.Subscriptions == 0 {
		c.Subscriptions = 1
	}
	if c.Verification == "" {
		c.Verification = herald.VerifyNone
	}
	if c.Retry == (herald.RetryPolicy{}) {
		c.Retry = herald.RetryPolicy{MaxAttempts: 100, Initial: 100 * time.Millisecond, Max: 2 * time.Second}
	}
	c.Retry = c.Retry.WithDefaults()
	if c.BacklogVia == "" {
		c.BacklogVia = BacklogRefuse
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Minute
	}
	if c.SinkAddr == "" {
		c.SinkAddr = "127.0.0.1:0"
	}
	return c
}

// validate reports every problem of a Config with defaults filled in, as
// *herald.Error values with CodeInvalid naming the flag at fault, joined.
func (c Config) validate(ctx context.Context) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, herald.FieldErrorf(field, "--"+field+" "+format, args...))
	}
	if c.Raw && c.CompareRaw {
		bad("raw", "measures the relay alone; --compare-raw measures it and Herald: give one")
	}
	if c.Events < 1 || c.Events > MaxEvents {
		bad("events", "%d: want 1 to %d", c.Events, MaxEvents)
	}
	if c.Duration < 0 {
		bad("duration", "%s: want a positive duration", c.Duration)
	}
	if c.Rate < 0 || c.Rate > 10_000_000 {
		bad("rate", "%g: want 0 (flat out) to 10000000 events/s", c.Rate)
	}
	if c.Workers < 1 || c.Workers > MaxWorkers {
		bad("workers", "%d: want 1 to %d", c.Workers, MaxWorkers)
	}
	if c.Batch < 1 || c.Batch > MaxBatch {
		bad("batch", "%d: want 1 to %d", c.Batch, MaxBatch)
	}
	if c.Size < MinSize || c.Size > MaxSize {
		bad("size", "%d: want %d to %d bytes", c.Size, MinSize, MaxSize)
	}
	if (c.Subscriptions < 1 && !c.PublishOnly) || c.Subscriptions > MaxSubscriptions {
		bad("subscriptions", "%d: want 1 to %d", c.Subscriptions, MaxSubscriptions)
	} else if c.Events >= 1 && int64(c.Events)*int64(c.Subscriptions) > maxTrackedBits {
		bad("events", "%d events to %d subscriptions: want at most %d deliveries in one run", c.Events, c.Subscriptions, maxTrackedBits)
	}
	if c.MaxInFlight < 0 || c.MaxInFlight > herald.MaxMaxInFlight {
		bad("max-in-flight", "%d: want 0 (the server's default) to %d", c.MaxInFlight, herald.MaxMaxInFlight)
	}
	if c.Verification != herald.VerifyNone && c.Verification != herald.VerifyChallenge {
		bad("verification", "%q: want none or challenge", c.Verification)
	}
	if err := c.Retry.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.FailRate < 0 || c.FailRate > 0.9 {
		bad("fail-rate", "%g: want 0 to 0.9", c.FailRate)
	}
	if c.Backlog < 0 || c.Backlog > MaxEvents {
		bad("backlog", "%d: want 0 to %d", c.Backlog, MaxEvents)
	}
	if c.Backlog > 0 && c.PublishOnly {
		bad("backlog", "needs subscriptions to drain to")
	}
	if c.Backlog > 0 && (c.Raw || c.CompareRaw) {
		bad("backlog", "has no raw counterpart: the raw relay stores nothing")
	}
	if c.BacklogVia != BacklogRefuse && c.BacklogVia != BacklogPause {
		bad("backlog-via", "%q: want refuse or pause", c.BacklogVia)
	}
	if c.Timeout <= 0 {
		bad("timeout", "%s: want a positive duration", c.Timeout)
	}
	if c.Linger < 0 {
		bad("linger", "%s: want a duration that is not negative", c.Linger)
	}
	if c.PID < 0 {
		bad("pid", "%d: want a process id", c.PID)
	}
	if c.PID != 0 && len(c.PIDs) > 0 {
		bad("pid", "PID %d and PIDs %v: give one", c.PID, c.PIDs)
	}
	for _, pid := range c.PIDs {
		if pid < 0 {
			bad("pid", "%d: want a process id, or 0 to find it", pid)
			break
		}
	}
	if n := len(c.servers()); len(c.PIDs) > n {
		bad("pid", "%d process ids for %d servers: want at most one per server, in the order of --servers", len(c.PIDs), n)
	}
	if len(c.Servers) > MaxServers {
		bad("servers", "%d URLs: want at most %d", len(c.Servers), MaxServers)
	}
	seen := map[string]bool{}
	for _, s := range c.Servers {
		switch {
		case strings.TrimSpace(s) == "":
			bad("servers", "has an empty URL: want URLs separated by commas")
		case seen[s]:
			bad("servers", "names %s twice: want each node once", s)
		}
		seen[s] = true
	}
	if c.DBProcess != "" && (len(c.DBProcess) > maxCommLen || strings.ContainsAny(c.DBProcess, "/\n")) {
		bad("db-process", "%q: want a command name as /proc/<pid>/comm shows it (at most %d bytes, such as postgres)", c.DBProcess, maxCommLen)
	}
	if !c.AllowRemote {
		if !c.Raw {
			field := "server"
			if len(c.Servers) > 0 {
				field = "servers"
			}
			for _, s := range c.servers() {
				if field == "servers" && strings.TrimSpace(s) == "" {
					continue // reported above
				}
				if err := checkLoopbackURL(ctx, s); err != nil {
					bad(field, "%v (add --allow-remote to measure a remote server)", err)
				}
			}
		}
		if err := checkLoopbackHostPort(ctx, c.SinkAddr); err != nil {
			bad("sink-addr", "%v (add --allow-remote to listen on other addresses)", err)
		}
		if c.SinkURL != "" {
			if err := checkLoopbackURL(ctx, c.SinkURL); err != nil {
				bad("sink-url", "%v (add --allow-remote to have Herald send elsewhere)", err)
			}
		}
	}
	return errors.Join(errs...)
}

// servers returns the URLs of the nodes to measure: Servers, or Server
// alone.
func (c Config) servers() []string {
	if len(c.Servers) > 0 {
		return c.Servers
	}
	return []string{c.Server}
}

// checkLoopbackURL checks that raw is an http(s) URL whose host is, or
// resolves only to, loopback addresses.
func checkLoopbackURL(ctx context.Context, raw string) error {
	s := raw
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("%q is not an http:// or https:// URL", raw)
	}
	return checkLoopbackHost(ctx, u.Hostname())
}

func checkLoopbackHostPort(ctx context.Context, hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q is not host:port", hostport)
	}
	return checkLoopbackHost(ctx, host)
}

func checkLoopbackHost(ctx context.Context, host string) error {
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !ip.Unmap().IsLoopback() {
			return fmt.Errorf("%s is not a loopback address", host)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return fmt.Errorf("cannot resolve %s to check that it is loopback", host)
	}
	for _, ip := range ips {
		if !ip.Unmap().IsLoopback() {
			return fmt.Errorf("%s resolves to %s, which is not loopback", host, ip)
		}
	}
	return nil
}
