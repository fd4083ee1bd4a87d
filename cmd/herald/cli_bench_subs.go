package main

import (
	"context"

	"github.com/heraldhq/herald/bench"
)

const benchSubsUsage = `herald bench subscriptions [options]

Measure what many subscriptions cost a running Herald. It creates --subs
webhook subscriptions (verification none) over --topics topics, to a
receiver in this process, with --workers create calls in flight, and
times them. It lets the server settle, then watches it for --idle with
nothing happening: its CPU (the target is almost none) and its RSS, and
the growth of RSS per subscription. At that count it times --churn
creates, pauses, resumes and deletes of one more subscription each, then
publishes one event to the first topic and times its fan-out to every
subscription there (first and last delivery). Then it deletes what it
made (unless --keep).

The server must let webhooks reach loopback (allow-private-destinations)
and take an admin key. It talks to loopback addresses only, unless
--allow-remote is given; CPU and RSS are read from /proc (Linux).

Scenarios:
  idle cost of 10,000           herald bench subscriptions --subs 10000 --idle 30s
  100,000 over 10,000 topics     herald bench subscriptions --subs 100000 --topics 10000
  fan-out to 10,000             herald bench subscriptions --subs 10000 --idle 5s --churn 0
  smoke run                     herald bench subscriptions --subs 50 --idle 1s --churn 10`

func parseBenchSubs(c *cli, args []string) (bench.SubsConfig, benchOutput, error) {
	cfg := bench.SubsDefaults()
	var (
		out benchOutput
	)
	fs := c.flagSet("bench subscriptions", benchSubsUsage)
	fs.IntVar(&cfg.Subs, "subs", cfg.Subs, "`N` subscriptions to create")
	fs.IntVar(&cfg.Topics, "topics", cfg.Topics, "spread them over `N` topics")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "`N` API calls in flight")
	fs.Var(durationFlag{&cfg.Idle}, "idle", "watch the idle server for `D`")
	fs.IntVar(&cfg.Churn, "churn", cfg.Churn, "time `N` creates, pauses, resumes and deletes at the full count (0: none)")
	fs.BoolVar(&cfg.FanOut, "fan-out", cfg.FanOut, "publish one event to the first topic and time its fan-out")
	fs.Var(durationFlag{&cfg.Timeout}, "timeout", "wait at most `D` for the fan-out")
	sb := serverBench{&cfg.Server, &cfg.Key, &cfg.PID, &cfg.Keep, &cfg.AllowRemote, &cfg.Progress}
	sb.bind(fs, "the subscriptions and topics")
	err := sb.parse(c, fs, &out, args)
	return cfg, out, err
}

func benchSubsVerb(ctx context.Context, c *cli, args []string) error {
	cfg, out, err := parseBenchSubs(c, args)
	if err != nil {
		return err
	}
	return runBenchVerb(ctx, c, "bench subscriptions", cfg, out, bench.RunSubs)
}
