package storetest

import (
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// runUsage checks usage rows: AddUsage adds to what is stored (per tenant
// and day), and ListUsage selects by tenant and an inclusive day range.
func runUsage(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("AddList", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		d1 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		d2 := d1.AddDate(0, 0, 1)
		c := func(pub, ok, failed, dead int64) herald.UsageCounts {
			return herald.UsageCounts{EventsPublished: pub, BytesPublished: pub * 10, DeliveriesSucceeded: ok,
				DeliveriesFailed: failed, DeadLettered: dead, BytesDelivered: ok * 10}
		}
		if err := s.AddUsage(ctx, []herald.UsageDay{{Tenant: "acme", Day: d1, UsageCounts: c(1, 2, 3, 1)},
			{Tenant: "", Day: d1, UsageCounts: c(5, 0, 0, 0)}}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddUsage(ctx, []herald.UsageDay{{Tenant: "acme", Day: d1, UsageCounts: c(10, 20, 0, 0)},
			{Tenant: "acme", Day: d2, UsageCounts: c(1, 1, 1, 1)}, {Tenant: "globex", Day: d2, UsageCounts: c(7, 7, 7, 7)}}); err != nil {
			t.Fatal(err)
		}
		got, err := s.ListUsage(ctx, herald.UsageFilter{Tenant: "acme", From: d1, To: d2})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || !got[0].Day.Equal(d1) || got[0].UsageCounts != c(11, 22, 3, 1) || !got[1].Day.Equal(d2) || got[1].UsageCounts != c(1, 1, 1, 1) {
			t.Fatalf("acme's usage: %+v", got)
		}
		if got, _ := s.ListUsage(ctx, herald.UsageFilter{From: d1, To: d1}); len(got) != 1 || got[0].Tenant != "" || got[0].EventsPublished != 5 {
			t.Fatalf("the platform's usage on day 1: %+v", got)
		}
		got, _ = s.ListUsage(ctx, herald.UsageFilter{AllTenants: true, From: d2, To: d2.AddDate(0, 0, 5)})
		if len(got) != 2 || got[0].Tenant != "acme" || got[1].Tenant != "globex" {
			t.Fatalf("every tenant on day 2: %+v", got)
		}
		if got, _ := s.ListUsage(ctx, herald.UsageFilter{AllTenants: true, From: d2.AddDate(0, 0, 1), To: d2.AddDate(0, 0, 9)}); len(got) != 0 {
			t.Fatalf("days without usage: %+v", got)
		}
	})
}
