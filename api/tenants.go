package api

import (
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/heraldhq/herald"
)

// tenantLimitsJSON are a tenant's limits on the wire; 0 is no limit. The
// names are those of the subscription settings they bound.
type tenantLimitsJSON struct {
	MaxSubscriptions int     `json:"max_subscriptions"`
	RateLimit        float64 `json:"rate_limit"`
	MaxInFlight      int     `json:"max_in_flight"`
	PublishRate      float64 `json:"publish_rate"`
	Sources          int     `json:"sources"`
}

// tenantJSON is a tenant on the wire, and the body of PUT.
type tenantJSON struct {
	ID          string            `json:"id,omitempty"`
	Name        string            `json:"name"`
	Metadata    map[string]string `json:"metadata"`
	TopicPrefix string            `json:"topic_prefix,omitempty"`
	Limits      tenantLimitsJSON  `json:"limits"`
	CreatedAt   string            `json:"created_at,omitempty"`
	UpdatedAt   string            `json:"updated_at,omitempty"`
}

func toTenantJSON(t herald.Tenant) tenantJSON {
	meta := t.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	return tenantJSON{
		ID: t.ID, Name: t.Name, Metadata: meta, TopicPrefix: t.TopicPattern,
		Limits: tenantLimitsJSON{MaxSubscriptions: t.Limits.MaxSubscriptions, RateLimit: t.Limits.DeliveriesPerSecond,
			MaxInFlight: t.Limits.MaxInFlight, PublishRate: t.Limits.PublishRate, Sources: t.Limits.MaxSources},
		CreatedAt: formatTime(t.CreatedAt), UpdatedAt: formatTime(t.UpdatedAt),
	}
}

// tenantID returns the {id} of the path, or CodeInvalid.
func tenantID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !herald.ValidTenantID(id) {
		return "", herald.FieldErrorf("id", "a tenant id is 1 to %d lowercase letters, digits, '_' or '-', starting with a letter or digit; got %q",
			herald.MaxTenantIDLen, truncate(id, herald.MaxTenantIDLen+8))
	}
	return id, nil
}

// tenantNotFound is the answer for a tenant that does not exist or that
// the caller may not see: the same, so a tenant key cannot probe others.
func tenantNotFound(id string) error {
	return &herald.Error{Code: herald.CodeNotFound, Field: "id", Message: "tenant " + id + " does not exist"}
}

// topicPrefixPattern turns a topic_prefix into the pattern it stands for:
// a pattern as given ("tenants.acme.>"), or a name, which covers the
// topics under it ("tenants.acme" is "tenants.acme.>").
func topicPrefixPattern(prefix string) (string, error) {
	if prefix == "" {
		return "", nil
	}
	p := prefix
	if !herald.IsPattern(p) {
		p += ".>"
	}
	if err := herald.ValidatePattern(p); err != nil {
		return "", herald.FieldErrorf("topic_prefix", "topic_prefix must be a topic name or pattern like \"tenants.acme.>\", got %q", truncate(prefix, 300))
	}
	first, _, _ := strings.Cut(p, ".")
	if first == "*" || first == ">" || herald.IsSystemTopic(p) {
		return "", herald.FieldErrorf("topic_prefix", "topic_prefix must start with a literal segment other than Herald's own %q, got %q", herald.SystemTopicPrefix, truncate(prefix, 300))
	}
	return p, nil
}

