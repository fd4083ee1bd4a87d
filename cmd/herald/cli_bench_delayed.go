package main

import (
	"context"

	"github.com/heraldhq/herald/bench"
)

const benchDelayedUsage = `herald bench delayed [options]

Measure how a running Herald promotes delayed events: how many it moves
into their topic's log per second when they come due, and how late. It
creates a fresh topic bench-delayed.<random> and publishes --events
events to it in batches of --batch with --workers requests in flight,
each with a due time (Herald-Deliver-At): all at one instant --lead after
the start (--spread 0), or spread evenly over --spread from then. After
the first due time it polls the topic's head until every event is in the
log, then reads the log back and compares each event's time (when it
joined the log) with its due time. Then it deletes the topic (unless
--keep).

It prints the scheduling rate, the promotion rate (events over the time
from the first due time to the last event's joining), the lateness p50
to max, the server's CPU during the promotion, and events that came
early, never or twice (the exit status is 1 if any did, or if scheduling
did not end before the first due time: raise --lead).

The times are the server's clock against the bench's: run both on one
machine. It needs an admin key and talks to loopback addresses only,
unless --allow-remote is given.

Scenarios (docs/benchmarks.md):
  a million due at one instant    herald bench delayed --events 1000000 --lead 3m
  a million due over 50 s         herald bench delayed --events 1000000 --spread 50s --lead 3m
  smoke run (seconds)             herald bench delayed --events 2000 --lead 5s`

func parseBenchDelayed(c *cli, args []string) (bench.DelayedConfig, benchOutput, error) {
	cfg := bench.DelayedDefaults()
	var (
		out benchOutput
	)
	fs := c.flagSet("bench delayed", benchDelayedUsage)
	fs.IntVar(&cfg.Events, "events", cfg.Events, "`N` delayed events to schedule")
	fs.Var(durationFlag{&cfg.Spread}, "spread", "spread the due times evenly over `D` (0: all due at one instant)")
	fs.Var(durationFlag{&cfg.Lead}, "lead", "the first event is due `D` after the start; scheduling must end before")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "`K` events per publish request")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "`N` publish requests in flight")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "payload size in `BYTES`")
	fs.Var(durationFlag{&cfg.Timeout}, "timeout", "wait at most `D` after the last due time for the promotions")
	sb := serverBench{&cfg.Server, &cfg.Key, &cfg.PID, &cfg.Keep, &cfg.AllowRemote, &cfg.Progress}
	sb.bind(fs, "the topic")
	err := sb.parse(c, fs, &out, args)
	return cfg, out, err
}

func benchDelayedVerb(ctx context.Context, c *cli, args []string) error {
	cfg, out, err := parseBenchDelayed(c, args)
	if err != nil {
		return err
	}
	return runBenchVerb(ctx, c, "bench delayed", cfg, out, bench.RunDelayed)
}
