package main

import (
	"context"

	"github.com/heraldhq/herald/bench"
)

const benchArchiveUsage = `herald bench archive [options]

Measure archives: how fast the archive writer writes events into files
(Parquet by default), the bytes per event on disk, and how long a query
for one organization and one hour takes to its first page.

With --dir D it needs no server: it generates --events events of one
topic, spread evenly over --hours hours and --orgs organizations, and
writes them into D with Herald's archive writer in batches of --batch
(the flush size an archive hands the writer), partitioned by organization
and hour as an archive would. The write rate is the events over the time
spent in the writer (fsyncs included, making the events not). It then
times --queries first pages of --limit events of one organization and one
hour, chosen at random, in-process with the code behind
GET /v1/archives/{name}/events (the files just written: the OS page cache
is warm). --cpu-profile profiles the writer and the queries.

Without --dir it measures a running server: it publishes --events events
to a fresh topic bench-archive.<random>, then creates a Parquet archive of
it with "start": "earliest" in the server's archive directory and times
the drain until the server's herald_archive_events_written_total counts
every event (run no other archive meanwhile), with the server's CPU; then
it times first pages over HTTP. It deletes the topic and the archive
(unless --keep); the archive's files stay in the server's archive
directory. It needs an admin key and talks to loopback addresses only,
unless --allow-remote is given.

Scenarios (docs/benchmarks.md):
  the writer, 10M events, 100 orgs x 72 h   herald bench archive --dir /tmp/arch --events 10000000 --hours 72
  the same in JSON Lines                    herald bench archive --dir /tmp/arch-jsonl --format jsonl --events 2000000 --hours 14
  a server draining 500k events            herald bench archive --events 500000 --batch 1000
  smoke run (seconds)                       herald bench archive --dir /tmp/arch-smoke --events 20000 --hours 2 --queries 5`

func parseBenchArchive(c *cli, args []string) (bench.ArchiveConfig, benchOutput, error) {
	cfg := bench.ArchiveDefaults()
	var out benchOutput
	fs := c.flagSet("bench archive", benchArchiveUsage)
	fs.StringVar(&cfg.Dir, "dir", "", "generate the archive into the folder `D` (no server)")
	fs.IntVar(&cfg.Events, "events", cfg.Events, "`N` events")
	fs.IntVar(&cfg.Orgs, "orgs", cfg.Orgs, "`N` organizations (the partition key)")
	fs.IntVar(&cfg.Hours, "hours", cfg.Hours, "spread the generated events over `N` hours")
	fs.IntVar(&cfg.Batch, "batch", 0, "`K` events per written batch (--dir, default 100000) or per publish request (default 1000)")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "`N` publish requests in flight")
	fs.StringVar(&cfg.Format, "format", cfg.Format, "parquet or jsonl")
	fs.StringVar(&cfg.Compression, "compression", "", "zstd or gzip, for jsonl")
	fs.IntVar(&cfg.Queries, "queries", cfg.Queries, "time `N` first pages")
	fs.IntVar(&cfg.Limit, "limit", cfg.Limit, "`N` events a page")
	fs.Var(durationFlag{&cfg.Timeout}, "timeout", "wait at most `D` for the server's archive to drain")
	sb := serverBench{&cfg.Server, &cfg.Key, &cfg.PID, &cfg.Keep, &cfg.AllowRemote, &cfg.Progress}
	sb.bind(fs, "the topic and the archive")
	err := sb.parse(c, fs, &out, args)
	return cfg, out, err
}

func benchArchiveVerb(ctx context.Context, c *cli, args []string) error {
	cfg, out, err := parseBenchArchive(c, args)
	if err != nil {
		return err
	}
	return runBenchVerb(ctx, c, "bench archive", cfg, out, bench.RunArchive)
}