func (s *Server) putTenant(w http.ResponseWriter, r *http.Request) error {
	id, err := tenantID(r)
	if err != nil {
		return err
	}
	var req tenantJSON
	if err := decodeJSON(w, r, maxJSONBody, false, &req); err != nil {
		return err
	}
	if req.ID != "" && req.ID != id {
		return herald.FieldErrorf("id", "the id in the body (%q) is not the one in the path (%q)", truncate(req.ID, 80), id)
	}
	if len(req.Name) > herald.MaxTenantNameLen || !utf8.ValidString(req.Name) || hasControl(req.Name) {
		return herald.FieldErrorf("name", "name must be at most %d bytes of text", herald.MaxTenantNameLen)
	}
	if len(req.Metadata) > herald.MaxTenantMetadata {
		return herald.FieldErrorf("metadata", "metadata holds at most %d members, got %d", herald.MaxTenantMetadata, len(req.Metadata))
	}
	for k, v := range req.Metadata {
		if k == "" || len(k) > herald.MaxTenantMetadataKey || !utf8.ValidString(k) || hasControl(k) {
			return herald.FieldErrorf("metadata", "metadata names must be 1 to %d bytes of text, got %q", herald.MaxTenantMetadataKey, truncate(k, 80))
		}
		if len(v) > herald.MaxTenantMetadataText || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
			return herald.FieldErrorf("metadata."+k, "metadata values must be at most %d bytes of UTF-8 text", herald.MaxTenantMetadataText)
		}
	}
	pattern, err := topicPrefixPattern(req.TopicPrefix)
	if err != nil {
		return err
	}
	l := req.Limits
	switch {
	case l.MaxSubscriptions < 0 || l.MaxSubscriptions > herald.MaxTenantSubscriptions:
		return herald.FieldErrorf("limits.max_subscriptions", "limits.max_subscriptions must be from 0 (no limit) to %d, got %d", herald.MaxTenantSubscriptions, l.MaxSubscriptions)
	case l.RateLimit < 0 || l.RateLimit > herald.MaxRateLimit || math.IsNaN(l.RateLimit):
		return herald.FieldErrorf("limits.rate_limit", "limits.rate_limit must be from 0 (no limit) to %d deliveries per second, got %v", herald.MaxRateLimit, l.RateLimit)
	case l.MaxInFlight < 0 || l.MaxInFlight > herald.MaxMaxInFlight:
		return herald.FieldErrorf("limits.max_in_flight", "limits.max_in_flight must be from 0 (no limit) to %d, got %d", herald.MaxMaxInFlight, l.MaxInFlight)
	case l.PublishRate < 0 || l.PublishRate > herald.MaxRateLimit || math.IsNaN(l.PublishRate):
		return herald.FieldErrorf("limits.publish_rate", "limits.publish_rate must be from 0 (no limit) to %d events per second, got %v", herald.MaxRateLimit, l.PublishRate)
	case l.Sources < 0 || l.Sources > herald.MaxSources:
		return herald.FieldErrorf("limits.sources", "limits.sources must be from 0 (no limit) to %d, got %d", herald.MaxSources, l.Sources)
	}
	now := s.now().UTC()
	t, created, err := s.store.PutTenant(r.Context(), herald.Tenant{
		ID: id, Name: req.Name, Metadata: req.Metadata, TopicPattern: pattern,
		Limits: herald.TenantLimits{MaxSubscriptions: l.MaxSubscriptions, DeliveriesPerSecond: l.RateLimit, MaxInFlight: l.MaxInFlight,
			PublishRate: l.PublishRate, MaxSources: l.Sources},
		CreatedAt: now, UpdatedAt: now,
	})
	if err != nil {
		return err
	}
	if s.notices != nil {
		if tn, ok := s.notices.(TenantNotices); ok {
			tn.TenantChanged(id)
		}
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/tenants/"+url.PathEscape(id))
	}
	return writeJSON(w, status, toTenantJSON(t))
}

// TenantNotices is told of tenant changes, when Notices implements it: the
// dispatcher applies new limits.
type TenantNotices interface {
	TenantChanged(id string)
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) error {
	id, err := tenantID(r)
	if err != nil {
		return err
	}
	// A tenant key reads its own tenant; others are as if they did not
	// exist. Platform keys need admin.
	switch p := principalFrom(r.Context()); {
	case p.tenant != "" && p.tenant != id:
		return tenantNotFound(id)
	case p.tenant == "" && !p.scopes.IsAdmin():
		return herald.Errorf(herald.CodeForbidden, "this operation needs the admin scope")
	}
	t, err := s.store.GetTenant(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toTenantJSON(t))
}

