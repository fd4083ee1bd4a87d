package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

const topicsOverview = `Usage: herald topics <subverb> [arguments]

  create NAME [--retention D] [--max-event-bytes N] [--dedup-window D]
                  create a topic, or replace the settings of an existing one
  list            list the topics the key may read
  get NAME        show a topic's settings and statistics
  delete NAME     delete a topic and its events

Run "herald help topics <subverb>" for its options.
`

func topicsVerb(ctx context.Context, c *cli, args []string) error {
	return c.subverb(ctx, "topics", topicsOverview, args, map[string]func(context.Context, *cli, []string) error{
		"create": topicsCreate,
		"list":   topicsList,
		"get":    topicsGet,
		"delete": topicsDelete,
	})
}

// topicsCreateArgs is a parsed "topics create" command line.
type topicsCreateArgs struct {
	name     string
	settings client.TopicSettings
}

func parseTopicsCreate(c *cli, args []string) (topicsCreateArgs, error) {
	var a topicsCreateArgs
	fs := c.flagSet("topics create", `herald topics create NAME [options]

Create the topic NAME, or replace the settings of an existing one (its
events stay): settings not given take the server's defaults. Names are dot-separated segments of letters, digits,
'_' and '-', such as orders.created. Needs an admin key.`)
	var retention, dedup time.Duration
	var maxBytes int
	fs.Var(durationFlag{&retention}, "retention", "keep events for `D`, 1m to 365d, such as 7d or 12h (server default 7d)")
	fs.IntVar(&maxBytes, "max-event-bytes", 0, "accept payloads up to `N` bytes, 1 to 4194304 (server default 262144)")
	fs.Var(durationFlag{&dedup}, "dedup-window", "remember idempotency keys for `D`, up to 30d; 0s turns deduplication off (server default 24h)")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return a, err
	}
	// Only the flags given are sent, zero included: the server applies
	// its defaults to the others and judges the values.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "retention":
			a.settings.Retention = &retention
		case "max-event-bytes":
			a.settings.MaxEventBytes = &maxBytes
		case "dedup-window":
			a.settings.DedupWindow = &dedup
		}
	})
	if maxBytes < 0 {
		return a, fs.usageErrorf("--max-event-bytes %d: want a positive number of bytes", maxBytes)
	}
	a.name = pos[0]
	return a, nil
}

func topicsCreate(ctx context.Context, c *cli, args []string) error {
	a, err := parseTopicsCreate(c, args)
	if err != nil {
		return err
	}
	t, created, err := c.client().PutTopic(ctx, a.name, a.settings)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(t)
	}
	what := "updated"
	if created {
		what = "created"
	}
	if _, err := fmt.Fprintf(c.stdout, "%s topic %s\n", what, t.Name); err != nil {
		return err
	}
	return writeTopic(c.stdout, t)
}

func topicsList(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("topics list", `herald topics list

List every topic the key may read, in name order.`)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	cl := c.client()
	var topics []client.Topic
	cursor := ""
	for {
		page, err := cl.ListTopics(ctx, cursor, 1000)
		if err != nil {
			return err
		}
		topics = append(topics, page.Topics...)
		if page.NextCursor == "" || page.NextCursor == cursor {
			break
		}
		cursor = page.NextCursor
	}
	if c.g.output == outputJSON {
		return c.printJSON(client.TopicPage{Topics: append([]client.Topic{}, topics...)})
	}
	if len(topics) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no topics")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tEVENTS\tHEAD SEQ\tRETENTION\tMAX EVENT BYTES\tDEDUP WINDOW\tCREATED")
	for _, t := range topics {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%s\t%s\n", t.Name, t.EventCount, t.HeadSeq,
			herald.FormatDuration(t.Retention), t.MaxEventBytes, herald.FormatDuration(t.DedupWindow), formatTime(t.CreatedAt))
	}
	return tw.Flush()
}

func topicsGet(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("topics get", `herald topics get NAME

Show the settings and statistics of the topic NAME.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	t, err := c.client().GetTopic(ctx, pos[0])
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(t)
	}
	return writeTopic(c.stdout, t)
}

func topicsDelete(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("topics delete", `herald topics delete NAME

Delete the topic NAME with all its events. Needs an admin key.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if err := c.client().DeleteTopic(ctx, pos[0]); err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return nil // the API answers 204 with no body
	}
	_, err = fmt.Fprintf(c.stdout, "deleted topic %s\n", pos[0])
	return err
}

func writeTopic(w io.Writer, t client.Topic) error {
	events := strconv.FormatInt(t.EventCount, 10)
	if t.EventCount > 0 {
		events += fmt.Sprintf(" (seq %d to %d)", t.FirstSeq, t.HeadSeq)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name:\t%s\n", t.Name)
	fmt.Fprintf(tw, "events:\t%s\n", events)
	fmt.Fprintf(tw, "head seq:\t%d\n", t.HeadSeq)
	fmt.Fprintf(tw, "retention:\t%s\n", herald.FormatDuration(t.Retention))
	fmt.Fprintf(tw, "max event bytes:\t%d\n", t.MaxEventBytes)
	fmt.Fprintf(tw, "dedup window:\t%s\n", herald.FormatDuration(t.DedupWindow))
	fmt.Fprintf(tw, "created:\t%s\n", formatTime(t.CreatedAt))
	fmt.Fprintf(tw, "updated:\t%s\n", formatTime(t.UpdatedAt))
	return tw.Flush()
}
