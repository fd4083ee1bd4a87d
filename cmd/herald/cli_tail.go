package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/client"
)

const tailUsage = `herald tail TOPIC [options]

Follow TOPIC, a topic name or a pattern such as orders.* or orders.>, and
print each event as it is published, one line per event, until
interrupted. The stream reconnects by itself and resumes where it
stopped, so no event is printed twice or skipped.

Text output: time, topic, #seq, type and key, then the payload on the
same line (JSON compacted; other text quoted when it has control
characters; binary summarised). With --output json each line is the
event as a JSON object, the payload inline as "data" or in
"data_base64".`

// tailArgs is a parsed "tail" command line.
type tailArgs struct {
	topic     string
	since     int64 // client.FromNow unless --since gives a seq
	sinceTime time.Time
	filter    json.RawMessage
	count     int // stop after this many events; 0: never
}

func parseTail(c *cli, args []string) (tailArgs, error) {
	a := tailArgs{since: client.FromNow}
	var since, filterText string
	fs := c.flagSet("tail", tailUsage)
	fs.StringVar(&since, "since", "", "start after seq `N` (0: every retained event) or at an RFC 3339 TIME; default: new events only")
	fs.StringVar(&filterText, "filter", "", "only events that pass the filter `JSON`, e.g. '{\"types\":[\"order.*\"]}'")
	fs.IntVar(&a.count, "count", 0, "exit after `N` events")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return a, err
	}
	a.topic = pos[0]
	switch {
	case since == "":
	case isSeq(since):
		n, err := strconv.ParseInt(since, 10, 64)
		if err != nil {
			return a, fs.usageErrorf("--since %q: the seq is out of range", since)
		}
		a.since = n
	default:
		t, err := time.Parse(time.RFC3339Nano, since)
		if err != nil {
			return a, fs.usageErrorf("--since %q: want a seq (0 or more) or an RFC 3339 time such as 2025-01-02T15:04:05Z", since)
		}
		a.sinceTime = t
	}
	if filterText != "" {
		if !json.Valid([]byte(filterText)) {
			return a, fs.usageErrorf("--filter: not valid JSON: %s", filterText)
		}
		a.filter = json.RawMessage(filterText)
	}
	if a.count < 0 {
		return a, fs.usageErrorf("--count %d: want 0 or more", a.count)
	}
	return a, nil
}

func isSeq(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// tailVerb runs "herald tail". It returns nil when interrupted: that is
// how a tail ends.
func tailVerb(ctx context.Context, c *cli, args []string) error {
	a, err := parseTail(c, args)
	if err != nil {
		return err
	}
	st, err := c.client().Stream(ctx, a.topic, a.since, client.StreamOptions{
		SinceTime: a.sinceTime,
		Filter:    a.filter,
		OnGap: func(g client.Gap) {
			fmt.Fprintf(c.stderr, "herald: events %d to %d of %s passed retention before they could be shown; going on from %d\n",
				g.MissedFrom, g.MissedTo, g.Topic, g.FirstSeq)
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer st.Close()
	for n := 0; a.count == 0 || n < a.count; n++ {
		e, err := st.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := writeTailLine(c.stdout, e, c.g.output == outputJSON); err != nil {
			return err
		}
	}
	return nil
}

// writeTailLine writes one event on one line.
func writeTailLine(w io.Writer, e client.Event, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s #%d %s", formatTime(e.Time), cell(e.Topic), e.Seq, orDash(cell(e.Type)))
	if e.Key != "" {
		fmt.Fprintf(&b, " key=%s", cell(e.Key))
	}
	b.WriteString(" ")
	var compact bytes.Buffer
	switch {
	case client.IsJSONContentType(e.ContentType) && json.Compact(&compact, e.Payload) == nil:
		b.Write(compact.Bytes())
	case len(e.Payload) == 0:
		b.WriteString("(empty)")
	case isText(e.Payload):
		b.WriteString(cell(string(e.Payload)))
	default:
		fmt.Fprintf(&b, "(%d bytes of binary data; --output json shows them in base64)", len(e.Payload))
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}