type tenantListJSON struct {
	Tenants    []tenantJSON `json:"tenants"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	after, err := decodeCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	page, err := s.store.ListTenants(r.Context(), after, int(limit)+1)
	if err != nil {
		return err
	}
	out := tenantListJSON{Tenants: []tenantJSON{}}
	for i, t := range page {
		if i == int(limit) {
			out.NextCursor = encodeCursor(page[i-1].ID)
			break
		}
		out.Tenants = append(out.Tenants, toTenantJSON(t))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteTenant(w http.ResponseWriter, r *http.Request) error {
	id, err := tenantID(r)
	if err != nil {
		return err
	}
	del, err := s.store.DeleteTenant(r.Context(), id)
	if s.templates != nil && (err == nil || herald.IsCode(err, herald.CodeNotFound)) {
		// Its templates are state beside the tenant, not in its
		// transaction: cleared after it, and again by a repeated DELETE
		// (404) should this fail.
		if terr := s.templates.DeleteTenant(r.Context(), id); terr != nil && err == nil {
			return terr
		}
	}
	if err != nil {
		return err
	}
	for _, sub := range del.Subscriptions {
		s.changed(sub)
	}
	if len(del.Sources) > 0 {
		s.sourcesChanged()
	}
	for _, k := range del.Keys {
		s.keys.forget(k)
		if s.notices != nil {
			s.notices.KeyRevoked(k)
		}
	}
	if s.notices != nil {
		if tn, ok := s.notices.(TenantNotices); ok {
			tn.TenantChanged(id)
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// tenantOf returns the tenant a new subscription belongs to, checked
// against the caller: a tenant key's own (asking for another is
// CodeNotFound), or the one an admin names, which must exist. "" for a
// platform subscription.
func (s *Server) tenantFor(r *http.Request, asked string) (*herald.Tenant, error) {
	p := principalFrom(r.Context())
	id := asked
	if p.tenant != "" {
		if asked != "" && asked != p.tenant {
			return nil, &herald.Error{Code: herald.CodeNotFound, Field: "tenant", Message: "tenant " + truncate(asked, 80) + " does not exist"}
		}
		id = p.tenant
	}
	if id == "" {
		return nil, nil
	}
	if !herald.ValidTenantID(id) {
		return nil, herald.FieldErrorf("tenant", "tenant %q is not a tenant id", truncate(id, 80))
	}
	t, err := s.store.GetTenant(r.Context(), id)
	if herald.IsCode(err, herald.CodeNotFound) {
		return nil, &herald.Error{Code: herald.CodeNotFound, Field: "tenant", Message: "tenant " + id + " does not exist", Err: err}
	}
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// tenantIDOf is t's id, or "" for none.
func tenantIDOf(t *herald.Tenant) string {
	if t == nil {
		return ""
	}
	return t.ID
}

// checkTenantTopic refuses a subscription of the tenant to a topic or
// pattern outside the tenant's topic prefix.
func checkTenantTopic(t *herald.Tenant, topic string) error {
	if t == nil || t.TopicPattern == "" || herald.CoversPattern(t.TopicPattern, topic) {
		return nil
	}
	return &herald.Error{Code: herald.CodeForbidden, Field: "topic",
		Message: "tenant " + t.ID + " may subscribe only to topics matching " + t.TopicPattern + ", not " + truncate(topic, 300)}
}

// checkTenantSources refuses a new source of a tenant that has
// limits.sources of them already; stored is every source of the server.
// tenantMu is held by the caller, so one node does not overshoot it.
func checkTenantSources(t *herald.Tenant, stored []herald.Source) error {
	if t == nil || t.Limits.MaxSources == 0 {
		return nil
	}
	n := 0
	for _, src := range stored {
		if src.Tenant == t.ID {
			n++
		}
	}
	if n >= t.Limits.MaxSources {
		return &herald.Error{Code: herald.CodeConflict, Field: "tenant",
			Message: "tenant " + t.ID + " has " + strconv.Itoa(n) + " sources, its limit (limits.sources); delete one or raise the limit"}
	}
	return nil
}

// checkTenantQuota refuses a new subscription of a tenant at its limit.
// tenantMu is held by the caller, so one node does not overshoot it.
func (s *Server) checkTenantQuota(r *http.Request, t *herald.Tenant) error {
	if t == nil || t.Limits.MaxSubscriptions == 0 {
		return nil
	}
	n, err := s.store.CountSubscriptions(r.Context(), t.ID)
	if err != nil {
		return err
	}
	if n >= int64(t.Limits.MaxSubscriptions) {
		return &herald.Error{Code: herald.CodeConflict, Field: "tenant",
			Message: "tenant " + t.ID + " has " + strconv.FormatInt(n, 10) + " subscriptions, its limit (limits.max_subscriptions); delete one or raise the limit"}
	}
	return nil
}
