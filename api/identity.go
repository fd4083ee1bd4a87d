package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/identity"
)

// TokenVerifier checks a bearer JWT from an OpenID Connect issuer
// (identity.OIDC implements it).
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (identity.Identity, error)
}

// TokenIntrospector checks an opaque bearer token with its issuer
// (identity.Introspector implements it).
type TokenIntrospector interface {
	Introspect(ctx context.Context, token string) (identity.Identity, error)
}

// external reports whether tokens from outside are accepted beside keys.
func (s *Server) external() bool { return s.oidc != nil || s.introspector != nil }

// externalPrincipal establishes the caller of a bearer token that is not
// an API key: a JWT goes to the OIDC verifier, anything else (or a JWT
// when only introspection is on) to introspection. ok is false when
// neither applies, or the token is the bootstrap admin key: the caller
// then tries the API keys.
func (s *Server) externalPrincipal(r *http.Request, token string) (p *principal, err error, ok bool) {
	if len(token) <= maxBearerLen && len(s.cfg.AdminKeyHash) == sha256.Size {
		hash := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(hash[:], s.cfg.AdminKeyHash) == 1 {
			return nil, nil, false
		}
	}
	var id identity.Identity
	method := ""
	switch {
	case s.oidc != nil && identity.LooksLikeJWT(token):
		method = "oidc"
		id, err = s.oidc.Verify(r.Context(), token)
	case s.introspector != nil:
		method = "introspection"
		id, err = s.introspector.Introspect(r.Context(), token)
	default:
		return nil, nil, false
	}
	result := "accepted"
	switch {
	case herald.IsCode(err, herald.CodeUnavailable):
		result = "unavailable"
	case err != nil:
		result = "refused"
	}
	s.metrics.tokens.WithLabelValues(method, result).Inc()
	if err != nil {
		return nil, err, true
	}
	return &principal{external: id.Subject, scopes: id.Scopes, tenant: id.Tenant, expires: id.Expires}, nil, true
}
