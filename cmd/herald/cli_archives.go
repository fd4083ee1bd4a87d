package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
)

const archivesOverview = `Usage: herald archives <subverb> [arguments]   (alias: archive)

  put NAME [--file F]  create an archive, or replace its settings, from a JSON
                       spec (a file, or standard input)
  list                 list the archives
  get NAME             show an archive and its lag
  delete NAME          delete an archive (its files stay)
  pause NAME           stop writing; resume goes on from where it stopped
  resume NAME          resume writing
  query NAME [--from T] [--to T] [--partition KEY=VALUE]... [--topic P]
                       [--filter JSON] [--limit N] [--all]
                       print archived events, one JSON object a line
  replay NAME --from T --to T [--topic T] [--topics P]
                       publish archived events again

Every subverb needs an admin key. Run "herald help archives <subverb>" for
its options; docs/archive.md shows the spec.
`

func archivesVerb(ctx context.Context, c *cli, args []string) error {
	return c.subverb(ctx, "archives", archivesOverview, args, map[string]func(context.Context, *cli, []string) error{
		"put":    archivesPut,
		"list":   archivesList,
		"get":    archivesGet,
		"delete": archivesDelete,
		"pause":  archivesPause,
		"resume": archivesResume,
		"query":  archivesQuery,
		"replay": archivesReplay,
	})
}

func archivesPut(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("archives put", `herald archives put NAME [--file F]

Create the archive NAME from a JSON spec, or replace its settings: the
topics it covers, an optional filter, the partition keys, the format,
the flush policy and the destination. The spec comes from --file, or
from standard input. Example spec:

  {"topics": "logs.>", "partition": [{"key": "org", "field": "org.id"}],
   "format": "parquet", "destination": {"type": "local", "path": "logs"}}`)
	var file string
	fs.StringVar(&file, "file", "", "read the spec from `F` (\"-\" for standard input)")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	var r io.Reader = c.stdin
	if file != "" && file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	if r == nil {
		return fs.usageErrorf("give the spec with --file or on standard input")
	}
	spec, err := io.ReadAll(io.LimitReader(r, 64<<10))
	if err != nil {
		return err
	}
	if !json.Valid(spec) {
		return fs.usageErrorf("the spec is not JSON")
	}
	out, created, err := c.client().PutArchive(ctx, pos[0], spec)
	if err != nil {
		return err
	}
	if c.g.output != outputJSON {
		what := "updated"
		if created {
			what = "created"
		}
		fmt.Fprintf(c.stdout, "%s archive %s\n", what, pos[0])
	}
	return c.printJSON(out)
}

func archivesList(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("archives list", `herald archives list

List the archives, in name order.`)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	var all []json.RawMessage
	cursor := ""
	for {
		raw, err := c.client().ListArchives(ctx, cursor)
		if err != nil {
			return err
		}
		var page struct {
			Archives   []json.RawMessage `json:"archives"`
			NextCursor string            `json:"next_cursor"`
		}
		if err := json.Unmarshal(raw, &page); err != nil {
			return err
		}
		all = append(all, page.Archives...)
		if page.NextCursor == "" || page.NextCursor == cursor {
			break
		}
		cursor = page.NextCursor
	}
	if c.g.output == outputJSON {
		return c.printJSON(map[string]any{"archives": append([]json.RawMessage{}, all...)})
	}
	if len(all) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no archives")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTOPICS\tSTATE\tFORMAT\tDESTINATION\tCREATED")
	for _, raw := range all {
		var a struct {
			Name, Topics, State, Format, Compression, CreatedAt string
			Destination                                         struct{ Type, Path, Bucket string }
		}
		_ = json.Unmarshal(raw, &a)
		var created struct {
			CreatedAt string `json:"created_at"`
		}
		_ = json.Unmarshal(raw, &created)
		format := a.Format
		if a.Format == "jsonl" {
			format += "+" + a.Compression
		}
		dest := a.Destination.Type + ":" + strings.TrimPrefix(a.Destination.Bucket+"/"+a.Destination.Path, "/")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, a.Topics, a.State, format, dest, created.CreatedAt)
	}
	return tw.Flush()
}

func archivesOne(verb, usage string, do func(ctx context.Context, c *cli, name string) (json.RawMessage, error)) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		fs := c.flagSet("archives "+verb, usage)
		pos, err := fs.parse(args, 1, 1)
		if err != nil {
			return err
		}
		out, err := do(ctx, c, pos[0])
		if err != nil {
			return err
		}
		if out == nil {
			if c.g.output != outputJSON {
				_, err = fmt.Fprintf(c.stdout, "deleted archive %s\n", pos[0])
			}
			return err
		}
		return c.printJSON(out)
	}
}

