package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/heraldhq/herald/client"
)

const templatesOverview = `Usage: herald templates <subverb> [arguments]

  put NAME [options]   create a message template, or replace it
  list                 list the templates
  get NAME             show a template
  delete NAME          delete a template

Run "herald help templates <subverb>" for its options.
`

func templatesVerb(ctx context.Context, c *cli, args []string) error {
	return c.subverb(ctx, "templates", templatesOverview, args, map[string]func(context.Context, *cli, []string) error{
		"put":    templatesPut,
		"list":   templatesList,
		"get":    templatesGet,
		"delete": templatesDelete,
	})
}

// textArg reads a flag's value: the text itself, or @FILE for a file's.
func textArg(v string) (string, error) {
	if name, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
	return v, nil
}

func parseTemplatesPut(c *cli, args []string) (string, client.Template, error) {
	var t client.Template
	fs := c.flagSet("templates put", `herald templates put NAME [options]

Create the message template NAME, or replace it. Subscriptions of the
email, sms and push channels use it when their config names it
("template": NAME), or, naming none, when --topic (and --event-type, if
given) match the event. The templates are Go templates over the event
(docs/notifications.md); one that does not parse or names a field events
lack is refused. Each of --subject, --text and --html takes the text or
@FILE. Needs an admin key (the platform's templates) or a key bound to a
tenant (that tenant's, used by its subscriptions before the platform's).`)
	fs.StringVar(&t.Description, "description", "", "what the template is for (`TEXT`)")
	fs.StringVar(&t.Topic, "topic", "", "apply it to events of `TOPIC` (a topic or pattern) of subscriptions that name no template")
	fs.StringVar(&t.EventType, "event-type", "", "with --topic, only to events of `TYPE`")
	fs.StringVar(&t.Subject, "subject", "", "the subject (email) or title (push) `TEMPLATE`, or @FILE")
	fs.StringVar(&t.Text, "text", "", "the text body `TEMPLATE`, or @FILE")
	fs.StringVar(&t.HTML, "html", "", "the HTML body `TEMPLATE` (email), or @FILE")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return "", t, err
	}
	for _, p := range []*string{&t.Subject, &t.Text, &t.HTML} {
		if *p, err = textArg(*p); err != nil {
			return "", t, fmt.Errorf("templates put: %w", err)
		}
	}
	return pos[0], t, nil
}

func templatesPut(ctx context.Context, c *cli, args []string) error {
	name, spec, err := parseTemplatesPut(c, args)
	if err != nil {
		return err
	}
	t, created, err := c.client().PutTemplate(ctx, name, spec)
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
	_, err = fmt.Fprintf(c.stdout, "%s template %s\n", what, t.Name)
	return err
}

func templatesGet(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("templates get", `herald templates get NAME

Show the template NAME.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	t, err := c.client().GetTemplate(ctx, pos[0])
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(t)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "template\t%s\n", t.Name)
	for _, row := range [][2]string{{"description", t.Description}, {"topic", t.Topic}, {"event type", t.EventType}} {
		if row[1] != "" {
			fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
		}
	}
	fmt.Fprintf(tw, "updated\t%s\n", formatTime(t.UpdatedAt))
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, part := range [][2]string{{"subject", t.Subject}, {"text", t.Text}, {"html", t.HTML}} {
		if part[1] != "" {
			if _, err := fmt.Fprintf(c.stdout, "\n--- %s\n%s\n", part[0], part[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

func templatesList(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("templates list", `herald templates list

List every template, in name order.`)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	all, err := c.client().ListTemplates(ctx)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(struct {
			Templates []client.Template `json:"templates"`
		}{append([]client.Template{}, all...)})
	}
	if len(all) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no templates")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTOPIC\tEVENT TYPE\tUPDATED")
	for _, t := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, dash(t.Topic), dash(t.EventType), formatTime(t.UpdatedAt))
	}
	return tw.Flush()
}

func templatesDelete(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("templates delete", `herald templates delete NAME

Delete the template NAME. Subscriptions that name it fail their
deliveries (retried) until a template of that name exists again.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if err := c.client().DeleteTemplate(ctx, pos[0]); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "deleted template %s\n", pos[0])
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
