package herald

import (
	"context"
	"encoding/json"
	"time"
)

// AuditEntry records one change made through the API: who made it, what
// they asked, what it changed and how it ended.
type AuditEntry struct {
	ID        int64 // assigned by the store, increasing
	Time      time.Time
	Principal string // the key id, "admin" for the bootstrap key, or a token's subject
	Tenant    string // the tenant of the caller's key; "" for a platform key
	Method    string // "PUT"
	Route     string // the route pattern: "/v1/tenants/{id}"
	Object    string // the id or name of the object changed, when there is one
	Status    int    // the HTTP status answered
	RequestID string
	Remote    string // the caller's address
	// Changes is the request body as JSON with every secret masked, or nil.
	Changes json.RawMessage
}

// AuditFilter selects audit entries to list, newest first.
type AuditFilter struct {
	Principal string
	Tenant    string
	Method    string
	Route     string
	Object    string
	Since     time.Time // entries at or after; zero: any
	Until     time.Time // entries before; zero: any
	BeforeID  int64     // page: entries with ID < BeforeID; 0: the newest
	Limit     int
}

// AuditTopic is the system topic every audit entry is published to.
const AuditTopic = "herald.audit"

// AuditStore keeps the audit log.
type AuditStore interface {
	// AppendAudit stores the entry and returns its ID.
	AppendAudit(ctx context.Context, e AuditEntry) (int64, error)
	// ListAudit returns the entries that match the filter, newest first
	// (by ID), at most f.Limit (below 1: all).
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
	// PruneAudit deletes up to limit entries older than before and
	// returns how many.
	PruneAudit(ctx context.Context, before time.Time, limit int) (int64, error)
}
