package herald

import (
	"context"
	"time"
)

// UsageCounts are what one tenant used on one day.
type UsageCounts struct {
	EventsPublished     int64 // events its callers published
	BytesPublished      int64 // their payload bytes
	DeliveriesSucceeded int64 // delivery attempts to its subscriptions that succeeded
	DeliveriesFailed    int64 // ... that failed (each retry counts)
	DeadLettered        int64 // events its subscriptions gave up on
	BytesDelivered      int64 // payload bytes of the successful deliveries
}

// Add adds o to c.
func (c *UsageCounts) Add(o UsageCounts) {
	c.EventsPublished += o.EventsPublished
	c.BytesPublished += o.BytesPublished
	c.DeliveriesSucceeded += o.DeliveriesSucceeded
	c.DeliveriesFailed += o.DeliveriesFailed
	c.DeadLettered += o.DeadLettered
	c.BytesDelivered += o.BytesDelivered
}

// UsageDay is one tenant's usage on one UTC day.
type UsageDay struct {
	Tenant string    // "" for the platform's own callers and subscriptions
	Day    time.Time // midnight UTC
	UsageCounts
}

// UsageFilter selects usage rows.
type UsageFilter struct {
	// Tenant selects one tenant's rows ("" with AllTenants false: the
	// platform's).
	Tenant     string
	AllTenants bool
	From, To   time.Time // days from From to To, both included (midnights UTC)
}

// UsageStore keeps usage per tenant and day. Writers aggregate in memory
// and add their counts now and then, so the store sees one write per
// tenant and day per flush, not one per event.
type UsageStore interface {
	// AddUsage adds each row's counts to the stored row of its tenant and
	// day (creating it), all in one transaction.
	AddUsage(ctx context.Context, rows []UsageDay) error
	// ListUsage returns the rows that match, by day then tenant.
	ListUsage(ctx context.Context, f UsageFilter) ([]UsageDay, error)
}
