package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of Run: the scenario, the machine, and the result
// of each system measured. It marshals to the JSON that --output json
// prints.
type Report struct {
	Date     time.Time `json:"date"`
	Machine  Machine   `json:"machine"`
	Scenario Scenario  `json:"scenario"`
	Raw      *Result   `json:"raw,omitempty"`
	Herald   *Result   `json:"herald,omitempty"`
	// RawRatio is Herald's delivery rate divided by the raw relay's, when
	// both were measured.
	RawRatio float64 `json:"raw_ratio,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int     `json:"cpus"`
	OS        string  `json:"os"`
	Arch      string  `json:"arch"`
	GoVersion string  `json:"go_version"`
	Load1     float64 `json:"load1"` // the 1-minute load average when the run started; -1 if unknown
}

// Scenario is the load a run applied, with defaults filled in.
type Scenario struct {
	Events        int     `json:"events"`
	Rate          float64 `json:"rate"` // events/s; 0: flat out
	Workers       int     `json:"workers"`
	Batch         int     `json:"batch"`
	Size          int     `json:"size"`
	Subscriptions int     `json:"subscriptions"`
	MaxInFlight   int     `json:"max_in_flight,omitempty"`
	Verification  string  `json:"verification"`
	FailRate      float64 `json:"fail_rate,omitempty"`
	Backlog       int     `json:"backlog,omitempty"`
	BacklogVia    string  `json:"backlog_via,omitempty"`
}

// Result is what one system (Herald or the raw relay) did.
type Result struct {
	System string `json:"system"` // "herald" or "raw"
	Topic  string `json:"topic,omitempty"`

	Publishing

	Expected        int64   `json:"expected"`   // published × subscriptions
	Delivered       int64   `json:"delivered"`  // distinct (event, subscription) pairs received
	Lost            int64   `json:"lost"`       // expected pairs never received
	Duplicates      int64   `json:"duplicates"` // repeated 2xx deliveries of a pair
	Rejected        int64   `json:"rejected"`   // requests with a bad signature
	Injected        int64   `json:"injected_failures,omitempty"`
	Refused         int64   `json:"refused,omitempty"`
	Malformed       int64   `json:"malformed,omitempty"`
	DeliverySeconds float64 `json:"delivery_seconds"` // the delivery window
	DeliveryRate    float64 `json:"delivery_rate"`    // deliveries/s over the window
	E2E             Latency `json:"e2e_latency"`      // first deliveries, from intended publish time
	TimedOut        bool    `json:"timed_out"`

	// Server is the Herald process; with several servers, their sum (PID
	// 0, RSSMaxBytes the peak of the summed samples) over those whose
	// process was found, and Servers has each one.
	Server  *ProcStats    `json:"server,omitempty"`
	Servers []ServerStats `json:"servers,omitempty"`
	// DB is the database's processes (Config.DBProcess), summed.
	DB *CPUUse `json:"db,omitempty"`
	// Bench is this process: publisher, sink (and relay).
	Bench *ProcStats `json:"bench,omitempty"`
	// Host is the busy CPU time of the whole machine, every process
	// included, so that what the server, the database and the bench do not
	// account for shows.
	Host *CPUUse `json:"host,omitempty"`

	DBBytesPerEvent float64  `json:"db_bytes_per_event,omitempty"`
	Notes           []string `json:"notes,omitempty"`
}

// ProcStats are a process's memory and CPU use during a run.
type ProcStats struct {
	PID         int     `json:"pid"`
	RSSMaxBytes int64   `json:"rss_max_bytes"` // the largest resident set sampled
	RSSEndBytes int64   `json:"rss_end_bytes"`
	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUCores    float64 `json:"cpu_cores"` // CPU seconds per second of the run
}

// ServerStats are one of several servers' memory and CPU use; ProcStats is
// nil when its process was not found (the report's notes say why).
type ServerStats struct {
	URL string `json:"url"`
	*ProcStats
}

// CPUUse is the CPU time used during a run by a group of processes (the
// database's) or by the whole machine.
type CPUUse struct {
	Name       string  `json:"name,omitempty"`      // the command name matched
	Processes  int     `json:"processes,omitempty"` // distinct processes seen with it
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUCores   float64 `json:"cpu_cores"` // CPU seconds per second of the run
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// results returns the measured results, raw first.
func (r *Report) results() []*Result {
	var out []*Result
	for _, x := range []*Result{r.Raw, r.Herald} {
		if x != nil {
			out = append(out, x)
		}
	}
	return out
}

// Summary returns one line per result, such as
// "herald: 500 events x 2 subscriptions: publish 4812/s (p50 1.9 ms, p99 8.1 ms), delivery 9310/s, e2e p50 2.4 ms p99 11.0 ms max 19.3 ms, lost 0, duplicates 0, RSS 48.2 MiB, CPU 1.12 cores".
// With several servers their summed RSS and CPU follow "3 servers"; with
// Config.DBProcess the database's CPU and the bench's own follow.
func (r *Report) Summary() string {
	var b strings.Builder
	for _, x := range r.results() {
		fmt.Fprintf(&b, "%s: %d events x %d subscriptions: publish %s/s (p50 %s, p99 %s)",
			x.System, x.Published, r.Scenario.Subscriptions, rate(x.PublishRate), ms(x.PublishLatency.P50), ms(x.PublishLatency.P99))
		if r.Scenario.Subscriptions > 0 {
			fmt.Fprintf(&b, ", delivery %s/s, e2e p50 %s p99 %s max %s, lost %d, duplicates %d",
				rate(x.DeliveryRate), ms(x.E2E.P50), ms(x.E2E.P99), ms(x.E2E.Max), x.Lost, x.Duplicates)
		}
		if p := x.Server; p != nil {
			if len(x.Servers) > 1 {
				fmt.Fprintf(&b, ", %d servers", len(x.Servers))
			}
			fmt.Fprintf(&b, ", RSS %s, CPU %.2f cores", mib(p.RSSMaxBytes), p.CPUCores)
		}
		if d := x.DB; d != nil {
			fmt.Fprintf(&b, ", %s %.2f cores", d.Name, d.CPUCores)
			if x.Bench != nil {
				fmt.Fprintf(&b, ", bench %.2f cores", x.Bench.CPUCores)
			}
		}
		if x == r.Herald && r.RawRatio > 0 {
			fmt.Fprintf(&b, ", %.0f%% of raw", 100*r.RawRatio)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// WriteText writes the summary line, then a table of the figures with one
// column per system measured, then the notes.
func (r *Report) WriteText(w io.Writer) error {
	res := r.results()
	var b strings.Builder
	b.WriteString(r.Summary())
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(name string, cell func(x *Result) string) {
		fmt.Fprint(tw, name)
		for _, x := range res {
			fmt.Fprint(tw, "\t", cell(x))
		}
		fmt.Fprintln(tw)
	}
	row("", func(x *Result) string { return x.System })
	row("published", func(x *Result) string {
		s := fmt.Sprintf("%d events", x.Published)
		if x.PublishFailed > 0 {
			s += fmt.Sprintf(" (%d failed)", x.PublishFailed)
		}
		return s
	})
	row("publish rate", func(x *Result) string { return rate(x.PublishRate) + "/s" })
	row("publish p50/p99/max", func(x *Result) string { return triple(x.PublishLatency) })
	if r.Scenario.Subscriptions > 0 {
		r.deliveryRows(row)
	}
	r.cpuRows(row)
	if r.Herald != nil && r.Herald.DBBytesPerEvent > 0 {
		row("db bytes/event", func(x *Result) string {
			if x.DBBytesPerEvent == 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f", x.DBBytesPerEvent)
		})
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "\nmachine: %d CPUs, %s/%s, %s, load %.2f at start; %s\n",
		r.Machine.CPUs, r.Machine.OS, r.Machine.Arch, r.Machine.GoVersion, r.Machine.Load1, r.Date.UTC().Format(time.RFC3339))
	for _, x := range res {
		for _, n := range x.Notes {
			fmt.Fprintf(&b, "note (%s): %s\n", x.System, n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func triple(l Latency) string {
	if l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("%s / %s / %s", ms(l.P50), ms(l.P99), ms(l.Max))
}

// ms writes milliseconds with three significant digits or so.
func ms(v float64) string {
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

func rate(v float64) string {
	if v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// deliveryRows adds the rows about deliveries to a text report.
func (r *Report) deliveryRows(row func(name string, cell func(x *Result) string)) {
	row("delivered", func(x *Result) string { return fmt.Sprintf("%d of %d", x.Delivered, x.Expected) })
	row("delivery rate", func(x *Result) string {
		s := rate(x.DeliveryRate) + "/s"
		if x == r.Herald && r.RawRatio > 0 {
			s += fmt.Sprintf(" (%.0f%% of raw)", 100*r.RawRatio)
		}
		return s
	})
	row("e2e p50/p99/max", func(x *Result) string { return triple(x.E2E) })
	row("lost", func(x *Result) string { return fmt.Sprint(x.Lost) })
	row("duplicates", func(x *Result) string { return fmt.Sprint(x.Duplicates) })
	row("rejected signatures", func(x *Result) string { return fmt.Sprint(x.Rejected) })
	if r.Scenario.FailRate > 0 {
		row("injected failures", func(x *Result) string { return fmt.Sprint(x.Injected) })
	}
	if r.Scenario.Backlog > 0 {
		row("refused (backlog)", func(x *Result) string { return fmt.Sprint(x.Refused) })
	}
}

// cpuRows adds the rows about memory and CPU to a text report: the server
// (the sum and each one, when there are several), the database, the bench
// and the whole machine, so the report shows where the machine's CPU went.
func (r *Report) cpuRows(row func(name string, cell func(x *Result) string)) {
	var servers []ServerStats // per server, when there are several
	if r.Herald != nil && len(r.Herald.Servers) > 1 {
		servers = r.Herald.Servers
	}
	sum := ""
	if len(servers) > 0 {
		sum = fmt.Sprintf(" (%d servers)", len(servers))
	}
	row("server RSS max"+sum, func(x *Result) string {
		if x.Server == nil {
			return "-"
		}
		return mib(x.Server.RSSMaxBytes)
	})
	row("server CPU"+sum, func(x *Result) string { return cores(x.Server) })
	for i, s := range servers {
		row("  "+hostPort(s.URL), func(x *Result) string {
			if x != r.Herald || x.Servers[i].ProcStats == nil {
				return "-"
			}
			p := x.Servers[i].ProcStats
			return fmt.Sprintf("%s, %s, pid %d", mib(p.RSSMaxBytes), cores(p), p.PID)
		})
	}
	if r.dbName() != "" {
		row("db CPU ("+r.dbName()+")", func(x *Result) string {
			if x.DB == nil {
				return "-"
			}
			return fmt.Sprintf("%.2f cores (%.1f s), %d processes", x.DB.CPUCores, x.DB.CPUSeconds, x.DB.Processes)
		})
	}
	row("bench CPU", func(x *Result) string { return cores(x.Bench) })
	if r.hasHost() {
		row("machine CPU", func(x *Result) string {
			if x.Host == nil {
				return "-"
			}
			other := x.Host.CPUSeconds
			for _, p := range []*ProcStats{x.Server, x.Bench} {
				if p != nil {
					other -= p.CPUSeconds
				}
			}
			if x.DB != nil {
				other -= x.DB.CPUSeconds
			}
			s := fmt.Sprintf("%.2f of %d cores busy (%.1f s)", x.Host.CPUCores, r.Machine.CPUs, x.Host.CPUSeconds)
			if x.Host.CPUSeconds > 0 {
				s += fmt.Sprintf(", %.1f s by other processes", max(other, 0))
			}
			return s
		})
	}
}

// dbName returns the command name of the database's processes, if a
// result measured them.
func (r *Report) dbName() string {
	for _, x := range r.results() {
		if x.DB != nil {
			return x.DB.Name
		}
	}
	return ""
}

func (r *Report) hasHost() bool {
	for _, x := range r.results() {
		if x.Host != nil {
			return true
		}
	}
	return false
}

func cores(p *ProcStats) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f cores (%.1f s)", p.CPUCores, p.CPUSeconds)
}

// hostPort shortens a server URL to its host and port for a table.
func hostPort(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Host
	}
	return raw
}

// Problems names what went wrong in the run (lost deliveries, rejected
// signatures, failed publishes), one item each; none when nothing did.
func (r *Report) Problems() []string {
	var out []string
	for _, x := range r.results() {
		if x.Lost > 0 {
			out = append(out, fmt.Sprintf("%s: %d of %d deliveries lost", x.System, x.Lost, x.Expected))
		}
		if x.Rejected > 0 {
			out = append(out, fmt.Sprintf("%s: %d requests had a bad signature", x.System, x.Rejected))
		}
		switch {
		case x.PublishFailed > 0:
			out = append(out, fmt.Sprintf("%s: %d events failed to publish: %s", x.System, x.PublishFailed, x.PublishError))
		case x.Published == 0:
			out = append(out, x.System+": nothing was published")
		}
	}
	return out
}

// Publishing is what the publisher did in a run; both reports carry it.
type Publishing struct {
	Published      int64   `json:"published"`      // events acknowledged
	PublishFailed  int64   `json:"publish_failed"` // events of requests that failed
	PublishError   string  `json:"publish_error,omitempty"`
	PublishSeconds float64 `json:"publish_seconds"`
	PublishRate    float64 `json:"publish_rate"`    // acknowledged events/s
	PublishLatency Latency `json:"publish_latency"` // per request, from its intended send time
}

// publishing summarises a publisher run.
func publishing(ps publishStats) Publishing {
	p := Publishing{Published: ps.Acked, PublishFailed: ps.Failed, PublishLatency: ps.Latencies,
		PublishSeconds: (ps.End - ps.Start).Seconds()}
	if ps.FirstErr != nil {
		p.PublishError = ps.FirstErr.Error()
	}
	if p.PublishSeconds > 0 {
		p.PublishRate = float64(ps.Acked) / p.PublishSeconds
	}
	return p
}
