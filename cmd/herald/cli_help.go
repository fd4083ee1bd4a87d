package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/heraldhq/herald"
)

// verb is one command of herald.
type verb struct {
	name    string
	group   string // heading in "herald help"
	summary string
	run     func(ctx context.Context, c *cli, args []string) error
}

const (
	groupServer = "Server verbs"
	groupClient = "Client verbs (they call the API of a running server)"
	groupOther  = "Other verbs"
)

// verbs lists every verb, in the order "herald help" shows them.
func verbs() []verb {
	return []verb{
		{"serve", groupServer, "run the Herald server", func(ctx context.Context, c *cli, args []string) error {
			return serveCommand(ctx, args, c.stdout, c.stderr, c.getenv)
		}},
		{"migrate", groupServer, "apply the database migrations and exit", func(ctx context.Context, c *cli, args []string) error {
			return migrateCommand(ctx, args, c.stdout, c.stderr, c.getenv)
		}},
		{"topics", groupClient, "create, list, get or delete topics", topicsVerb},
		{"publish", groupClient, "publish an event to a topic", publishVerb},
		{"events", groupClient, "list a topic's events, or get one", eventsVerb},
		{"keys", groupClient, "create, list or delete API keys", keysVerb},
		{"tenants", groupClient, "create, list, get or delete tenants", tenantsVerb},
		{"schedules", groupClient, "create, list, get, pause, resume or delete schedules; list or cancel delayed events", schedulesVerb},
		{"templates", groupClient, "create, list, get or delete message templates of email, SMS and push", templatesVerb},
		{"subscriptions", groupClient, "manage webhook subscriptions (alias: subs)", subscriptionsVerb},
		{"sources", groupClient, "manage sources: outbox, inbound webhooks, brokers", sourcesVerb},
		{"archives", groupClient, "manage archives and query them (alias: archive)", archivesVerb},
		{"rules", groupClient, "create, list, get, pause, resume, rebuild or delete rules", rulesVerb},
		{"views", groupClient, "manage views; read, set or clear their rows", viewsVerb},
		{"tail", groupClient, "follow a topic's events as they are published", tailVerb},
		{"listen", groupClient, "receive a topic's webhooks on a local port and print them (development)", listenVerb},
		{"push", groupServer, "make a Web Push (VAPID) key pair: herald push vapid-keys", pushVerb},
		{"bench", groupClient, "measure a running Herald (or the raw relay)", benchVerb},
		{"version", groupOther, "print the version of herald", versionVerb},
		{"help", groupOther, "print help: herald help [verb [subverb]]", helpVerb},
	}
}

// aliases are other names of verbs.
var aliases = map[string]string{"subs": "subscriptions", "archive": "archives"}

// verbName resolves an alias to its verb's name.
func verbName(name string) string {
	if v, ok := aliases[name]; ok {
		return v
	}
	return name
}

// dispatch parses the global options before the verb, then runs the verb.
func (c *cli) dispatch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("herald", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c.globalFlags(fs)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			c.writeUsage(c.stderr)
			return flag.ErrHelp
		}
		return usageErrorf("%v", err)
	}
	if fs.NArg() == 0 {
		c.writeUsage(c.stderr)
		return usageErrorf("no verb given")
	}
	name, rest := verbName(fs.Arg(0)), fs.Args()[1:]
	for _, v := range verbs() {
		if v.name != name {
			continue
		}
		if v.group == groupServer && (c.g.server != "" || c.g.key != "" || c.g.output != "") {
			return &usageError{verb: name, err: fmt.Errorf("--server, --key and --output apply to client verbs, not to %s", name)}
		}
		return v.run(ctx, c, rest)
	}
	return usageErrorf("unknown verb %q", name)
}

func (c *cli) writeUsage(w io.Writer) {
	var b strings.Builder
	b.WriteString("Herald is a self-hosted event notification service.\n\nUsage: herald <verb> [arguments]\n")
	group, width := "", 0
	for _, v := range verbs() {
		width = max(width, len(v.name))
	}
	for _, v := range verbs() {
		if v.group != group {
			group = v.group
			fmt.Fprintf(&b, "\n%s:\n", group)
		}
		fmt.Fprintf(&b, "  %-*s %s\n", width, v.name, v.summary)
	}
	b.WriteString("\n" + globalUsage + "\nRun \"herald help <verb>\" for the arguments and options of a verb.\n")
	_, _ = io.WriteString(w, b.String())
}

const globalUsage = `Global options of the client verbs (before or after the verb):
  --server URL      the server's address (env HERALD_URL; default ` + defaultServer + `)
  --key KEY         the API key to send (env HERALD_KEY)
  --output FORMAT   text (readable tables, the default) or json (the API's JSON)
`

// helpVerb prints the overview, or a verb's help, to stdout.
func helpVerb(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 {
		c.writeUsage(c.stdout)
		return nil
	}
	if args[0] == "help" {
		return helpVerb(ctx, c, nil)
	}
	for _, v := range verbs() {
		if v.name == verbName(args[0]) {
			// A verb's help is what "<verb> -h" prints, sent to stdout.
			h := *c
			h.stderr = c.stdout
			return v.run(ctx, &h, append(args[1:], "-h"))
		}
	}
	return usageErrorf("unknown verb %q", args[0])
}

func versionVerb(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("version", "herald version\n\nPrint the version of herald.")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(map[string]string{"version": herald.Version, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH})
	}
	_, err := fmt.Fprintf(c.stdout, "herald %s (%s %s/%s)\n", herald.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
