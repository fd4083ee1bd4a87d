package api

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// Portal link lifetimes: short, since whoever holds the link manages the
// tenant's endpoints until it expires or is revoked.
const (
	defaultPortalLinkTTL = time.Hour
	maxPortalLinkTTL     = 7 * 24 * time.Hour
	// maxPortalLinks bounds the live links of one tenant, so a tenant's
	// backend cannot fill the key table.
	maxPortalLinks = 100
	// portalPath is where the console serves the tenant portal.
	portalPath = "/console/portal"
)

type portalLinkRequest struct {
	ExpiresIn string `json:"expires_in"`
}

// portalLinkJSON is a portal link on the wire; URL and Token only in the
// create response.
type portalLinkJSON struct {
	ID        string   `json:"id"`
	Tenant    string   `json:"tenant"`
	Scopes    []string `json:"scopes"`
	CreatedAt string   `json:"created_at"`
	ExpiresAt string   `json:"expires_at"`
	URL       string   `json:"url,omitempty"`
	Token     string   `json:"token,omitempty"`
}

func toPortalLinkJSON(k herald.APIKey) portalLinkJSON {
	return portalLinkJSON{ID: k.ID, Tenant: k.Tenant, Scopes: k.Scopes.Strings(),
		CreatedAt: formatTime(k.CreatedAt), ExpiresAt: formatTime(k.ExpiresAt)}
}

// portalTenant checks that the caller may manage the portal links of the
// tenant in the path and returns it: an admin, or a key bound to that
// tenant that is not itself a portal link's (a link cannot extend
// itself). A key of another tenant gets the same 404 as a missing tenant.
func (s *Server) portalTenant(r *http.Request) (herald.Tenant, error) {
	id, err := tenantID(r)
	if err != nil {
		return herald.Tenant{}, err
	}
	switch p := principalFrom(r.Context()); {
	case p.tenant != "" && p.tenant != id:
		return herald.Tenant{}, tenantNotFound(id)
	case p.portal:
		return herald.Tenant{}, herald.Errorf(herald.CodeForbidden, "a portal link cannot manage portal links")
	case p.tenant == "" && !p.scopes.IsAdmin():
		return herald.Tenant{}, herald.Errorf(herald.CodeForbidden, "this operation needs the admin scope or a key of the tenant")
	}
	t, err := s.store.GetTenant(r.Context(), id)
	if herald.IsCode(err, herald.CodeNotFound) {
		return herald.Tenant{}, tenantNotFound(id)
	}
	return t, err
}

// portalKeys returns the live portal links of the tenant, oldest first.
func (s *Server) portalKeys(r *http.Request, tenant string) ([]herald.APIKey, error) {
	keys, err := s.store.ListKeys(r.Context())
	if err != nil {
		return nil, err
	}
	now := s.now()
	var out []herald.APIKey
	for _, k := range keys {
		if k.Portal && k.Tenant == tenant && !k.Expired(now) {
			out = append(out, k)
		}
	}
	return out, nil
}

// createPortalLink mints a link that opens the console limited to one
// tenant: a key bound to the tenant, marked as a portal link, allowed to
// manage subscriptions on the topics the tenant may subscribe to, expiring
// after expires_in. The secret travels in the URL's fragment, which
// browsers send to no server and put in no Referer.
func (s *Server) createPortalLink(w http.ResponseWriter, r *http.Request) error {
	t, err := s.portalTenant(r)
	if err != nil {
		return err
	}
	var req portalLinkRequest
	if err := decodeJSON(w, r, maxJSONBody, true, &req); err != nil {
		return err
	}
	ttl := defaultPortalLinkTTL
	if req.ExpiresIn != "" {
		d, err := herald.ParseDuration(req.ExpiresIn)
		if err != nil || d < time.Minute || d > maxPortalLinkTTL {
			return &herald.Error{Code: herald.CodeInvalid, Field: "expires_in", Err: err,
				Message: "expires_in must be a duration from 1m to 7d, like \"1h\", got " + strconv.Quote(truncate(req.ExpiresIn, 80))}
		}
		ttl = d
	}
	live, err := s.portalKeys(r, t.ID)
	if err != nil {
		return err
	}
	if len(live) >= maxPortalLinks {
		return &herald.Error{Code: herald.CodeConflict, Field: "id",
			Message: "tenant " + t.ID + " has " + strconv.Itoa(len(live)) + " live portal links, the most it may have; revoke some or wait for them to expire"}
	}
	pattern := t.TopicPattern
	if pattern == "" {
		pattern = ">"
	}
	now := s.now().UTC()
	secret, hash := herald.NewKeySecret()
	k := herald.APIKey{
		ID: herald.NewKeyID(), Name: "portal link", Hash: hash, Prefix: secret[:keyPrefixLen],
		Scopes:    herald.Scopes{{Action: herald.ActionSubscribe, Pattern: pattern}},
		CreatedAt: now, ExpiresAt: now.Add(ttl), Tenant: t.ID, Portal: true,
	}
	if err := s.store.CreateKey(r.Context(), k); err != nil {
		return err
	}
	out := toPortalLinkJSON(k)
	out.Token = secret
	out.URL = s.baseURL(r) + portalPath + "#token=" + url.QueryEscape(secret)
	w.Header().Set("Location", "/v1/tenants/"+url.PathEscape(t.ID)+"/portal-links/"+k.ID)
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, out)
}

// baseURL is the configured public URL, or the scheme and host the
// request came to.
func (s *Server) baseURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimSuffix(s.cfg.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

type portalLinkListJSON struct {
	PortalLinks []portalLinkJSON `json:"portal_links"`
}

func (s *Server) listPortalLinks(w http.ResponseWriter, r *http.Request) error {
	t, err := s.portalTenant(r)
	if err != nil {
		return err
	}
	keys, err := s.portalKeys(r, t.ID)
	if err != nil {
		return err
	}
	out := portalLinkListJSON{PortalLinks: []portalLinkJSON{}}
	for _, k := range keys {
		out.PortalLinks = append(out.PortalLinks, toPortalLinkJSON(k))
	}
	return writeJSON(w, http.StatusOK, out)
}

// deletePortalLink revokes a link: its key is deleted, so the portal
// opened with it is refused from its next request on (on other nodes
// within the key cache's few seconds).
func (s *Server) deletePortalLink(w http.ResponseWriter, r *http.Request) error {
	t, err := s.portalTenant(r)
	if err != nil {
		return err
	}
	id := r.PathValue("link")
	notFound := &herald.Error{Code: herald.CodeNotFound, Field: "link", Message: "portal link " + truncate(id, 80) + " does not exist"}
	keys, err := s.store.ListKeys(r.Context())
	if err != nil {
		return err
	}
	found := false
	for _, k := range keys {
		found = found || k.ID == id && k.Portal && k.Tenant == t.ID
	}
	if !found {
		return notFound
	}
	if err := s.store.DeleteKey(r.Context(), id); err != nil {
		return err
	}
	s.keys.forget(id)
	if s.notices != nil {
		s.notices.KeyRevoked(id)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
