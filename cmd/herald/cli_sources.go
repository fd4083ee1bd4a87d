package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/heraldhq/herald/client"
)

const sourcesOverview = `Usage: herald sources <subverb> [arguments]

  create --kind K --topic T [--config JSON|@FILE] [--mapping JSON|@FILE]
         [--shards N] [--description D] [--paused]
                  create a source (outbox, webhook, kafka, ...)
  list [--tenant ID]
                  list the sources with their state and lag
  get ID          show a source with its status: lag, counts, last error
  update ID [--config ...] [--topic T] [--mapping ...] [--shards N] [--description D]
                  change a source; a config without its secret keeps it
  pause ID        stop a source; its position stays in its service
  resume ID       run a paused source again
  delete ID       delete a source

Every sources subverb needs an admin key. See docs/sources.md.

Run "herald help sources <subverb>" for its options.
`

func sourcesVerb(ctx context.Context, c *cli, args []string) error {
	return c.subverb(ctx, "sources", sourcesOverview, args, map[string]func(context.Context, *cli, []string) error{
		"create": sourcesCreate,
		"list":   sourcesList,
		"get":    sourcesGet,
		"update": sourcesUpdate,
		"pause":  func(ctx context.Context, c *cli, a []string) error { return sourcesState(ctx, c, a, "pause") },
		"resume": func(ctx context.Context, c *cli, a []string) error { return sourcesState(ctx, c, a, "resume") },
		"delete": sourcesDelete,
	})
}

// jsonArg reads a JSON flag value: inline JSON, or @FILE.
func jsonArg(name, v string) (json.RawMessage, error) {
	if v == "" {
		return nil, nil
	}
	b := []byte(v)
	if path, ok := strings.CutPrefix(v, "@"); ok {
		var err error
		if b, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("--%s: %w", name, err)
		}
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("--%s: not valid JSON", name)
	}
	return b, nil
}

type sourceFlags struct {
	kind, topic, config, mapping, description, tenant string
	shards                                            int
	paused                                            bool
}

func (a *sourceFlags) spec() (client.SourceSpec, error) {
	cfg, err := jsonArg("config", a.config)
	if err != nil {
		return client.SourceSpec{}, err
	}
	mapping, err := jsonArg("mapping", a.mapping)
	if err != nil {
		return client.SourceSpec{}, err
	}
	s := client.SourceSpec{Kind: a.kind, Topic: a.topic, Config: cfg, Mapping: mapping, Description: a.description, Shards: a.shards, Tenant: a.tenant}
	if a.paused {
		s.State = "paused"
	}
	return s, nil
}

func (a *sourceFlags) bind(fs *cmdFlags, create bool) {
	if create {
		fs.StringVar(&a.kind, "kind", "", "the `KIND` of source: outbox, webhook, kafka, nats, amqp, mqtt, redis")
		fs.BoolVar(&a.paused, "paused", false, "create it paused")
		fs.StringVar(&a.tenant, "tenant", "", "make it tenant `ID`'s source: its topic must stay in the tenant's namespace")
	}
	fs.StringVar(&a.topic, "topic", "", "the target `TOPIC`, or a template such as orders.{topic}")
	fs.StringVar(&a.config, "config", "", "the kind's settings as `JSON`, or @FILE")
	fs.StringVar(&a.mapping, "mapping", "", "key, type, id and headers templates as `JSON`, or @FILE")
	fs.StringVar(&a.description, "description", "", "a `TEXT` for people")
	fs.IntVar(&a.shards, "shards", 0, "split the work into `N` shards, each run by one node")
}

func sourcesCreate(ctx context.Context, c *cli, args []string) error {
	var a sourceFlags
	fs := c.flagSet("sources create", `herald sources create --kind K --topic T [--config JSON|@FILE] [--mapping JSON|@FILE] [--shards N] [--description D] [--tenant ID] [--paused]

Create a source and print it (without its secrets).`)
	a.bind(fs, true)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	if a.kind == "" || a.topic == "" {
		return fs.usageErrorf("--kind and --topic are required")
	}
	spec, err := a.spec()
	if err != nil {
		return fs.usageErrorf("%v", err)
	}
	s, err := c.client().CreateSource(ctx, spec)
	if err != nil {
		return err
	}
	return c.printSource(s)
}

