package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldhq/herald/client"
)

const keysOverview = `Usage: herald keys <subverb> [arguments]

  create --name N --scope S [--scope S...] [--expires-in D] [--tenant T]
                  create an API key and print its secret, once
  list            list the API keys (without secrets)
  delete ID       delete an API key; requests with it fail from then on

Scopes: "admin", "publish:<pattern>", "read:<pattern>", "subscribe:<pattern>",
where a pattern is a topic name whose segments may be "*" (one segment) or,
last, ">" (one or more): publish:orders.>, read:*.created. publish:orders.>
covers orders.eu and orders.eu.returns but not orders itself.
Every keys subverb needs an admin key.

Run "herald help keys <subverb>" for its options.
`

func keysVerb(ctx context.Context, c *cli, args []string) error {
	return c.subverb(ctx, "keys", keysOverview, args, map[string]func(context.Context, *cli, []string) error{
		"create": keysCreate,
		"list":   keysList,
		"delete": keysDelete,
	})
}

// keysCreateArgs is a parsed "keys create" command line.
type keysCreateArgs struct {
	name      string
	scopes    []string
	expiresIn time.Duration
	tenant    string
}

func parseKeysCreate(c *cli, args []string) (keysCreateArgs, error) {
	var a keysCreateArgs
	fs := c.flagSet("keys create", `herald keys create --name N --scope S [--scope S...] [--expires-in D] [--tenant T]

Create an API key and print it with its secret. The server keeps only a hash
of the secret: store it now, it is not shown again. With --tenant the key is
bound to that tenant: it sees and changes only the tenant's subscriptions.`)
	fs.StringVar(&a.name, "name", "", "a `NAME` to recognise the key by, such as ci-publisher")
	fs.Var(listFlag{&a.scopes}, "scope", "a `SCOPE` such as admin or publish:orders.>; repeatable")
	fs.Var(durationFlag{&a.expiresIn}, "expires-in", "the key expires after `D`, such as 30d (default: never)")
	fs.StringVar(&a.tenant, "tenant", "", "bind the key to the tenant `T` (it cannot be admin then)")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return a, err
	}
	switch {
	case strings.TrimSpace(a.name) == "":
		return a, fs.usageErrorf("--name is required")
	case len(a.scopes) == 0:
		return a, fs.usageErrorf("at least one --scope is required, such as --scope admin or --scope publish:orders.>")
	}
	return a, nil
}

func keysCreate(ctx context.Context, c *cli, args []string) error {
	a, err := parseKeysCreate(c, args)
	if err != nil {
		return err
	}
	k, err := c.client().CreateTenantKey(ctx, a.tenant, a.name, a.scopes, a.expiresIn)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(k)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", k.ID)
	fmt.Fprintf(tw, "name:\t%s\n", k.Name)
	fmt.Fprintf(tw, "scopes:\t%s\n", strings.Join(k.Scopes, " "))
	fmt.Fprintf(tw, "expires:\t%s\n", expiry(k.ExpiresAt))
	if k.Tenant != "" {
		fmt.Fprintf(tw, "tenant:\t%s\n", k.Tenant)
	}
	fmt.Fprintf(tw, "secret:\t%s\n", k.Secret)
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.stderr, "Store the secret now: it is not shown again.")
	return err
}

func keysList(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("keys list", `herald keys list

List every API key, oldest first, without secrets.`)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	keys, err := c.client().ListKeys(ctx)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(struct {
			Keys []client.Key `json:"keys"`
		}{append([]client.Key{}, keys...)})
	}
	if len(keys) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no keys")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tSCOPES\tCREATED\tEXPIRES")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, cell(k.Name), k.Prefix, strings.Join(k.Scopes, " "),
			formatTime(k.CreatedAt), expiry(k.ExpiresAt))
	}
	return tw.Flush()
}

func keysDelete(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("keys delete", `herald keys delete ID

Delete the API key ID (key_...); requests with it fail from then on.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if err := c.client().DeleteKey(ctx, pos[0]); err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return nil // the API answers 204 with no body
	}
	_, err = fmt.Fprintf(c.stdout, "deleted key %s\n", pos[0])
	return err
}

func expiry(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return formatTime(t)
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
