package main

import (
	"context"
	"time"

	"github.com/heraldhq/herald/bench"
)

const benchStreamsUsage = `herald bench streams [options]

Measure a running Herald's realtime streams. bench streams creates a fresh
topic bench-streams.<random>, reads the server's RSS, and opens --clients
stream connections to it from this process (WebSocket, SSE, or half of
each with --proto mixed), each subscribed from the topic's first event.
It holds them idle for --idle and reads the RSS again: the growth divided
by the connections is the server's memory per connection. Then it
publishes --events events at --rate events/s (open loop), each fanned out
to every connection, waits at most --timeout for every acknowledged event
to reach every connection, and deletes the topic.

It prints the connect time, the server's RSS per connection, the publish
rate and latency, deliveries expected, delivered, lost and duplicated, the
delivery rate, the end-to-end latency (from each event's intended publish
time to its arrival, p50 to max), the connections the server ended (they
are reopened from their last seq, as a real client would), and the CPU
used by the server and by this process over the publish window.

It needs an admin key. The server limits open streams per API key
(stream.max-conns-per-key, default 1000): start it with
--stream.max-conns-per-key above --clients. Each connection takes a file
descriptor here and in the server. It talks to loopback addresses only,
unless --allow-remote is given. The exit status is 1 when a connection
could not be opened, publishing failed or deliveries were lost.

Scenarios:
  memory of idle connections  herald bench streams --clients 19000 --idle 30s --events 1
  broadcast, 5,000 clients    herald bench streams --clients 5000 --rate 10 --duration 60s
  broadcast, 19,000 clients   herald bench streams --clients 19000 --rate 2 --duration 60s
  most deliveries/s           herald bench streams --clients 1000 --rate 200 --batch 10 --duration 30s
  SSE and WebSocket           herald bench streams --clients 1000 --proto mixed
  smoke run (seconds)         herald bench streams --clients 50 --rate 100 --events 100 --idle 0`

// parseBenchStreams turns a "bench streams" command line into a
// bench.StreamsConfig; the bool is whether to print JSON.
func parseBenchStreams(c *cli, args []string) (bench.StreamsConfig, benchOutput, error) {
	cfg := bench.StreamsDefaults()
	cfg.Events, cfg.Duration = 0, 0 // derived from each other unless given
	var (
		out benchOutput
	)
	fs := c.flagSet("bench streams", benchStreamsUsage)
	fs.IntVar(&cfg.Clients, "clients", cfg.Clients, "`N` stream connections")
	fs.StringVar(&cfg.Proto, "proto", cfg.Proto, "`TRANSPORT` of the connections: ws, sse, or mixed (half each)")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "publish `R` events/s on a fixed timeline (open loop)")
	fs.IntVar(&cfg.Events, "events", 0, "publish `N` events; 0: --rate × --duration")
	fs.Var(durationFlag{&cfg.Duration}, "duration", "publish for `D` (default 30s, or as long as --events take at --rate)")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "`K` events per publish request (more than 1 uses the batch endpoint)")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "at most `N` publish requests in flight")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "payload size in `BYTES`")
	fs.Var(durationFlag{&cfg.Idle}, "idle", "hold every connection idle for `D` before reading the server's RSS (0: read it at once)")
	fs.IntVar(&cfg.Dialers, "dialers", cfg.Dialers, "`N` connection attempts in flight while connecting")
	fs.Var(durationFlag{&cfg.Timeout}, "timeout", "wait at most `D` for the deliveries after publishing")
	fs.IntVar(&cfg.PID, "pid", 0, "the server's process `ID`, for its RSS and CPU; 0 finds the process listening on the server's port")
	fs.BoolVar(&cfg.Keep, "keep", false, "leave the topic in place")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a server that is not on loopback")
	progress, err := c.parseBenchFlags(fs, &out, args)
	if err != nil {
		return cfg, out, err
	}
	if cfg.Idle == 0 { // --idle 0: StreamsConfig holds none when negative (zero is its default)
		cfg.Idle = -time.Nanosecond
	}
	cfg.Server, cfg.Key = c.serverURL(), c.apiKey()
	cfg.Progress = progress
	return cfg, out, nil
}

// benchStreamsVerb runs "herald bench streams".
func benchStreamsVerb(ctx context.Context, c *cli, args []string) error {
	cfg, out, err := parseBenchStreams(c, args)
	if err != nil {
		return err
	}
	return runBenchVerb(ctx, c, "bench streams", cfg, out, bench.RunStreams)
}
