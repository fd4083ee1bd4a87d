package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

const rulesOverview = `Usage: herald rules <subverb> [arguments]

  put NAME FILE   create the rule NAME, or replace its definition, from the
                  JSON in FILE ("-" reads standard input)
  list            list the rules
  get NAME        show a rule
  pause NAME      stop processing; its input waits
  resume NAME     continue where it stopped
  rebuild NAME    drop its state and process the retained input again
  delete NAME     delete a rule and its state

The definition is documented in docs/rules.md. Needs an admin key.
`

const viewsOverview = `Usage: herald views <subverb> [arguments]

  put NAME FILE        create the view NAME, or replace its definition, from
                       the JSON in FILE ("-" reads standard input)
  list                 list the views
  get NAME [KEY]       show a view, or the row of KEY
  rows NAME            list a view's rows
  set NAME KEY VALUE   set the row of KEY by hand (VALUE is JSON: true, 12.5)
  delete NAME [KEY]    clear the row of KEY by hand; without KEY, delete the view
  pause NAME | resume NAME | rebuild NAME

The definition is documented in docs/rules.md. Needs an admin key (rows and
get NAME KEY need read on the view's input topic).
`

func rulesVerb(ctx context.Context, c *cli, args []string) error {
	return processorVerb(ctx, c, "rule", rulesOverview, args)
}

func viewsVerb(ctx context.Context, c *cli, args []string) error {
	return processorVerb(ctx, c, "view", viewsOverview, args)
}

// processorVerb serves "herald rules" and "herald views": both print the
// server's JSON answers as they are.
func processorVerb(ctx context.Context, c *cli, kind, overview string, args []string) error {
	verb := kind + "s"
	show := func(raw json.RawMessage, err error) error {
		if err != nil {
			return err
		}
		var v any
		if json.Unmarshal(raw, &v) != nil {
			_, err := c.stdout.Write(raw)
			return err
		}
		return c.printJSON(v)
	}
	simple := func(action string) func(context.Context, *cli, []string) error {
		return func(ctx context.Context, c *cli, args []string) error {
			fs := c.flagSet(verb+" "+action, fmt.Sprintf("herald %s %s NAME\n\n%s the %s NAME.", verb, action, strings.ToUpper(action[:1])+action[1:], kind))
			pos, err := fs.parse(args, 1, 1)
			if err != nil {
				return err
			}
			return show(c.client().ProcessorAction(ctx, kind, pos[0], action))
		}
	}
	subs := map[string]func(context.Context, *cli, []string) error{
		"put": func(ctx context.Context, c *cli, args []string) error {
			fs := c.flagSet(verb+" put", fmt.Sprintf("herald %s put NAME FILE\n\nCreate or replace the %s NAME from the JSON definition in FILE (\"-\": standard input).", verb, kind))
			pos, err := fs.parse(args, 2, 2)
			if err != nil {
				return err
			}
			var def []byte
			if pos[1] == "-" {
				def, err = io.ReadAll(io.LimitReader(c.stdin, 1<<20))
			} else {
				def, err = os.ReadFile(pos[1])
			}
			if err != nil {
				return fmt.Errorf("read the definition: %w", err)
			}
			if kind == "rule" {
				return show(c.client().PutRule(ctx, pos[0], def))
			}
			return show(c.client().PutView(ctx, pos[0], def))
		},
		"list": func(ctx context.Context, c *cli, args []string) error {
			fs := c.flagSet(verb+" list", fmt.Sprintf("herald %s list [--cursor C]\n\nList the %ss.", verb, kind))
			var cursor string
			fs.StringVar(&cursor, "cursor", "", "the next_cursor `C` of the previous page")
			if _, err := fs.parse(args, 0, 0); err != nil {
				return err
			}
			return show(c.client().ListProcessors(ctx, kind, cursor))
		},
		"get": func(ctx context.Context, c *cli, args []string) error {
			fs := c.flagSet(verb+" get", fmt.Sprintf("herald %s get NAME%s\n\nShow the %s NAME.", verb, map[bool]string{true: " [KEY]"}[kind == "view"], kind))
			var minSeq int64
			if kind == "view" {
				fs.Int64Var(&minSeq, "min-seq", 0, "with KEY, wait until the view reflects its input up to seq `N`")
			}
			max := 1
			if kind == "view" {
				max = 2
			}
			pos, err := fs.parse(args, 1, max)
			if err != nil {
				return err
			}
			if len(pos) == 2 {
				return show(c.client().GetViewRow(ctx, pos[0], pos[1], minSeq))
			}
			return show(c.client().GetProcessor(ctx, kind, pos[0]))
		},
		"delete": func(ctx context.Context, c *cli, args []string) error {
			fs := c.flagSet(verb+" delete", fmt.Sprintf("herald %s delete NAME%s\n\nDelete the %s NAME and its state.", verb, map[bool]string{true: " [KEY]\n\nWith KEY, clear that row by hand instead"}[kind == "view"], kind))
			max := 1
			if kind == "view" {
				max = 2
			}
			pos, err := fs.parse(args, 1, max)
			if err != nil {
				return err
			}
			if len(pos) == 2 {
				return show(c.client().DeleteViewRow(ctx, pos[0], pos[1]))
			}
			if err := c.client().DeleteProcessor(ctx, kind, pos[0]); err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.stdout, "deleted %s %s\n", kind, pos[0])
			return err
		},
		"pause":   simple("pause"),
		"resume":  simple("resume"),
		"rebuild": simple("rebuild"),
	}
	if kind == "view" {
		subs["set"] = func(ctx context.Context, c *cli, args []string) error {
			fs := c.flagSet("views set", "herald views set NAME KEY VALUE\n\nSet the row of KEY by hand; VALUE is JSON (true, 12.5, \"text\", {...}).")
			pos, err := fs.parse(args, 3, 3)
			if err != nil {
				return err
			}
			value := []byte(pos[2])
			if !json.Valid(value) {
				value, _ = json.Marshal(pos[2]) // a bare word is a string
			}
			return show(c.client().SetViewRow(ctx, pos[0], pos[1], value))
		}
		subs["rows"] = func(ctx context.Context, c *cli, args []string) error {
			fs := c.flagSet("views rows", "herald views rows NAME [--cursor C]\n\nList the view's rows in key order.")
			var cursor string
			fs.StringVar(&cursor, "cursor", "", "the next_cursor `C` of the previous page")
			pos, err := fs.parse(args, 1, 1)
			if err != nil {
				return err
			}
			return show(c.client().ListViewRows(ctx, pos[0], cursor))
		}
	}
	return c.subverb(ctx, verb, overview, args, subs)
}