func sourcesUpdate(ctx context.Context, c *cli, args []string) error {
	var a sourceFlags
	fs := c.flagSet("sources update", `herald sources update ID [--config JSON|@FILE] [--topic T] [--mapping JSON|@FILE] [--shards N] [--description D]

Change the given settings of source ID and print it.`)
	a.bind(fs, false)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	spec, err := a.spec()
	if err != nil {
		return fs.usageErrorf("%v", err)
	}
	s, err := c.client().UpdateSource(ctx, pos[0], spec)
	if err != nil {
		return err
	}
	return c.printSource(s)
}

func sourcesGet(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("sources get", `herald sources get ID

Show source ID with its status: state, lag, counts, last error, shards.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	s, err := c.client().GetSource(ctx, pos[0])
	if err != nil {
		return err
	}
	return c.printSource(s)
}

func sourcesState(ctx context.Context, c *cli, args []string, verb string) error {
	fs := c.flagSet("sources "+verb, `herald sources `+verb+` ID

`+map[string]string{"pause": "Stop source ID; its position stays in its service.", "resume": "Run paused source ID again from its position."}[verb])
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	call := c.client().PauseSource
	if verb == "resume" {
		call = c.client().ResumeSource
	}
	s, err := call(ctx, pos[0])
	if err != nil {
		return err
	}
	return c.printSource(s)
}

func sourcesDelete(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("sources delete", `herald sources delete ID

Delete source ID. What it has not taken stays in its service.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if err := c.client().DeleteSource(ctx, pos[0]); err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return nil
	}
	_, err = fmt.Fprintf(c.stdout, "deleted source %s\n", pos[0])
	return err
}

func sourcesList(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("sources list", `herald sources list [--tenant ID]

List the sources with their state, lag and last error.`)
	tenant := ""
	fs.StringVar(&tenant, "tenant", "", "list only tenant `ID`'s sources")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	var all []client.Source
	cursor := ""
	for {
		page, err := c.client().ListTenantSources(ctx, tenant, cursor, 1000)
		if err != nil {
			return err
		}
		all = append(all, page.Sources...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if c.g.output == outputJSON {
		return c.printJSON(client.SourcePage{Sources: append([]client.Source{}, all...)})
	}
	if len(all) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no sources")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tTOPIC\tTENANT\tSTATE\tSHARDS\tLAG\tEVENTS IN\tDUPLICATES\tLAST ERROR")
	for _, s := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\n", s.ID, s.Kind, cell(s.Topic), cmp.Or(s.Tenant, "-"), s.State, s.Shards,
			lagText(s.Lag), s.EventsIn, s.Duplicates, cell(s.LastError))
	}
	return tw.Flush()
}

func lagText(n int64) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

func (c *cli) printSource(s client.Source) error {
	if c.g.output == outputJSON {
		return c.printJSON(s)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", s.ID)
	fmt.Fprintf(tw, "kind:\t%s\n", s.Kind)
	fmt.Fprintf(tw, "topic:\t%s\n", cell(s.Topic))
	fmt.Fprintf(tw, "state:\t%s\n", s.State)
	if s.Tenant != "" {
		fmt.Fprintf(tw, "tenant:\t%s\n", s.Tenant)
	}
	fmt.Fprintf(tw, "config:\t%s\n", cell(string(s.Config)))
	fmt.Fprintf(tw, "mapping:\t%s\n", cell(string(s.Mapping)))
	fmt.Fprintf(tw, "shards:\t%d\n", s.Shards)
	if s.InboundPath != "" {
		fmt.Fprintf(tw, "inbound:\tPOST %s\n", s.InboundPath)
	}
	fmt.Fprintf(tw, "lag:\t%s\n", lagText(s.Lag))
	fmt.Fprintf(tw, "events in:\t%d\n", s.EventsIn)
	fmt.Fprintf(tw, "duplicates:\t%d\n", s.Duplicates)
	fmt.Fprintf(tw, "errors:\t%d\n", s.Errors)
	if s.LastError != "" {
		fmt.Fprintf(tw, "last error:\t%s (%s)\n", cell(s.LastError), s.LastErrorAt)
	}
	if s.Managed {
		fmt.Fprintf(tw, "managed:\tdeclared in the sources file\n")
	}
	return tw.Flush()
}
