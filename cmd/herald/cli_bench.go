package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/bench"
	"github.com/heraldhq/herald/client"
)

const benchUsage = `herald bench [options]

Measure a running Herald. bench creates a fresh topic bench.<random> and
--subscriptions webhook subscriptions that point at a receiver inside this
process. It publishes --events events, waits at most --timeout for every
acknowledged event to reach every subscription, and deletes what it
created. It prints the publish rate and latency, the delivery rate, the
end-to-end latency, lost and duplicated deliveries, and the server's RSS
and CPU. The receiver verifies every signature.

It needs an admin key and a server started with
--allow-private-destinations, because the receiver listens on 127.0.0.1.
It talks to loopback addresses only, unless --allow-remote is given.

--servers measures several nodes that share one PostgreSQL: the publish
requests go to each in turn, the topic and subscriptions are created
through the first, and the RSS and CPU of each node and their sum are
reported. --db-process postgres adds the CPU time of every process of that
name (the database's backends and background processes), beside the
servers', the bench's own and the whole machine's. It is summed from samples
every 100ms, so what a process uses after the last sample before it exits
is missed; a connection pool's long-lived backends lose next to nothing.

--raw measures a minimal in-process HTTP relay with no storage instead of
Herald. --compare-raw measures both and reports Herald's delivery rate as a
fraction of the raw relay's. The exit status is 1 when events were lost,
signatures were rejected or publishing failed.

Scenarios (docs/benchmarks.md):
  durable batch publish      herald bench --subscriptions 0 --events 500000 --batch 100 --workers 8
  single publish, 64 clients herald bench --subscriptions 0 --events 200000 --workers 64
  one endpoint, flat out     herald bench --compare-raw --events 200000 --batch 100 --workers 4 --max-in-flight 64
  fan-out to 100 endpoints   herald bench --events 10000 --batch 100 --workers 4 --subscriptions 100
  e2e latency at 1,000/s     herald bench --rate 1000 --events 30000
  e2e latency at 10/s        herald bench --rate 10 --events 300
  backlog drain              herald bench --backlog 1000000 --batch 100 --workers 8 --max-in-flight 64 --db herald.db --timeout 10m
  failing receiver           herald bench --events 20000 --fail-rate 0.3
  smoke run (seconds)        herald bench --events 500 --subscriptions 2 --timeout 30s
  realtime streams           herald bench streams --clients 5000 --rate 10 (see herald bench streams -h)
  many subscriptions         herald bench subscriptions --subs 10000 (see herald bench subscriptions -h)
  rules and views            herald bench rules --keys 100000 --events 200000 (see herald bench rules -h)
  delayed-event promotion    herald bench delayed --events 1000000 --lead 3m (see herald bench delayed -h)
  archive write and query    herald bench archive --dir /tmp/arch --events 10000000 --hours 72 (see herald bench archive -h)
  broker channels            herald bench --channel kafka|redis (see herald bench --channel kafka -h)
  three nodes on PostgreSQL  herald bench --servers http://127.0.0.1:18481,http://127.0.0.1:18482,http://127.0.0.1:18483 --db-process postgres --events 100000 --batch 10 --workers 16 --subscriptions 2`

