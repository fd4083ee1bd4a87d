package main

import (
	"context"

	"github.com/heraldhq/herald/bench"
)

const benchRulesUsage = `herald bench rules [options]

Measure rules and views on a running Herald with the seed's flagger: a
rule keeping a sliding two-minute sum of deposits per wallet (over 10,000
flags the wallet) and a view keeping each wallet's balance, over --keys
wallets. It creates both paused, publishes --events deposits (--batch per
request, --workers requests in flight), then resumes the rule alone and
times its drain of the backlog until its position reaches the last seq,
then the view likewise; it reports events per second and the server's CPU
per event (the figure that does not depend on how busy the machine is).
Then it reads the view at --read-rate (open loop, --readers in flight) and
reports the read latency. It deletes what it made (unless --keep).

It needs an admin key, and talks to loopback addresses only unless
--allow-remote is given; the server's CPU is read from /proc (Linux).

Scenarios (docs/benchmarks.md):
  flagger over 100,000 wallets, reads at 5,000/s   herald bench rules --keys 100000 --events 200000 --read-rate 5000
  smoke run                                        herald bench rules --keys 100 --events 1000 --reads 100`

func parseBenchRules(c *cli, args []string) (bench.RulesConfig, benchOutput, error) {
	cfg := bench.RulesDefaults()
	var (
		out benchOutput
	)
	fs := c.flagSet("bench rules", benchRulesUsage)
	fs.IntVar(&cfg.Keys, "keys", cfg.Keys, "`N` wallets (keys of the rule and the view)")
	fs.IntVar(&cfg.Events, "events", cfg.Events, "`N` deposits in the backlog")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "`K` deposits per publish request (1 to 1000)")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "`N` publish requests in flight")
	fs.IntVar(&cfg.Reads, "reads", cfg.Reads, "`N` view reads (0: none)")
	fs.Float64Var(&cfg.ReadRate, "read-rate", cfg.ReadRate, "view reads per second `R`")
	fs.IntVar(&cfg.Readers, "readers", cfg.Readers, "`N` view reads in flight at most")
	fs.Var(durationFlag{&cfg.Timeout}, "timeout", "wait at most `D` for the rule or the view to drain the backlog")
	sb := serverBench{&cfg.Server, &cfg.Key, &cfg.PID, &cfg.Keep, &cfg.AllowRemote, &cfg.Progress}
	sb.bind(fs, "the topic, the rule and the view")
	err := sb.parse(c, fs, &out, args)
	return cfg, out, err
}

func benchRulesVerb(ctx context.Context, c *cli, args []string) error {
	cfg, out, err := parseBenchRules(c, args)
	if err != nil {
		return err
	}
	return runBenchVerb(ctx, c, "bench rules", cfg, out, bench.RunRules)
}
