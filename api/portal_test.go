package api

import (
	"github.com/heraldhq/herald"

	"net/http"
	"testing"
	"time"
)

// A portal link is refused once it expires, with the answer an unknown
// key gets.
func TestPortalLinkExpires(t *testing.T) {
	e := newEnv(t, Config{})
	e.must(http.StatusCreated, req{method: "PUT", path: "/v1/tenants/acme", body: []byte(`{}`)}, nil)
	var link portalLinkJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/tenants/acme/portal-links", body: []byte(`{"expires_in":"2m"}`)}, &link)
	e.must(http.StatusOK, req{method: "GET", path: "/v1/tenants/acme", key: link.Token}, nil)
	e.api.now = func() time.Time { return time.Now().Add(2*time.Minute + time.Second) }
	e.problem(herald.CodeUnauthorized, "", req{method: "GET", path: "/v1/tenants/acme", key: link.Token})
	// Expired links are no longer listed.
	var list portalLinkListJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/tenants/acme/portal-links"}, &list)
	if len(list.PortalLinks) != 0 {
		t.Fatalf("expired links listed: %+v", list.PortalLinks)
	}
}
