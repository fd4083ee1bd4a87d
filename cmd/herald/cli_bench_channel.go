package main

import (
	"context"
	"strings"

	"github.com/heraldhq/herald/bench"
)

const benchChannelUsage = `herald bench --channel kafka|redis|nats|amqp|mqtt|email [options]

Measure Herald delivering to a broker through a channel, beside a bare
producer of the same client library (franz-go, go-redis, nats.go,
amqp091-go, Paho) writing the same
events to the same broker with the same batching and no Herald in
between, in the same run. It creates a topic bench.ch<random> and one
subscription of the channel (its max_batch_events, linger_ms and
max_in_flight from the options), reads the broker from its start, and
reports for both the events read back (distinct, lost, duplicated) and
the delivered events per second, then Herald's rate over the bare
producer's, and the server's CPU time over Herald's delivery, in all
and per event (--pid; found from the server's port on loopback). By default Herald's events are published while the
subscription is paused and its rate is timed from the resume to the last
event read, the channel's own rate as the bare producer's is; --live
times from the first publish while delivering. The bare producer's
messages carry the key and the payload only, Herald's its metadata too.

Kafka: without --broker, a kfake cluster runs in this process (no Kafka
can be installed here); Redis: --broker defaults to 127.0.0.1:6379
(stream mode); email: --broker is Mailpit's SMTP address (default
127.0.0.1:1025) and --mailpit its HTTP API (default
http://127.0.0.1:8025); the server must send through the same Mailpit
(email.smtp-host, email.smtp-port, email.smtp-tls none), the bare side
is go-mail over --max-in-flight reused SMTP sessions, and the messages
are read back through Mailpit's API (run it with --max 0, so it keeps
them all), each timed by when Mailpit received it; NATS: --broker defaults to nats://127.0.0.1:4222, and both
sides publish to JetStream streams of their own (file storage), in
batches of 500; AMQP: --broker
defaults to amqp://guest:guest@127.0.0.1:5672/, each side publishes
persistent, mandatory messages with confirms to a durable queue of its
own through the default exchange, in batches of 500; MQTT: --broker
defaults to tcp://127.0.0.1:1883, each side publishes QoS 1 messages in
the raw format to a topic of its own, in batches of 100, and a QoS 0
subscriber reads them back (at QoS 1 Mosquitto would drop what a
subscriber more than 1,000 messages behind has not taken). The server must allow private destinations
(allow-private-destinations) to reach a broker on loopback. The exit
status is 1 when events were lost or a side failed.

Scenarios (docs/benchmarks.md):
  kafka (kfake), batches of 500   herald bench --channel kafka --events 200000 --batch 100 --workers 4
  redis stream, batches of 100    herald bench --channel redis --events 200000 --batch 100 --workers 4
  nats JetStream, batches of 500  herald bench --channel nats --events 200000 --batch 100 --workers 4
  amqp (RabbitMQ), batches of 500 herald bench --channel amqp --events 200000 --batch 100 --workers 4
  mqtt (Mosquitto), batches of 100 herald bench --channel mqtt --events 200000 --batch 100 --workers 4
  email through Mailpit           herald bench --channel email --events 20000 --max-in-flight 8
  smoke run                       herald bench --channel kafka --events 2000`

// benchChannelRequested reports whether a bench command line asks for a
// channel bench (--channel), which has options of its own.
func benchChannelRequested(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "channel" {
			return true
		}
	}
	return false
}

func parseBenchChannel(c *cli, args []string) (bench.ChannelConfig, benchOutput, error) {
	cfg := bench.ChannelDefaults()
	var (
		out benchOutput
	)
	fs := c.flagSet("bench --channel", benchChannelUsage)
	fs.StringVar(&cfg.Channel, "channel", "", "the `CHANNEL` to measure: "+strings.Join(bench.Channels, ", "))
	fs.StringVar(&cfg.Broker, "broker", "", "the broker's `ADDR` (host:port or URL); kafka: none runs kfake in this process; redis: 127.0.0.1:6379; nats: nats://127.0.0.1:4222; amqp: amqp://guest:guest@127.0.0.1:5672/; mqtt: tcp://127.0.0.1:1883; email: Mailpit's SMTP, 127.0.0.1:1025")
	fs.StringVar(&cfg.MailAPI, "mailpit", "", "Mailpit's HTTP API `URL` (email only); default http://127.0.0.1:8025")
	fs.IntVar(&cfg.Partitions, "partitions", cfg.Partitions, "`N` partitions of the Kafka topics (kfake only)")
	fs.IntVar(&cfg.Events, "events", cfg.Events, "publish `N` events")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "`K` events per publish request")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "`N` concurrent publish requests")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "payload size in `BYTES`")
	fs.IntVar(&cfg.Keys, "keys", cfg.Keys, "`N` distinct event keys")
	fs.IntVar(&cfg.MaxBatchEvents, "max-batch-events", 0, "the channel's (and the bare producer's) batch of `N` events; 0: the channel's default (kafka, nats, amqp 500; redis, mqtt 100)")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "`N` batches in flight, for the subscription and the bare producer")
	fs.IntVar(&cfg.LingerMS, "linger-ms", 0, "the subscription's linger_ms `MS`")
	fs.BoolVar(&cfg.Live, "live", false, "deliver while publishing (the rate is then at most the publish rate); default: publish a backlog with the subscription paused and time its drain")
	fs.Var(durationFlag{&cfg.Timeout}, "timeout", "wait at most `D` for the deliveries after publishing")
	fs.BoolVar(&cfg.Keep, "keep", false, "leave the topic, subscription and streams in place")
	fs.IntVar(&cfg.PID, "pid", 0, "the server's process `ID`, for its CPU time over the delivery; 0 finds the process listening on the server's port (loopback only); -1 reports none")
	progress, err := c.parseBenchFlags(fs, &out, args)
	if err != nil {
		return cfg, out, err
	}
	cfg.Server, cfg.Key = c.serverURL(), c.apiKey()
	cfg.Progress = progress
	return cfg, out, nil
}

func benchChannelVerb(ctx context.Context, c *cli, args []string) error {
	cfg, out, err := parseBenchChannel(c, args)
	if err != nil {
		return err
	}
	return runBenchVerb(ctx, c, "bench --channel", cfg, out, bench.RunChannel)
}
