package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// publishArgs is a parsed "publish" command line, with the data read.
type publishArgs struct {
	topic   string
	payload []byte
	opts    client.PublishOptions
}

func parsePublish(c *cli, args []string) (publishArgs, error) {
	var (
		a       publishArgs
		file    string
		headers []string
	)
	fs := c.flagSet("publish", `herald publish TOPIC [DATA] [options]

Publish one event to TOPIC and print its seq and id once the server has
stored it durably. The payload is DATA, or the contents of --file, or
standard input when DATA is "-" or is left out and standard input is not a
terminal. It is stored byte for byte.

--key is the API key (a global option); the event's own key is --event-key.`)
	fs.StringVar(&file, "file", "", "read the payload from file `F` (\"-\" for standard input)")
	fs.StringVar(&a.opts.ContentType, "content-type", "", "the payload's media `TYPE` (default application/json when the data is valid JSON, else application/octet-stream)")
	fs.StringVar(&a.opts.Type, "type", "", "the event `TYPE`, such as order.created")
	fs.StringVar(&a.opts.Key, "event-key", "", "the event's ordering and aggregation `KEY`")
	fs.StringVar(&a.opts.IdempotencyKey, "idempotency-key", "", "publish at most once per `KEY` within the topic's dedup window")
	fs.StringVar(&a.opts.ID, "id", "", "the event `ID` (default: assigned by the server)")
	fs.Var(listFlag{&headers}, "header", "a `NAME=VALUE` header carried to deliveries; repeatable")
	fs.Var(durationFlag{&a.opts.Delay}, "delay", "publish after `D` (such as 90s, 15m or 1d): committed now, visible then")
	fs.Var(timeFlag{&a.opts.DeliverAt}, "deliver-at", "publish at `TIME` (RFC 3339): committed now, visible then")
	pos, err := fs.parse(args, 1, 2)
	if err != nil {
		return a, err
	}
	a.topic = pos[0]

	for _, h := range headers {
		name, value, ok := strings.Cut(h, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return a, fs.usageErrorf("--header %q: want NAME=VALUE", h)
		}
		if a.opts.Headers == nil {
			a.opts.Headers = map[string]string{}
		}
		a.opts.Headers[strings.TrimSpace(name)] = value
	}

	var what string // where the data comes from, for errors
	var r io.Reader
	switch {
	case len(pos) == 2 && file != "":
		return a, fs.usageErrorf("give the data as an argument or with --file, not both")
	case len(pos) == 2 && pos[1] != "-":
		a.payload = []byte(pos[1])
	case file != "" && file != "-":
		f, err := os.Open(file)
		if err != nil {
			return a, fmt.Errorf("publish: %w", err)
		}
		defer f.Close()
		what, r = file, f
	case len(pos) == 2 || file == "-" || !isTerminal(c.stdin):
		if c.stdin == nil {
			return a, fs.usageErrorf("no standard input to read the data from")
		}
		what, r = "standard input", c.stdin
	default:
		return a, fs.usageErrorf("no data: give it as an argument, with --file F, or on standard input")
	}
	if r != nil {
		// No topic accepts more than MaxEventBytesLimit, so reading stops
		// one byte past it rather than holding a huge file in memory.
		a.payload, err = io.ReadAll(io.LimitReader(r, herald.MaxEventBytesLimit+1))
		if err != nil {
			return a, fmt.Errorf("publish: read %s: %w", what, err)
		}
		if len(a.payload) > herald.MaxEventBytesLimit {
			return a, fmt.Errorf("publish: %s holds more than %d bytes, the largest payload a topic accepts", what, herald.MaxEventBytesLimit)
		}
	}
	if a.opts.ContentType == "" {
		a.opts.ContentType = "application/octet-stream"
		if json.Valid(a.payload) {
			a.opts.ContentType = "application/json"
		}
	}
	return a, nil
}

// isTerminal reports whether r is an interactive terminal, which publish
// must not wait on for data. A reader that is not a file is not one.
func isTerminal(r io.Reader) bool {
	f, ok := r.(interface{ Stat() (os.FileInfo, error) })
	if !ok {
		return r == nil
	}
	fi, err := f.Stat()
	return err != nil || fi.Mode()&os.ModeCharDevice != 0
}

func publishVerb(ctx context.Context, c *cli, args []string) error {
	a, err := parsePublish(c, args)
	if err != nil {
		return err
	}
	res, err := c.client().Publish(ctx, a.topic, a.payload, a.opts)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(res)
	}
	if res.Duplicate {
		_, err = fmt.Fprintf(c.stdout, "duplicate: %s already holds this idempotency key at seq %d (id %s); nothing was stored\n", res.Topic, res.Seq, res.ID)
		return err
	}
	if !res.DeliverAt.IsZero() {
		_, err = fmt.Fprintf(c.stdout, "scheduled for %s at %s: id %s\n", res.Topic, formatTime(res.DeliverAt), res.ID)
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "published to %s: seq %d, id %s\n", res.Topic, res.Seq, res.ID)
	return err
}
