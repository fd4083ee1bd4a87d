package identity_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/identity"
	"github.com/heraldhq/herald/identity/identitytest"
)

// clock is a time the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func wantCode(t *testing.T, err error, code herald.Code, what string) {
	t.Helper()
	if !herald.IsCode(err, code) {
		t.Fatalf("%s: got %v, want code %s", what, err, code)
	}
}

var mapping = identity.Mapping{
	RolesClaim:  "herald.roles",
	RoleScopes:  map[string]herald.Scopes{"ops": {{Action: herald.ActionAdmin}}, "reader": {{Action: herald.ActionRead, Pattern: "orders.>"}}},
	ScopesClaim: "herald_scopes",
	TenantClaim: "org",
}

// TestOIDCAgainstProvider verifies JWT access tokens a real OpenID
// provider issues: claims map to scopes and a tenant; expired, not yet
// valid and other-audience tokens are refused with their reason; a key
// rotation is followed without a restart; and a provider that is down
// answers unavailable for keys Herald does not have while the cached
// ones keep working.
func TestOIDCAgainstProvider(t *testing.T) {
	t.Parallel()
	p := identitytest.New(t)
	p.AddClient(identitytest.Client{ID: "ops-bot", Secret: "s1", JWT: true, Audience: []string{"herald"},
		Claims: map[string]any{"herald": map[string]any{"roles": []string{"ops", "unknown"}}}})
	p.AddClient(identitytest.Client{ID: "acme-backend", Secret: "s2", JWT: true, Audience: []string{"herald", "billing"},
		Claims: map[string]any{"org": "acme", "herald_scopes": "subscribe:orders.> openid", "herald": map[string]any{"roles": []string{"reader"}}}})
	p.AddClient(identitytest.Client{ID: "expired", Secret: "s3", JWT: true, Audience: []string{"herald"}, Lifetime: -2 * time.Minute})
	p.AddClient(identitytest.Client{ID: "early", Secret: "s4", JWT: true, Audience: []string{"herald"}, Skew: -5 * time.Minute})
	p.AddClient(identitytest.Client{ID: "elsewhere", Secret: "s5", JWT: true, Audience: []string{"billing"}})
	p.AddClient(identitytest.Client{ID: "bad-tenant", Secret: "s6", JWT: true, Audience: []string{"herald"},
		Claims: map[string]any{"org": "Not A Tenant!"}})
	p.AddClient(identitytest.Client{ID: "admin-tenant", Secret: "s7", JWT: true, Audience: []string{"herald"},
		Claims: map[string]any{"org": "acme", "herald_scopes": []string{"admin"}}})

	o, err := identity.NewOIDC(identity.OIDCConfig{Issuer: p.Issuer, Audiences: []string{"herald"}, Mapping: mapping,
		KeysMinInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	id, err := o.Verify(ctx, p.Token(t, "ops-bot"))
	if err != nil || id.Subject != "oidc:ops-bot" || !id.Scopes.IsAdmin() || id.Tenant != "" || time.Until(id.Expires) < 50*time.Minute {
		t.Fatalf("ops-bot: %+v, %v", id, err)
	}
	id, err = o.Verify(ctx, p.Token(t, "acme-backend"))
	if err != nil || id.Tenant != "acme" || !slices.Equal(id.Scopes.Strings(), []string{"subscribe:orders.>", "read:orders.>"}) {
		t.Fatalf("acme-backend: %+v, %v", id, err)
	}
	for _, c := range []struct {
		client string
		code   herald.Code
		msg    string
	}{
		{"expired", herald.CodeUnauthorized, "the token has expired"},
		{"early", herald.CodeUnauthorized, "the token is not valid yet"},
		{"elsewhere", herald.CodeUnauthorized, "the token is not meant for this server (aud)"},
		{"bad-tenant", herald.CodeUnauthorized, `the token's tenant claim "org" is not a tenant id`},
		{"admin-tenant", herald.CodeForbidden, "the token binds tenant acme and maps to the admin scope; a tenant's caller cannot be admin"},
	} {
		_, err := o.Verify(ctx, p.Token(t, c.client))
		wantCode(t, err, c.code, c.client)
		if e, _ := err.(*herald.Error); e.Message != c.msg {
			t.Errorf("%s: %q, want %q", c.client, e.Message, c.msg)
		}
	}
	// A token of another issuer with the same kid is not accepted.
	other := identitytest.New(t)
	other.AddClient(identitytest.Client{ID: "ops-bot", Secret: "s1", JWT: true, Audience: []string{"herald"}})
	_, err = o.Verify(ctx, other.Token(t, "ops-bot"))
	wantCode(t, err, herald.CodeUnauthorized, "another issuer's token")

	// Rotation: tokens signed with a new key are accepted after one fetch.
	fetches := p.KeyFetches.Load()
	p.RotateKey(false)
	if id, err := o.Verify(ctx, p.Token(t, "ops-bot")); err != nil || !id.Scopes.IsAdmin() {
		t.Fatalf("after the rotation: %+v, %v", id, err)
	}
	if got := p.KeyFetches.Load() - fetches; got != 1 {
		t.Fatalf("the rotation cost %d key fetches, want 1", got)
	}
	cached := p.Token(t, "ops-bot")

	// Down: the cached key still verifies; a new one cannot be fetched.
	p.SetDown(true)
	if _, err := o.Verify(ctx, cached); err != nil {
		t.Fatalf("a token of a cached key while the provider is down: %v", err)
	}
	p.SetDown(false)
	p.RotateKey(true)
	unknown := p.Token(t, "ops-bot")
	p.SetDown(true)
	_, err = o.Verify(ctx, unknown)
	wantCode(t, err, herald.CodeUnavailable, "a new key while the provider is down")
	p.SetDown(false)
	// Back up: failures are retried after a second.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err = o.Verify(ctx, unknown); err == nil || time.Now().After(deadline) {
			break
		}
		wantCode(t, err, herald.CodeUnavailable, "while the retry waits")
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after the provider came back: %v", err)
	}
	// The garbage that reaches a server.
	for _, tok := range []string{"a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", cached[:len(cached)-4] + "AAAA"} {
		_, err := o.Verify(ctx, tok)
		wantCode(t, err, herald.CodeUnauthorized, tok)
	}
}

