package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/heraldhq/herald"

	"github.com/heraldhq/herald/api"
	"github.com/heraldhq/herald/console"
	"github.com/heraldhq/herald/identity"
)

// newIdentity builds the verifiers of tokens from outside that the
// configuration turns on (auth.oidc.*, auth.introspection.*) into deps.
// Neither asks its provider anything before the first token, so a
// provider that is down does not stop Herald from starting: its tokens
// are answered 503 until it is back, and API keys keep working.
func (m *Main) newIdentity(deps *api.Deps, log *slog.Logger) error {
	c := m.Config
	if errs := c.validateAuth(); len(errs) > 0 {
		return errors.Join(errs...)
	}
	if c.OIDCIssuer != "" {
		roles, err := identity.ParseRoleScopes(c.OIDCRoleScopes)
		if err != nil {
			return err
		}
		o, err := identity.NewOIDC(identity.OIDCConfig{
			Issuer: c.OIDCIssuer, Audiences: splitList(c.OIDCAudience),
			Mapping: identity.Mapping{SubjectClaim: c.OIDCSubjectClaim, ScopesClaim: c.OIDCScopesClaim,
				RolesClaim: c.OIDCRolesClaim, RoleScopes: roles, TenantClaim: c.OIDCTenantClaim},
			Logger: log,
		})
		if err != nil {
			return err
		}
		deps.OIDC = o
		log.Info("accepting OIDC bearer tokens", "issuer", c.OIDCIssuer, "audience", c.OIDCAudience)
	}
	if c.ConsoleOIDCIssuer != "" {
		roles, err := identity.ParseRoleScopes(c.OIDCRoleScopes)
		if err != nil {
			return err
		}
		login, err := identity.NewLogin(identity.LoginConfig{
			Issuer: c.ConsoleOIDCIssuer, ClientID: c.ConsoleOIDCClientID, ClientSecret: string(c.ConsoleOIDCClientSecret),
			Scopes: strings.Fields(c.ConsoleOIDCScopes),
			Mapping: identity.Mapping{SubjectClaim: c.OIDCSubjectClaim, ScopesClaim: c.OIDCScopesClaim,
				RolesClaim: c.OIDCRolesClaim, RoleScopes: roles, TenantClaim: c.OIDCTenantClaim},
			Logger: log,
		})
		if err != nil {
			return err
		}
		m.consoleOIDC = &console.OIDCConfig{Login: login, Name: c.ConsoleOIDCName, RedirectURL: c.ConsoleOIDCRedirectURL, Logger: log,
			Audit: func(ctx context.Context, e herald.AuditEntry) { m.api.RecordAudit(ctx, e) }}
		log.Info("console sign-in with an OpenID provider", "issuer", c.ConsoleOIDCIssuer, "client_id", c.ConsoleOIDCClientID)
	}
	if c.IntrospectionURL != "" {
		roles, err := identity.ParseRoleScopes(c.IntrospectionRoleScopes)
		if err != nil {
			return err
		}
		in, err := identity.NewIntrospector(identity.IntrospectorConfig{
			URL: c.IntrospectionURL, ClientID: c.IntrospectionClientID, ClientSecret: string(c.IntrospectionSecret),
			Audiences: splitList(c.IntrospectionAudience), CacheTTL: c.IntrospectionCacheTTL,
			Mapping: identity.Mapping{SubjectClaim: c.IntrospectionSubject, ScopesClaim: c.IntrospectionScopesClaim,
				RolesClaim: c.IntrospectionRolesClaim, RoleScopes: roles, TenantClaim: c.IntrospectionTenantClaim},
		})
		if err != nil {
			return err
		}
		deps.Introspection = in
		log.Info("accepting introspected bearer tokens", "url", c.IntrospectionURL)
	}
	return nil
}
