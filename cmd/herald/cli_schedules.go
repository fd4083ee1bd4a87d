package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

const schedulesOverview = `Usage: herald schedules <subverb> [arguments]

  put NAME (--cron EXPR | --every D) --topic T [options]
                  create a schedule, or replace its definition
  list            list the schedules
  get NAME        show a schedule, its last tick and its next fire times
  pause NAME      stop firing until resumed
  resume NAME     fire again (ticks passed while paused do not fire)
  delete NAME     delete a schedule
  pending TOPIC   list the topic's delayed events still waiting
  cancel TOPIC ID cancel a delayed event before it is due

Run "herald help schedules <subverb>" for its options.
`

func schedulesVerb(ctx context.Context, c *cli, args []string) error {
	return c.subverb(ctx, "schedules", schedulesOverview, args, map[string]func(context.Context, *cli, []string) error{
		"put":     schedulesPut,
		"list":    schedulesList,
		"get":     schedulesGet,
		"pause":   func(ctx context.Context, c *cli, args []string) error { return schedulesSimple(ctx, c, "pause", args) },
		"resume":  func(ctx context.Context, c *cli, args []string) error { return schedulesSimple(ctx, c, "resume", args) },
		"delete":  func(ctx context.Context, c *cli, args []string) error { return schedulesSimple(ctx, c, "delete", args) },
		"pending": schedulesPending,
		"cancel":  schedulesCancel,
	})
}

// parseSchedulesPut reads a "schedules put" command line.
func parseSchedulesPut(c *cli, args []string) (string, client.Schedule, error) {
	var s client.Schedule
	fs := c.flagSet("schedules put", `herald schedules put NAME (--cron EXPR | --every D) --topic T [options]

Create the schedule NAME, or replace its definition (ticks already fired
do not fire again). Each tick publishes one event to the topic, once
across all nodes. Cron expressions are robfig/cron's: five fields, six
with seconds first, or @hourly, @daily, @every 90m. Needs an admin key.`)
	var every time.Duration
	var data, dataFile string
	var headers []string
	fs.StringVar(&s.Cron, "cron", "", "a cron `EXPR`, such as \"0 3 * * *\" or \"*/10 * * * * *\"")
	fs.Var(durationFlag{&every}, "every", "fire every `D` (at least 1s)")
	fs.StringVar(&s.TimeZone, "time-zone", "", "the IANA time `ZONE` the cron expression is read in (default UTC)")
	fs.StringVar(&s.Event.Topic, "topic", "", "the `TOPIC` each tick publishes to")
	fs.StringVar(&s.Event.Type, "type", "", "the event `TYPE`")
	fs.StringVar(&s.Event.Key, "event-key", "", "the event `KEY`")
	fs.StringVar(&s.Event.ContentType, "content-type", "", "the payload's media `TYPE`")
	fs.StringVar(&data, "data", "", "the payload `DATA` (JSON is sent as JSON, anything else as bytes)")
	fs.StringVar(&dataFile, "data-file", "", "read the payload from file `F`")
	fs.Var(listFlag{&headers}, "header", "a `NAME=VALUE` header of each event; repeatable")
	fs.Var(timeFlag{&s.StartAt}, "start-at", "no tick before `TIME` (RFC 3339)")
	fs.Var(timeFlag{&s.EndAt}, "end-at", "no tick after `TIME` (RFC 3339)")
	fs.StringVar(&s.Missed, "missed", "", "ticks missed while down: `skip` (default), once or all")
	fs.IntVar(&s.MaxMissed, "max-missed", 0, "with --missed all, fire at most `N` missed ticks (default 100)")
	fs.BoolVar(&s.Paused, "paused", false, "create it paused")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return "", s, err
	}
	if every > 0 {
		s.Every = herald.FormatDuration(every)
	}
	if s.Event.Topic == "" {
		return "", s, fs.usageErrorf("--topic is required")
	}
	if data != "" && dataFile != "" {
		return "", s, fs.usageErrorf("give --data or --data-file, not both")
	}
	payload := []byte(data)
	if dataFile != "" {
		if payload, err = os.ReadFile(dataFile); err != nil {
			return "", s, fmt.Errorf("schedules put: %w", err)
		}
	}
	if len(payload) > 0 {
		if json.Valid(payload) && (s.Event.ContentType == "" || strings.Contains(s.Event.ContentType, "json")) {
			s.Event.Data = json.RawMessage(payload)
		} else {
			s.Event.DataBase64 = base64.StdEncoding.EncodeToString(payload)
		}
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return "", s, fs.usageErrorf("--header %q: want NAME=VALUE", h)
		}
		if s.Event.Headers == nil {
			s.Event.Headers = map[string]string{}
		}
		s.Event.Headers[k] = v
	}
	return pos[0], s, nil
}