// TestOIDCUnknownKeyIsRateLimited checks that tokens naming key ids the
// provider does not have cost at most one fetch per KeysMinInterval.
func TestOIDCUnknownKeyIsRateLimited(t *testing.T) {
	t.Parallel()
	p := identitytest.New(t)
	p.AddClient(identitytest.Client{ID: "c", Secret: "s", JWT: true, Audience: []string{"herald"}, Claims: map[string]any{"herald_scopes": "admin"}})
	clk := &clock{t: time.Now()}
	o, _ := identity.NewOIDC(identity.OIDCConfig{Issuer: p.Issuer, Audiences: []string{"herald"}, Mapping: mapping,
		KeysMinInterval: time.Minute, Now: clk.now})
	ctx := context.Background()
	if _, err := o.Verify(ctx, p.Token(t, "c")); err != nil {
		t.Fatal(err)
	}
	p.RotateKey(false)
	rotated := p.Token(t, "c")
	fetches := p.KeyFetches.Load()
	for range 5 {
		_, err := o.Verify(ctx, rotated)
		wantCode(t, err, herald.CodeUnauthorized, "a key id not in the set, within the interval")
	}
	if n := p.KeyFetches.Load() - fetches; n != 0 {
		t.Fatalf("%d fetches within the interval, want 0", n)
	}
	clk.add(time.Minute)
	if _, err := o.Verify(ctx, rotated); err != nil {
		t.Fatalf("after the interval: %v", err)
	}
}

