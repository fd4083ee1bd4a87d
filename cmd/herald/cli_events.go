package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/heraldhq/herald/client"
)

const eventsOverview = `Usage: herald events <subverb> [arguments]

  list TOPIC [--after-seq N] [--limit M]
                  list a topic's events in seq order
  get TOPIC ID    show one event with its payload

Run "herald help events <subverb>" for its options.
`

func eventsVerb(ctx context.Context, c *cli, args []string) error {
	return c.subverb(ctx, "events", eventsOverview, args, map[string]func(context.Context, *cli, []string) error{
		"list": eventsList,
		"get":  eventsGet,
	})
}

// eventsListArgs is a parsed "events list" command line.
type eventsListArgs struct {
	topic    string
	afterSeq int64
	limit    int
}

func parseEventsList(c *cli, args []string) (eventsListArgs, error) {
	var a eventsListArgs
	fs := c.flagSet("events list", `herald events list TOPIC [options]

List up to --limit events of TOPIC whose seq is above --after-seq, oldest
first. To page on, pass the last seq listed as --after-seq.`)
	fs.Int64Var(&a.afterSeq, "after-seq", 0, "list events with a seq above `N`")
	fs.IntVar(&a.limit, "limit", 0, "list at most `M` events, 1 to 1000 (server default 100)")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return a, err
	}
	if a.afterSeq < 0 {
		return a, fs.usageErrorf("--after-seq %d: want 0 or more", a.afterSeq)
	}
	if a.limit < 0 {
		return a, fs.usageErrorf("--limit %d: want 1 to 1000", a.limit)
	}
	a.topic = pos[0]
	return a, nil
}

func eventsList(ctx context.Context, c *cli, args []string) error {
	a, err := parseEventsList(c, args)
	if err != nil {
		return err
	}
	page, err := c.client().ListEvents(ctx, a.topic, a.afterSeq, a.limit)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		if page.Events == nil {
			page.Events = []client.Event{}
		}
		return c.printJSON(page)
	}
	if len(page.Events) == 0 {
		_, err := fmt.Fprintf(c.stderr, "no events in %s after seq %d\n", a.topic, a.afterSeq)
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tID\tTIME\tTYPE\tKEY\tCONTENT TYPE\tBYTES")
	for _, e := range page.Events {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\n", e.Seq, e.ID, formatTime(e.Time),
			orDash(cell(e.Type)), orDash(cell(e.Key)), orDash(cell(e.ContentType)), len(e.Payload))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if limit := a.limit; len(page.Events) == limit || (limit == 0 && len(page.Events) == 100) {
		_, err = fmt.Fprintf(c.stderr, "more may follow: --after-seq %d\n", page.NextAfterSeq)
	}
	return err
}

func eventsGet(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("events get", `herald events get TOPIC ID

Show the event ID of TOPIC: its metadata, then its payload when that is
text. With --output json the payload is inline JSON ("data") or base64
("data_base64"), as the API sends it.`)
	pos, err := fs.parse(args, 2, 2)
	if err != nil {
		return err
	}
	e, err := c.client().GetEvent(ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(e)
	}
	return writeEvent(c.stdout, e)
}

func writeEvent(w io.Writer, e client.Event) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", e.ID)
	fmt.Fprintf(tw, "topic:\t%s\n", e.Topic)
	fmt.Fprintf(tw, "seq:\t%d\n", e.Seq)
	fmt.Fprintf(tw, "time:\t%s\n", formatTime(e.Time))
	fmt.Fprintf(tw, "type:\t%s\n", orDash(cell(e.Type)))
	fmt.Fprintf(tw, "key:\t%s\n", orDash(cell(e.Key)))
	fmt.Fprintf(tw, "idempotency key:\t%s\n", orDash(cell(e.IdempotencyKey)))
	fmt.Fprintf(tw, "content type:\t%s\n", orDash(cell(e.ContentType)))
	for _, k := range sortedKeys(e.Headers) {
		fmt.Fprintf(tw, "header %s:\t%s\n", cell(k), cell(e.Headers[k]))
	}
	fmt.Fprintf(tw, "bytes:\t%d\n", len(e.Payload))
	if err := tw.Flush(); err != nil {
		return err
	}
	if !isText(e.Payload) {
		_, err := fmt.Fprintf(w, "\n(%d bytes of binary data; --output json shows them in base64)\n", len(e.Payload))
		return err
	}
	if len(e.Payload) == 0 {
		return nil
	}
	payload := string(e.Payload)
	if !strings.HasSuffix(payload, "\n") {
		payload += "\n"
	}
	_, err := io.WriteString(w, "\n"+payload)
	return err
}

// isText reports whether a payload is safe to write to a terminal: UTF-8
// with no control characters but tab, newline and carriage return.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
			return false
		}
	}
	return true
}

// cell makes a producer-given string safe for one table cell: control
// characters (which could move the cursor or break the table) are quoted.
func cell(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 {
		return s
	}
	q := fmt.Sprintf("%q", s)
	return q[1 : len(q)-1]
}