func schedulesPut(ctx context.Context, c *cli, args []string) error {
	name, spec, err := parseSchedulesPut(c, args)
	if err != nil {
		return err
	}
	s, created, err := c.client().PutSchedule(ctx, name, spec)
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(s)
	}
	what := "updated"
	if created {
		what = "created"
	}
	if _, err := fmt.Fprintf(c.stdout, "%s schedule %s\n", what, s.Name); err != nil {
		return err
	}
	return writeSchedule(c.stdout, s)
}

func writeSchedule(w io.Writer, s client.Schedule) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	when := "cron " + s.Cron
	if s.Every != "" {
		when = "every " + s.Every
	}
	if s.TimeZone != "" {
		when += " (" + s.TimeZone + ")"
	}
	fmt.Fprintf(tw, "fires\t%s\n", when)
	fmt.Fprintf(tw, "topic\t%s\n", s.Event.Topic)
	fmt.Fprintf(tw, "missed\t%s\n", s.Missed)
	fmt.Fprintf(tw, "paused\t%t\n", s.Paused)
	if !s.LastTick.IsZero() {
		fmt.Fprintf(tw, "last tick\t%s\n", formatTime(s.LastTick))
	}
	for i, t := range s.NextFireTimes {
		label := ""
		if i == 0 {
			label = "next"
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, formatTime(t))
	}
	return tw.Flush()
}

func schedulesGet(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("schedules get", `herald schedules get NAME

Show the schedule NAME, its last tick and its next fire times.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	s, err := c.client().GetSchedule(ctx, pos[0])
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(s)
	}
	if _, err := fmt.Fprintf(c.stdout, "schedule %s\n", s.Name); err != nil {
		return err
	}
	return writeSchedule(c.stdout, s)
}

func schedulesSimple(ctx context.Context, c *cli, verb string, args []string) error {
	fs := c.flagSet("schedules "+verb, "herald schedules "+verb+" NAME\n\n"+strings.ToUpper(verb[:1])+verb[1:]+" the schedule NAME.")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	cl := c.client()
	var s client.Schedule
	switch verb {
	case "pause":
		s, err = cl.PauseSchedule(ctx, pos[0])
	case "resume":
		s, err = cl.ResumeSchedule(ctx, pos[0])
	case "delete":
		if err = cl.DeleteSchedule(ctx, pos[0]); err == nil {
			_, err = fmt.Fprintf(c.stdout, "deleted schedule %s\n", pos[0])
		}
		return err
	}
	if err != nil {
		return err
	}
	if c.g.output == outputJSON {
		return c.printJSON(s)
	}
	_, err = fmt.Fprintf(c.stdout, "%sd schedule %s\n", verb, s.Name) // paused, resumed
	return err
}

func schedulesList(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("schedules list", `herald schedules list

List every schedule, in name order.`)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	cl := c.client()
	var all []client.Schedule
	cursor := ""
	for {
		page, err := cl.ListSchedules(ctx, cursor, 1000)
		if err != nil {
			return err
		}
		all = append(all, page.Schedules...)
		if page.NextCursor == "" || page.NextCursor == cursor {
			break
		}
		cursor = page.NextCursor
	}
	if c.g.output == outputJSON {
		return c.printJSON(client.SchedulePage{Schedules: append([]client.Schedule{}, all...)})
	}
	if len(all) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no schedules")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFIRES\tTOPIC\tPAUSED\tNEXT")
	for _, s := range all {
		when := s.Cron
		if s.Every != "" {
			when = "every " + s.Every
		}
		next := "-"
		if len(s.NextFireTimes) > 0 {
			next = formatTime(s.NextFireTimes[0])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\n", s.Name, when, s.Event.Topic, s.Paused, next)
	}
	return tw.Flush()
}

func schedulesPending(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("schedules pending", `herald schedules pending TOPIC

List the topic's delayed events still waiting for their due time, in due order.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	cl := c.client()
	var all []client.ScheduledEvent
	cursor := ""
	for {
		page, err := cl.ListScheduled(ctx, pos[0], cursor, 1000)
		if err != nil {
			return err
		}
		all = append(all, page.Events...)
		if page.NextCursor == "" || page.NextCursor == cursor {
			break
		}
		cursor = page.NextCursor
	}
	if c.g.output == outputJSON {
		return c.printJSON(all)
	}
	if len(all) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no delayed events")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DELIVER AT\tID\tTYPE\tBYTES")
	for _, e := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", formatTime(e.DeliverAt), e.ID, e.Type, len(e.Payload))
	}
	return tw.Flush()
}

func schedulesCancel(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("schedules cancel", `herald schedules cancel TOPIC ID

Cancel the delayed event ID of TOPIC before it is due.`)
	pos, err := fs.parse(args, 2, 2)
	if err != nil {
		return err
	}
	if err := c.client().CancelScheduled(ctx, pos[0], pos[1]); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "cancelled %s in %s\n", pos[1], pos[0])
	return err
}
