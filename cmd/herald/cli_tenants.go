package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/heraldhq/herald/client"
)

const tenantsOverview = `Usage: herald tenants <subverb> [arguments]

  put ID [--name N] [--metadata K=V...] [--topic-prefix P]
         [--max-subscriptions N] [--rate-limit R] [--max-in-flight N]
                  create a tenant, or replace it
  get ID          show a tenant
  list            list the tenants
  delete ID       delete a tenant with its subscriptions and keys

A tenant is one of your customers. Keys made with "herald keys create
--tenant ID" see and change only that tenant's subscriptions. Every tenants
subverb needs an admin key (get also takes the tenant's own key).

Run "herald help tenants <subverb>" for its options.
`

func tenantsVerb(ctx context.Context, c *cli, args []string) error {
	return c.subverb(ctx, "tenants", tenantsOverview, args, map[string]func(context.Context, *cli, []string) error{
		"put":    tenantsPut,
		"get":    tenantsGet,
		"list":   tenantsList,
		"delete": tenantsDelete,
	})
}

func tenantsPut(ctx context.Context, c *cli, args []string) error {
	var spec client.TenantSpec
	var meta []string
	fs := c.flagSet("tenants put", `herald tenants put ID [--name N] [--metadata K=V...] [--topic-prefix P] [--max-subscriptions N] [--rate-limit R] [--max-in-flight N] [--publish-rate R] [--max-sources N]

Create the tenant ID, or replace it: options left out are cleared. ID is 1 to
64 lowercase letters, digits, '_' or '-'.`)
	fs.StringVar(&spec.Name, "name", "", "a `NAME` for people")
	fs.Var(listFlag{&meta}, "metadata", "`K=V`: your own data, returned as given; repeatable")
	fs.StringVar(&spec.TopicPrefix, "topic-prefix", "", "`P`: the tenant's subscriptions must stay within it, such as tenants.acme.>")
	fs.Var(intFlag{&spec.Limits.MaxSubscriptions}, "max-subscriptions", "at most `N` subscriptions (default 0: no limit)")
	fs.Var(floatFlag{&spec.Limits.RateLimit}, "rate-limit", "at most `R` deliveries per second over its subscriptions, per node (default 0: no limit)")
	fs.Var(intFlag{&spec.Limits.MaxInFlight}, "max-in-flight", "at most `N` deliveries in flight over its subscriptions, per node (default 0: no limit)")
	fs.Var(floatFlag{&spec.Limits.PublishRate}, "publish-rate", "at most `R` events per second from its keys and sources, per node (default 0: no limit)")
	fs.Var(intFlag{&spec.Limits.Sources}, "max-sources", "at most `N` sources (default 0: no limit)")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	for _, kv := range meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fs.usageErrorf("--metadata wants K=V, got %q", kv)
		}
		if spec.Metadata == nil {
			spec.Metadata = map[string]string{}
		}
		spec.Metadata[k] = v
	}
	t, created, err := c.client().PutTenant(ctx, pos[0], spec)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(t)
	}
	if err := printTenant(c, t); err != nil {
		return err
	}
	what := "replaced"
	if created {
		what = "created"
	}
	_, err = fmt.Fprintf(c.stderr, "%s tenant %s\n", what, t.ID)
	return err
}

func printTenant(c *cli, t client.Tenant) error {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", t.ID)
	fmt.Fprintf(tw, "name:\t%s\n", cell(t.Name))
	for _, k := range sortedKeys(t.Metadata) {
		fmt.Fprintf(tw, "metadata %s:\t%s\n", cell(k), cell(t.Metadata[k]))
	}
	fmt.Fprintf(tw, "topic prefix:\t%s\n", orNone(t.TopicPrefix))
	fmt.Fprintf(tw, "max subscriptions:\t%s\n", limit(float64(t.Limits.MaxSubscriptions)))
	fmt.Fprintf(tw, "rate limit:\t%s\n", limit(t.Limits.RateLimit))
	fmt.Fprintf(tw, "max in flight:\t%s\n", limit(float64(t.Limits.MaxInFlight)))
	fmt.Fprintf(tw, "publish rate:\t%s\n", limit(t.Limits.PublishRate))
	fmt.Fprintf(tw, "max sources:\t%s\n", limit(float64(t.Limits.Sources)))
	fmt.Fprintf(tw, "created:\t%s\n", formatTime(t.CreatedAt))
	fmt.Fprintf(tw, "updated:\t%s\n", formatTime(t.UpdatedAt))
	return tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func limit(v float64) string {
	if v == 0 {
		return "none"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func tenantsGet(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("tenants get", `herald tenants get ID

Show the tenant ID.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	t, err := c.client().GetTenant(ctx, pos[0])
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(t)
	}
	return printTenant(c, t)
}

func tenantsList(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("tenants list", `herald tenants list

List every tenant, in id order.`)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	var all []client.Tenant
	for cursor := ""; ; {
		page, err := c.client().ListTenants(ctx, cursor, 1000)
		if err != nil {
			return err
		}
		all = append(all, page.Tenants...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if c.g.output == outputJSON {
		return c.printJSON(struct {
			Tenants []client.Tenant `json:"tenants"`
		}{append([]client.Tenant{}, all...)})
	}
	if len(all) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no tenants")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tTOPIC PREFIX\tMAX SUBS\tRATE LIMIT\tMAX IN FLIGHT")
	for _, t := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, cell(t.Name), orNone(t.TopicPrefix),
			limit(float64(t.Limits.MaxSubscriptions)), limit(t.Limits.RateLimit), limit(float64(t.Limits.MaxInFlight)))
	}
	return tw.Flush()
}

func tenantsDelete(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("tenants delete", `herald tenants delete ID

Delete the tenant ID with its subscriptions (and their retries, dead letters
and attempts) and its keys.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if err := c.client().DeleteTenant(ctx, pos[0]); err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return nil
	}
	_, err = fmt.Fprintf(c.stdout, "deleted tenant %s\n", pos[0])
	return err
}