// parseBench turns a "bench" command line into a bench.Config.
func parseBench(c *cli, args []string) (bench.Config, benchOutput, error) {
	cfg := bench.Defaults()
	var (
		out  benchOutput
		subs = cfg.Subscriptions
	)
	fs := c.flagSet("bench", benchUsage)
	fs.BoolVar(&cfg.Raw, "raw", false, "measure the raw in-process relay instead of Herald")
	fs.BoolVar(&cfg.CompareRaw, "compare-raw", false, "measure the raw relay, then Herald, and report the ratio")
	fs.IntVar(&cfg.Events, "events", cfg.Events, "publish `N` events")
	fs.Var(durationFlag{&cfg.Duration}, "duration", "stop publishing after `D` even if events remain")
	fs.Float64Var(&cfg.Rate, "rate", 0, "publish `R` events/s on a fixed timeline (open loop); 0 publishes flat out")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "`N` concurrent publish requests")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "`K` events per publish request (more than 1 uses the batch endpoint)")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "payload size in `BYTES`")
	fs.IntVar(&subs, "subscriptions", subs, "`N` webhook subscriptions, one receiver endpoint each; 0 measures publishing alone")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, "each subscription's max_in_flight `N` (0: the server's default, 16)")
	fs.StringVar(&cfg.Verification, "verification", cfg.Verification, "`MODE` of the subscriptions: none (start active) or challenge (the receiver answers it)")
	fs.IntVar(&cfg.Retry.MaxAttempts, "retry-attempts", cfg.Retry.MaxAttempts, "the subscriptions' retry max_attempts `N`")
	fs.Var(durationFlag{&cfg.Retry.Initial}, "retry-initial", "the subscriptions' first retry delay `D`")
	fs.Var(durationFlag{&cfg.Retry.Max}, "retry-max", "the subscriptions' longest retry delay `D`")
	fs.Float64Var(&cfg.FailRate, "fail-rate", 0, "answer 500 to fraction `F` of deliveries (0 to 0.9; each attempt independently)")
	fs.IntVar(&cfg.FailEndpoints, "fail-endpoints", 0, "inject --fail-rate failures only at the first `N` endpoints (0: all)")
	fs.IntVar(&cfg.Backlog, "backlog", 0, "publish `N` events while the receiver does not take them, then measure the drain")
	fs.StringVar(&cfg.BacklogVia, "backlog-via", cfg.BacklogVia, "`HOW` the receiver holds the backlog: refuse (answer 503) or pause (pause the subscriptions)")
	fs.Var(durationFlag{&cfg.Timeout}, "timeout", "wait at most `D` for the deliveries after publishing")
	fs.Var(durationFlag{&cfg.Linger}, "linger", "keep counting for `D` after the last delivery, to catch late duplicates")
	fs.Func("servers", "measure the nodes at `URLS`, separated by commas, instead of --server: publish to each in turn, create the topic and subscriptions through the first", func(s string) error {
		cfg.Servers = append(cfg.Servers, benchSplitList(s)...)
		return nil
	})
	fs.Func("pid", "the server's process `ID`, for its RSS and CPU, or one per --servers URL separated by commas; 0 or none finds the process listening on the server's port", func(s string) error {
		for _, f := range benchSplitList(s) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid < 0 {
				return errors.New("want process ids separated by commas, 0 to find one")
			}
			cfg.PIDs = append(cfg.PIDs, pid)
		}
		return nil
	})
	fs.StringVar(&cfg.DBProcess, "db-process", "", "report the CPU of every process whose command name is `NAME` (as in /proc/<pid>/comm), such as postgres")
	fs.StringVar(&cfg.DBPath, "db", "", "the server's SQLite `FILE`, to report its growth per event")
	fs.BoolVar(&cfg.Keep, "keep", false, "leave the topic and subscriptions in place")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a server and receiver that are not on loopback")
	fs.StringVar(&cfg.SinkAddr, "sink-addr", cfg.SinkAddr, "the receiver's listen `ADDR`")
	fs.StringVar(&cfg.SinkURL, "sink-url", "", "the base `URL` Herald reaches the receiver at (default: http://<the listen address>)")
	progress, err := c.parseBenchFlags(fs, &out, args)
	if err != nil {
		return cfg, out, err
	}
	if len(cfg.Servers) > 0 && c.g.server != "" {
		return cfg, out, fs.usageErrorf("--server and --servers: give one (--servers replaces --server)")
	}
	cfg.Subscriptions = subs
	if subs == 0 {
		cfg.PublishOnly = true
	}
	cfg.Key = c.apiKey()
	if len(cfg.Servers) == 0 {
		cfg.Server = c.serverURL()
	}
	cfg.Progress = progress
	return cfg, out, nil
}

// benchOutput is how a bench verb reports, beside its measurements.
type benchOutput struct {
	json       bool
	cpuProfile string
}

func (o *benchOutput) flags(fs *cmdFlags) {
	fs.BoolVar(&o.json, "json", false, "print the report as JSON (same as --output json)")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile of the bench process itself (load client and receiver) to `FILE`, for go tool pprof")
}

// benchSplitList splits a comma-separated flag value, trimming spaces around each
// item; empty items stay, for the validation to name.
func benchSplitList(s string) []string {
	items := strings.Split(s, ",")
	for i, it := range items {
		items[i] = strings.TrimSpace(it)
	}
	return items
}

