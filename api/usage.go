package api

import (
	"context"
	"net/http"
	"time"

	"github.com/heraldhq/herald"
)

// UsageReader reads usage per tenant and day, this node's counts not yet
// flushed included (usage.Meter implements it).
type UsageReader interface {
	List(ctx context.Context, f herald.UsageFilter) ([]herald.UsageDay, error)
}

// Usage limits.
const (
	defaultUsageDays = 30
	maxUsageDays     = 366
)

type usageDeliveriesJSON struct {
	Succeeded    int64 `json:"succeeded"`
	Failed       int64 `json:"failed"`
	DeadLettered int64 `json:"dead_lettered"`
}

type usageCountsJSON struct {
	EventsPublished int64               `json:"events_published"`
	BytesPublished  int64               `json:"bytes_published"`
	Deliveries      usageDeliveriesJSON `json:"deliveries"`
	BytesDelivered  int64               `json:"bytes_delivered"`
}

func toUsageCounts(c herald.UsageCounts) usageCountsJSON {
	return usageCountsJSON{EventsPublished: c.EventsPublished, BytesPublished: c.BytesPublished,
		Deliveries:     usageDeliveriesJSON{Succeeded: c.DeliveriesSucceeded, Failed: c.DeliveriesFailed, DeadLettered: c.DeadLettered},
		BytesDelivered: c.BytesDelivered}
}

type usageDayJSON struct {
	Date   string `json:"date"`
	Tenant string `json:"tenant"`
	usageCountsJSON
}

type usageJSON struct {
	Tenant string          `json:"tenant,omitempty"`
	From   string          `json:"from"`
	To     string          `json:"to"`
	Days   []usageDayJSON  `json:"days"`
	Totals usageCountsJSON `json:"totals"`
}

const dayLayout = "2006-01-02"

// usageDay parses a day of the query: 2026-12-07, or an RFC 3339 time,
// whose UTC day it names.
func usageDay(name, v string, def time.Time) (time.Time, error) {
	if v == "" {
		return def, nil
	}
	t, err := time.Parse(dayLayout, v)
	if err != nil {
		if t, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return time.Time{}, herald.FieldErrorf(name, "%s must be a day like 2026-12-07 (or an RFC 3339 time), got %q", name, truncate(v, 80))
		}
	}
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC), nil
}

// getUsage serves GET /v1/usage: per tenant and UTC day, events
// published, deliveries by outcome and bytes. Admins see every tenant (or
// the one named); a tenant's caller its own.
func (s *Server) getUsage(w http.ResponseWriter, r *http.Request) error {
	if s.usage == nil {
		return herald.Errorf(herald.CodeUnavailable, "this server does not keep usage")
	}
	p := principalFrom(r.Context())
	q := r.URL.Query()
	tenant := q.Get("tenant")
	f := herald.UsageFilter{Tenant: tenant}
	switch {
	case p.tenant != "":
		if tenant != "" && tenant != p.tenant {
			return tenantNotFound(truncate(tenant, 80))
		}
		f.Tenant = p.tenant
	case !p.scopes.IsAdmin():
		return herald.Errorf(herald.CodeForbidden, "this operation needs the admin scope")
	case tenant == "":
		f.AllTenants = true
	case !herald.ValidTenantID(tenant):
		return herald.FieldErrorf("tenant", "tenant %q is not a tenant id", truncate(tenant, 80))
	}
	today := s.now().UTC()
	today = time.Date(today.Year(), today.Month(), today.Day(), 0, 0, 0, 0, time.UTC)
	to, err := usageDay("to", q.Get("to"), today)
	if err != nil {
		return err
	}
	from, err := usageDay("from", q.Get("from"), to.AddDate(0, 0, 1-defaultUsageDays))
	if err != nil {
		return err
	}
	switch {
	case from.After(to):
		return herald.FieldErrorf("from", "from (%s) is after to (%s)", from.Format(dayLayout), to.Format(dayLayout))
	case to.Sub(from) >= maxUsageDays*24*time.Hour:
		return herald.FieldErrorf("from", "at most %d days at once; from %s to %s is more", maxUsageDays, from.Format(dayLayout), to.Format(dayLayout))
	}
	f.From, f.To = from, to
	rows, err := s.usage.List(r.Context(), f)
	if err != nil {
		return err
	}
	out := usageJSON{Tenant: f.Tenant, From: from.Format(dayLayout), To: to.Format(dayLayout), Days: []usageDayJSON{}}
	var total herald.UsageCounts
	for _, row := range rows {
		out.Days = append(out.Days, usageDayJSON{Date: row.Day.Format(dayLayout), Tenant: row.Tenant, usageCountsJSON: toUsageCounts(row.UsageCounts)})
		total.Add(row.UsageCounts)
	}
	out.Totals = toUsageCounts(total)
	return writeJSON(w, http.StatusOK, out)
}
