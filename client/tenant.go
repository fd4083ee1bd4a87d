package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// TenantLimits bound what a tenant may hold and use; zero is no limit.
type TenantLimits struct {
	MaxSubscriptions int     `json:"max_subscriptions"`
	RateLimit        float64 `json:"rate_limit"`    // deliveries per second over its subscriptions, per node
	MaxInFlight      int     `json:"max_in_flight"` // deliveries in flight over its subscriptions, per node
	PublishRate      float64 `json:"publish_rate"`  // events per second its keys and sources may publish, per node
	Sources          int     `json:"sources"`       // sources it may have
}

// TenantSpec is what PutTenant writes: the whole tenant.
type TenantSpec struct {
	Name     string            `json:"name"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// TopicPrefix limits what the tenant's subscriptions may subscribe
	// to: a pattern ("tenants.acme.>") or a name standing for the topics
	// under it.
	TopicPrefix string       `json:"topic_prefix,omitempty"`
	Limits      TenantLimits `json:"limits"`
}

// Tenant is a tenant as the server keeps it.
type Tenant struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Metadata    map[string]string `json:"metadata"`
	TopicPrefix string            `json:"topic_prefix,omitempty"`
	Limits      TenantLimits      `json:"limits"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
}

// PutTenant creates the tenant or replaces it, and reports whether it was
// created. It needs an admin key.
func (c *Client) PutTenant(ctx context.Context, id string, spec TenantSpec) (Tenant, bool, error) {
	seg, err := segment("id", id)
	if err != nil {
		return Tenant{}, false, err
	}
	body, hdr, err := jsonBody(spec)
	if err != nil {
		return Tenant{}, false, err
	}
	var t Tenant
	status, err := c.do(ctx, request{method: http.MethodPut, path: "/v1/tenants/" + seg, header: hdr, body: body, out: &t})
	return t, status == http.StatusCreated, err
}

// GetTenant returns the tenant: with an admin key any, with a tenant key
// its own (others are a *Problem with status 404).
func (c *Client) GetTenant(ctx context.Context, id string) (Tenant, error) {
	seg, err := segment("id", id)
	if err != nil {
		return Tenant{}, err
	}
	var t Tenant
	_, err = c.do(ctx, request{method: http.MethodGet, path: "/v1/tenants/" + seg, out: &t})
	return t, err
}

// TenantPage is one page of ListTenants.
type TenantPage struct {
	Tenants    []Tenant `json:"tenants"`
	NextCursor string   `json:"next_cursor,omitempty"`
}

// ListTenants returns a page of tenants in id order after the cursor ("":
// the first page). It needs an admin key.
func (c *Client) ListTenants(ctx context.Context, cursor string, limit int) (TenantPage, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p TenantPage
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/tenants", query: q, out: &p})
	return p, err
}

// DeleteTenant deletes the tenant with its subscriptions and keys. It
// needs an admin key.
func (c *Client) DeleteTenant(ctx context.Context, id string) error {
	seg, err := segment("id", id)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/tenants/" + seg})
	return err
}
