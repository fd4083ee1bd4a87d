package herald

import (
	"context"
	"regexp"
	"time"
)

// Tenant is one customer of the platform that runs Herald: its
// subscriptions, keys and sources belong to it, and a key bound to it sees
// and changes only its objects. Topics stay global.
type Tenant struct {
	ID       string            // chosen by the caller: [a-z0-9_-], 1 to 64 bytes
	Name     string            // for people
	Metadata map[string]string // the caller's own data, returned as given
	// TopicPattern, when set, limits what the tenant's subscriptions may
	// subscribe to: every topic they match must be covered by it
	// ("tenants.acme.>").
	TopicPattern string
	Limits       TenantLimits
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// TenantLimits bound what one tenant may hold and use; zero is no limit.
type TenantLimits struct {
	MaxSubscriptions    int     // subscriptions the tenant may have
	DeliveriesPerSecond float64 // deliveries per second over all its subscriptions, on each node
	MaxInFlight         int     // deliveries in flight at once over all its subscriptions, on each node
	PublishRate         float64 // events per second its callers and sources may publish, on each node
	MaxSources          int     // sources the tenant may have
}

// Tenant limits on what a tenant's own fields may hold.
const (
	MaxTenantIDLen         = 64
	MaxTenantNameLen       = 200
	MaxTenantMetadata      = 50
	MaxTenantMetadataKey   = 64
	MaxTenantMetadataText  = 1024
	MaxTenantSubscriptions = 1_000_000
)

var tenantIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// ValidTenantID reports whether id may name a tenant: 1 to 64 bytes of
// lowercase letters, digits, '_' and '-', starting with a letter or digit.
// The same characters make a topic segment, so "tenants.{id}.>" is a
// pattern.
func ValidTenantID(id string) bool { return tenantIDRE.MatchString(id) }

// TenantDeletion is what DeleteTenant removed along with the tenant, so
// the caller can tell those who cache them.
type TenantDeletion struct {
	Subscriptions []string // ids
	Keys          []string // ids
	Sources       []string // ids
}

// TenantStore keeps tenants. A subscription or key names its tenant in
// its Tenant field ("" for none: the platform's own).
type TenantStore interface {
	// PutTenant creates the tenant, or replaces the fields of an existing
	// one but its CreatedAt. It returns the stored tenant and whether it
	// was created. A zero CreatedAt or UpdatedAt is set to now.
	PutTenant(ctx context.Context, t Tenant) (Tenant, bool, error)

	// GetTenant returns the tenant, or CodeNotFound.
	GetTenant(ctx context.Context, id string) (Tenant, error)

	// ListTenants returns up to limit tenants whose ids sort after the
	// given one ("" for the first page), in id order (limit < 1: all).
	ListTenants(ctx context.Context, after string, limit int) ([]Tenant, error)

	// DeleteTenant removes the tenant, its subscriptions (with their
	// delivery state, as DeleteSubscription does), its keys and its
	// sources (with their shards, as DeleteSource does), in one
	// transaction, and returns the ids of what it removed. CodeNotFound if
	// the tenant does not exist.
	DeleteTenant(ctx context.Context, id string) (TenantDeletion, error)

	// CountSubscriptions returns how many subscriptions the tenant has.
	CountSubscriptions(ctx context.Context, tenant string) (int64, error)
}

// Namespace is the topic pattern the tenant's sources may publish to: its
// TopicPattern, or "tenants.{id}.>" when it has none.
func (t Tenant) Namespace() string {
	if t.TopicPattern != "" {
		return t.TopicPattern
	}
	return "tenants." + t.ID + ".>"
}