// benchVerb runs "herald bench".
func benchVerb(ctx context.Context, c *cli, args []string) error {
	if len(args) > 0 && args[0] == "streams" {
		return benchStreamsVerb(ctx, c, args[1:])
	}
	if len(args) > 0 && args[0] == "subscriptions" {
		return benchSubsVerb(ctx, c, args[1:])
	}
	if len(args) > 0 && args[0] == "rules" {
		return benchRulesVerb(ctx, c, args[1:])
	}
	if len(args) > 0 && args[0] == "delayed" {
		return benchDelayedVerb(ctx, c, args[1:])
	}
	if len(args) > 0 && args[0] == "archive" {
		return benchArchiveVerb(ctx, c, args[1:])
	}
	if benchChannelRequested(args) {
		return benchChannelVerb(ctx, c, args)
	}
	cfg, out, err := parseBench(c, args)
	if err != nil {
		return err
	}
	return runBenchVerb(ctx, c, "bench", cfg, out, bench.Run)
}

// benchReport is what a bench verb prints.
type benchReport interface {
	WriteJSON(io.Writer) error
	WriteText(io.Writer) error
	// Problems names what went wrong in the run; none when nothing did.
	Problems() []string
}

// runBenchVerb runs a bench with cfg, prints its report, and returns an
// error naming what went wrong in the run, if anything did.
func runBenchVerb[C any, R benchReport](ctx context.Context, c *cli, verb string, cfg C, out benchOutput, run func(context.Context, C) (R, error)) error {
	if out.cpuProfile != "" {
		f, err := os.Create(out.cpuProfile)
		if err != nil {
			return fmt.Errorf("%s: cpu profile: %w", verb, err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("%s: cpu profile: %w", verb, err)
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := run(ctx, cfg)
	if err != nil {
		err = fmt.Errorf("%s: %w", verb, err)
		// Invalid settings are *herald.Error values with CodeInvalid; a
		// server's answer is a *client.Problem and not the caller's usage.
		if _, isProblem := errors.AsType[*client.Problem](err); !isProblem && herald.IsCode(err, herald.CodeInvalid) {
			return &usageError{verb: verb, err: err}
		}
		return err
	}
	if out.json {
		err = rep.WriteJSON(c.stdout)
	} else {
		err = rep.WriteText(c.stdout)
	}
	if err != nil {
		return err
	}
	if p := rep.Problems(); len(p) > 0 {
		return errors.New(verb + ": " + strings.Join(p, "; "))
	}
	return nil
}

// serverBench points at the settings every bench verb against one running
// server shares, so that each verb binds and fills them alike.
type serverBench struct {
	server, key       *string
	pid               *int
	keep, allowRemote *bool
	progress          *io.Writer
}

// bind adds --pid, --keep (leaving what the run made) and --allow-remote.
func (b serverBench) bind(fs *cmdFlags, leaves string) {
	fs.IntVar(b.pid, "pid", 0, "the server's process `ID`; 0 finds the process listening on the server's port")
	fs.BoolVar(b.keep, "keep", false, "leave "+leaves+" in place")
	fs.BoolVar(b.allowRemote, "allow-remote", false, "allow a server that is not on loopback")
}

// parse ends the parsing (parseBenchFlags) and sets the server, its key
// and where progress lines go.
func (b serverBench) parse(c *cli, fs *cmdFlags, out *benchOutput, args []string) error {
	progress, err := c.parseBenchFlags(fs, out, args)
	if err != nil {
		return err
	}
	*b.server, *b.key, *b.progress = c.serverURL(), c.apiKey(), progress
	return nil
}

// parseBenchFlags ends the parsing of every bench verb: it adds the output
// flags and --quiet, parses args (a bench verb takes no arguments) and
// returns where progress lines go: standard error, or nil with --quiet.
func (c *cli) parseBenchFlags(fs *cmdFlags, out *benchOutput, args []string) (io.Writer, error) {
	var quiet bool
	out.flags(fs)
	fs.BoolVar(&quiet, "quiet", false, "print no progress lines on standard error")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return nil, err
	}
	out.json = out.json || c.g.output == outputJSON
	if quiet {
		return nil, nil
	}
	return c.stderr, nil
}