var (
	archivesGet = archivesOne("get", "herald archives get NAME\n\nShow the archive NAME, with its lag (events not yet archived).",
		func(ctx context.Context, c *cli, name string) (json.RawMessage, error) {
			return c.client().GetArchive(ctx, name)
		})
	archivesPause = archivesOne("pause", "herald archives pause NAME\n\nStop writing the archive NAME; its events wait in their topics, within retention.",
		func(ctx context.Context, c *cli, name string) (json.RawMessage, error) {
			return c.client().PauseArchive(ctx, name)
		})
	archivesResume = archivesOne("resume", "herald archives resume NAME\n\nResume writing the archive NAME from where it stopped.",
		func(ctx context.Context, c *cli, name string) (json.RawMessage, error) {
			return c.client().ResumeArchive(ctx, name)
		})
	archivesDelete = archivesOne("delete", "herald archives delete NAME\n\nDelete the archive NAME. Its files stay where they are.",
		func(ctx context.Context, c *cli, name string) (json.RawMessage, error) {
			return nil, c.client().DeleteArchive(ctx, name)
		})
)

func archivesQuery(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("archives query", `herald archives query NAME [options]

Print the archived events of a time range, oldest first, one JSON object a
line, with their partition's values. Partition keys given with --partition
are read from their folders only (pruned, never scanned).`)
	var from, to, topic, filter, cursor string
	var parts []string
	var limit int
	var all bool
	fs.StringVar(&from, "from", "", "start of the range, an RFC 3339 time `T` (default: 24h before --to)")
	fs.StringVar(&to, "to", "", "end of the range (exclusive), an RFC 3339 time `T` (default: now)")
	fs.Var(listFlag{&parts}, "partition", "only the partition `KEY=VALUE` (repeatable)")
	fs.StringVar(&topic, "topic", "", "only events of the topic or pattern `P`")
	fs.StringVar(&filter, "filter", "", "only events the filter `JSON` matches")
	fs.StringVar(&cursor, "cursor", "", "start after the page whose next_cursor is `C`")
	fs.IntVar(&limit, "limit", 100, "events per page, 1 to 10000")
	fs.BoolVar(&all, "all", false, "follow the cursor to the end of the range")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	q := url.Values{}
	for k, v := range map[string]string{"from": from, "to": to, "topic": topic, "filter": filter} {
		if v != "" {
			q.Set(k, v)
		}
	}
	for _, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return fs.usageErrorf("--partition %q: want KEY=VALUE", p)
		}
		q.Set("partition."+k, v)
	}
	q.Set("limit", strconv.Itoa(limit))
	enc := json.NewEncoder(c.stdout)
	enc.SetEscapeHTML(false)
	for {
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		raw, err := c.client().QueryArchive(ctx, pos[0], q)
		if err != nil {
			return err
		}
		var page struct {
			Events     []json.RawMessage `json:"events"`
			NextCursor string            `json:"next_cursor"`
		}
		if err := json.Unmarshal(raw, &page); err != nil {
			return err
		}
		for _, e := range page.Events {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		if !all || page.NextCursor == "" {
			if page.NextCursor != "" {
				fmt.Fprintf(c.stderr, "more: --cursor %s\n", page.NextCursor)
			}
			return nil
		}
		cursor = page.NextCursor
	}
}

func archivesReplay(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("archives replay", `herald archives replay NAME --from T --to T [options]

Publish the archived events of a time range again, to --topic or each to
its own topic, with their original ids as idempotency keys: a second
replay of the same range publishes nothing twice.`)
	var spec struct {
		From   string `json:"from"`
		To     string `json:"to"`
		Topic  string `json:"topic,omitempty"`
		Topics string `json:"topics,omitempty"`
	}
	fs.StringVar(&spec.From, "from", "", "start of the range, an RFC 3339 time `T`")
	fs.StringVar(&spec.To, "to", "", "end of the range (exclusive), an RFC 3339 time `T`")
	fs.StringVar(&spec.Topic, "topic", "", "publish to the topic `T` (default: each event's own)")
	fs.StringVar(&spec.Topics, "topics", "", "only events of the topic or pattern `P`")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if spec.From == "" || spec.To == "" {
		return fs.usageErrorf("--from and --to are required")
	}
	body, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	out, err := c.client().ReplayArchive(ctx, pos[0], body)
	if err != nil {
		return err
	}
	return c.printJSON(out)
}