// TestIntrospectionAgainstProvider checks opaque tokens at a real
// provider's introspection endpoint: an active token maps, answers are
// cached for the TTL, a revoked token is refused once the cache lets go,
// and a provider that is down answers unavailable.
func TestIntrospectionAgainstProvider(t *testing.T) {
	t.Parallel()
	p := identitytest.New(t)
	p.AddClient(identitytest.Client{ID: "herald", Secret: "herald-secret"}) // Herald itself, asking
	p.AddClient(identitytest.Client{ID: "acme-backend", Secret: "s", Audience: []string{"herald"},
		Claims: map[string]any{"org": "acme", "herald_scopes": []string{"subscribe:tenants.acme.>"}}})
	p.AddClient(identitytest.Client{ID: "elsewhere", Secret: "s", Audience: []string{"billing"},
		Claims: map[string]any{"herald_scopes": []string{"admin"}}})
	clk := &clock{t: time.Now()}
	in, err := identity.NewIntrospector(identity.IntrospectorConfig{URL: p.IntrospectionURL(), ClientID: "herald", ClientSecret: "herald-secret",
		Audiences: []string{"herald"}, Mapping: mapping, CacheTTL: time.Minute, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok := p.Token(t, "acme-backend")
	if identity.LooksLikeJWT(tok) {
		t.Fatalf("the provider issued a JWT, want an opaque token: %s", tok)
	}
	for range 3 {
		id, err := in.Introspect(ctx, tok)
		if err != nil || id.Subject != "token:acme-backend" || id.Tenant != "acme" || !slices.Equal(id.Scopes.Strings(), []string{"subscribe:tenants.acme.>"}) {
			t.Fatalf("introspect: %+v, %v", id, err)
		}
	}
	if n := p.Introspects.Load(); n != 1 {
		t.Fatalf("%d introspection calls for one token, want 1 (cached)", n)
	}
	_, err = in.Introspect(ctx, p.Token(t, "elsewhere"))
	wantCode(t, err, herald.CodeUnauthorized, "another audience")
	_, err = in.Introspect(ctx, "not-a-token-the-provider-issued")
	wantCode(t, err, herald.CodeUnauthorized, "an unknown token")

	p.RevokeAll()
	if _, err := in.Introspect(ctx, tok); err != nil {
		t.Fatalf("within the cache TTL: %v", err)
	}
	clk.add(time.Minute)
	_, err = in.Introspect(ctx, tok)
	wantCode(t, err, herald.CodeUnauthorized, "revoked, past the cache TTL")
	if e, _ := err.(*herald.Error); e.Message != "the token is not active (the provider's introspection says so)" {
		t.Fatalf("revoked: %q", e.Message)
	}

	fresh := p.Token(t, "acme-backend")
	p.SetDown(true)
	_, err = in.Introspect(ctx, fresh)
	wantCode(t, err, herald.CodeUnavailable, "provider down")
	p.SetDown(false)
	if _, err := in.Introspect(ctx, fresh); err != nil {
		t.Fatalf("back up: a failure is not cached: %v", err)
	}

	// Herald with the wrong client secret is not told anything.
	wrong, _ := identity.NewIntrospector(identity.IntrospectorConfig{URL: p.IntrospectionURL(), ClientID: "herald", ClientSecret: "nope", Mapping: mapping})
	_, err = wrong.Introspect(ctx, fresh)
	wantCode(t, err, herald.CodeUnavailable, "Herald's own credentials refused")
}

func TestMapping(t *testing.T) {
	t.Parallel()
	roles, err := identity.ParseRoleScopes(" ops = admin ; billing=publish:billing.> read:billing.>;")
	if err != nil || len(roles) != 2 || roles["billing"].Strings()[1] != "read:billing.>" {
		t.Fatalf("ParseRoleScopes: %v, %v", roles, err)
	}
	for _, bad := range []string{"ops", "=admin", "ops=", "ops=write:x"} {
		if _, err := identity.ParseRoleScopes(bad); err == nil {
			t.Errorf("ParseRoleScopes(%q) accepted", bad)
		}
	}
}
