// Package identity accepts callers whose identity another system vouches
// for: bearer JWTs signed by an OpenID Connect issuer (OIDC) and opaque
// tokens checked through OAuth 2.0 token introspection (RFC 7662,
// Introspector). Both map the token's claims to Herald scopes and a
// tenant with a Mapping, and both answer a *herald.Error: CodeUnauthorized
// for a token that is not good (with a reason safe to show), CodeForbidden
// for a good token that maps to something not allowed, CodeUnavailable
// when the provider cannot be asked.
package identity

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// Identity is who a token names, mapped to Herald's terms.
type Identity struct {
	// Subject names the caller in the audit log and to the stream hub:
	// "oidc:" or "token:" and the token's subject claim.
	Subject string
	Scopes  herald.Scopes
	// Tenant binds the caller to one tenant; "" for the platform.
	Tenant string
	// Expires is when the token stops being valid; zero: unknown.
	Expires time.Time
}

// The prefixes of Identity.Subject: they keep a token's subject apart from
// API key ids, which never contain ':'.
const (
	SubjectPrefixOIDC          = "oidc:"
	SubjectPrefixIntrospection = "token:"
)

// IsExternalSubject reports whether subject names a caller of a token from
// outside rather than an API key.
func IsExternalSubject(subject string) bool {
	return strings.HasPrefix(subject, SubjectPrefixOIDC) || strings.HasPrefix(subject, SubjectPrefixIntrospection)
}

// Mapping turns a token's claims into Herald scopes and a tenant. Claim
// names may be dotted paths into nested objects ("realm_access.roles").
// A claim holding several values may be a JSON array of strings or one
// space-separated string (as OAuth's "scope" is).
type Mapping struct {
	// SubjectClaim names the caller; "" is "sub". Introspection falls back
	// to client_id, then username, when the claim is absent.
	SubjectClaim string
	// ScopesClaim holds Herald scopes as they are written
	// ("publish:orders.>", "admin"); values that are not Herald scopes
	// ("openid", "profile") are ignored. "" reads none.
	ScopesClaim string
	// RolesClaim holds the caller's roles or groups, looked up in
	// RoleScopes. "" reads none.
	RolesClaim string
	// RoleScopes gives the scopes of each role.
	RoleScopes map[string]herald.Scopes
	// TenantClaim, when set, binds a caller whose token carries it to that
	// tenant. A tenant's caller cannot hold the admin scope.
	TenantClaim string
}

// Empty reports whether the mapping grants nothing at all.
func (m Mapping) Empty() bool { return m.ScopesClaim == "" && len(m.RoleScopes) == 0 }

// apply maps the claims to an identity. prefix starts the subject;
// fallbacks are claims read for the subject when SubjectClaim is absent.
func (m Mapping) apply(claims map[string]any, prefix string, fallbacks ...string) (Identity, error) {
	var id Identity
	subjectClaim := m.SubjectClaim
	if subjectClaim == "" {
		subjectClaim = "sub"
	}
	sub := claimString(claims, subjectClaim)
	for _, f := range fallbacks {
		if sub == "" {
			sub = claimString(claims, f)
		}
	}
	if sub == "" {
		return id, herald.Errorf(herald.CodeUnauthorized, "the token names no subject (claim %q)", subjectClaim)
	}
	if len(sub) > 256 {
		return id, herald.Errorf(herald.CodeUnauthorized, "the token's subject is longer than 256 bytes")
	}
	id.Subject = prefix + sub
	if m.ScopesClaim != "" {
		for _, v := range claimStrings(claims, m.ScopesClaim) {
			if sc, err := herald.ParseScope(v); err == nil {
				id.Scopes = appendScope(id.Scopes, sc)
			}
		}
	}
	if m.RolesClaim != "" {
		for _, role := range claimStrings(claims, m.RolesClaim) {
			for _, sc := range m.RoleScopes[role] {
				id.Scopes = appendScope(id.Scopes, sc)
			}
		}
	}
	if m.TenantClaim != "" {
		if _, present := lookup(claims, m.TenantClaim); present {
			t := claimString(claims, m.TenantClaim)
			if !herald.ValidTenantID(t) {
				return id, herald.Errorf(herald.CodeUnauthorized, "the token's tenant claim %q is not a tenant id", m.TenantClaim)
			}
			if id.Scopes.IsAdmin() {
				return id, herald.Errorf(herald.CodeForbidden, "the token binds tenant %s and maps to the admin scope; a tenant's caller cannot be admin", t)
			}
			id.Tenant = t
		}
	}
	return id, nil
}

func appendScope(ss herald.Scopes, sc herald.Scope) herald.Scopes {
	if slices.Contains(ss, sc) {
		return ss
	}
	return append(ss, sc)
}

// lookup finds a claim by its dotted path. A name that exists whole ("a.b"
// as one member) wins over the path.
func lookup(claims map[string]any, path string) (any, bool) {
	if v, ok := claims[path]; ok {
		return v, true
	}
	var cur any = claims
	for part := range strings.SplitSeq(path, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func claimString(claims map[string]any, path string) string {
	v, _ := lookup(claims, path)
	switch v := v.(type) {
	case string:
		return v
	case float64, bool:
		return fmt.Sprint(v)
	}
	return ""
}

// claimStrings reads a claim of several values: an array of strings or a
// space-separated string.
func claimStrings(claims map[string]any, path string) []string {
	v, _ := lookup(claims, path)
	switch v := v.(type) {
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	case []string:
		return v
	}
	return nil
}

// ParseRoleScopes parses the text form of Mapping.RoleScopes:
// "role=scope scope;role=scope", such as
// "herald-admins=admin;billing=publish:billing.> read:billing.>".
func ParseRoleScopes(text string) (map[string]herald.Scopes, error) {
	out := map[string]herald.Scopes{}
	for entry := range strings.SplitSeq(text, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		role, scopes, ok := strings.Cut(entry, "=")
		role = strings.TrimSpace(role)
		if !ok || role == "" {
			return nil, fmt.Errorf("%q: want role=scope [scope ...]", entry)
		}
		ss, err := herald.ParseScopes(strings.Fields(scopes))
		if err != nil {
			return nil, fmt.Errorf("role %s: %w", role, err)
		}
		out[role] = append(out[role], ss...)
	}
	return out, nil
}
