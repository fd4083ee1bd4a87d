package api

import (
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
)

// Key limits.
const (
	maxKeyNameLen = 100
	// maxKeyLifetime bounds expires_in.
	maxKeyLifetime = 10 * 365 * 24 * time.Hour
	// keyPrefixLen is how much of a secret is kept to recognise it in lists:
	// "hrld_" and three random characters.
	keyPrefixLen = len(herald.KeySecretPrefix) + 3
)

type createKeyRequest struct {
	Name      string   `json:"name"`
	Scopes    []string `json:"scopes"`
	ExpiresIn string   `json:"expires_in"`
	Tenant    string   `json:"tenant"`
}

// keyJSON is a key on the wire; Secret is set only in the create response.
type keyJSON struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Scopes    []string `json:"scopes"`
	Prefix    string   `json:"prefix"`
	CreatedAt string   `json:"created_at"`
	ExpiresAt string   `json:"expires_at,omitempty"`
	Tenant    string   `json:"tenant,omitempty"`
	Portal    bool     `json:"portal,omitempty"`
	Secret    string   `json:"secret,omitempty"`
}

func toKeyJSON(k herald.APIKey) keyJSON {
	out := keyJSON{
		ID:        k.ID,
		Name:      k.Name,
		Scopes:    k.Scopes.Strings(),
		Prefix:    k.Prefix,
		CreatedAt: formatTime(k.CreatedAt),
		Tenant:    k.Tenant,
		Portal:    k.Portal,
	}
	if !k.ExpiresAt.IsZero() {
		out.ExpiresAt = formatTime(k.ExpiresAt)
	}
	return out
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) error {
	var req createKeyRequest
	if err := decodeJSON(w, r, maxJSONBody, false, &req); err != nil {
		return err
	}
	if req.Name == "" || len(req.Name) > maxKeyNameLen || !utf8.ValidString(req.Name) || hasControl(req.Name) {
		return herald.FieldErrorf("name", "name must be 1 to %d bytes of text", maxKeyNameLen)
	}
	scopes, err := herald.ParseScopes(req.Scopes)
	if err != nil {
		return err
	}
	if req.Tenant != "" {
		// A tenant key acts within its tenant only: the admin scope,
		// which reaches everything, is not for it.
		if scopes.IsAdmin() {
			return herald.FieldErrorf("scopes", "a key bound to a tenant cannot have the admin scope")
		}
		if !herald.ValidTenantID(req.Tenant) {
			return herald.FieldErrorf("tenant", "tenant %q is not a tenant id", truncate(req.Tenant, 80))
		}
		if _, err := s.store.GetTenant(r.Context(), req.Tenant); herald.IsCode(err, herald.CodeNotFound) {
			return &herald.Error{Code: herald.CodeInvalid, Field: "tenant", Message: "tenant " + req.Tenant + " does not exist", Err: err}
		} else if err != nil {
			return err
		}
	}
	now := s.now().UTC()
	k := herald.APIKey{ID: herald.NewKeyID(), Name: req.Name, Scopes: scopes, CreatedAt: now, Tenant: req.Tenant}
	if req.ExpiresIn != "" {
		d, err := herald.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 || d > maxKeyLifetime {
			return &herald.Error{Code: herald.CodeInvalid, Field: "expires_in", Err: err,
				Message: "expires_in must be a duration from 1s to 3650d, like \"30d\", got " + strconv.Quote(req.ExpiresIn)}
		}
		k.ExpiresAt = now.Add(d)
	}
	secret, hash := herald.NewKeySecret()
	k.Hash = hash
	k.Prefix = secret[:keyPrefixLen]
	if err := s.store.CreateKey(r.Context(), k); err != nil {
		return err
	}
	out := toKeyJSON(k)
	out.Secret = secret
	w.Header().Set("Location", "/v1/keys/"+k.ID)
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, out)
}

type keyListJSON struct {
	Keys []keyJSON `json:"keys"`
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) error {
	keys, err := s.store.ListKeys(r.Context())
	if err != nil {
		return err
	}
	tenant := r.URL.Query().Get("tenant")
	out := keyListJSON{Keys: []keyJSON{}}
	for _, k := range keys {
		if tenant == "" || k.Tenant == tenant {
			out.Keys = append(out.Keys, toKeyJSON(k))
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.store.DeleteKey(r.Context(), id); err != nil {
		return err
	}
	s.keys.forget(id)
	if s.notices != nil {
		s.notices.KeyRevoked(id) // e.g. the key's open streams end now; other nodes find out through CheckKey
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func hasControl(s string) bool {
	for _, c := range s {
		if c < ' ' || c == 0x7f {
			return true
		}
	}
	return false
}
