package client

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// Key is an API key as listed: everything but its secret.
type Key struct {
	ID        string   // public identifier, "key_..."
	Name      string   // a label chosen at creation
	Scopes    []string // text forms, such as "admin" or "publish:orders.>"
	Prefix    string   // the secret's first characters, to recognise it
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never expires
	Tenant    string    // the tenant the key is bound to; "" for a platform key
}

// CreatedKey is a key just created, with its secret. The server shows the
// secret only in this answer; it keeps only a hash.
type CreatedKey struct {
	Key
	Secret string // "hrld_..."; send it with WithKey
}

type keyJSON struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Scopes    []string `json:"scopes"`
	Prefix    string   `json:"prefix"`
	CreatedAt string   `json:"created_at"`
	ExpiresAt string   `json:"expires_at,omitempty"`
	Tenant    string   `json:"tenant,omitempty"`
	Secret    string   `json:"secret,omitempty"`
}

func (k Key) wire() keyJSON {
	return keyJSON{ID: k.ID, Name: k.Name, Scopes: k.Scopes, Prefix: k.Prefix,
		CreatedAt: formatTime(k.CreatedAt), ExpiresAt: formatTime(k.ExpiresAt), Tenant: k.Tenant}
}

func (k *Key) fromWire(w keyJSON) error {
	out := Key{ID: w.ID, Name: w.Name, Scopes: w.Scopes, Prefix: w.Prefix, Tenant: w.Tenant}
	var err error
	if out.CreatedAt, err = parseTime("created_at", w.CreatedAt); err != nil {
		return err
	}
	if out.ExpiresAt, err = parseTime("expires_at", w.ExpiresAt); err != nil {
		return err
	}
	*k = out
	return nil
}

// MarshalJSON writes the API's form of a key.
func (k Key) MarshalJSON() ([]byte, error) { return marshal(k.wire()) }

// UnmarshalJSON reads the API's form of a key.
func (k *Key) UnmarshalJSON(b []byte) error {
	var w keyJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	return k.fromWire(w)
}

// MarshalJSON writes the API's form of a created key, secret included.
// (Without it, Key's method would be promoted and drop the secret.)
func (k CreatedKey) MarshalJSON() ([]byte, error) {
	w := k.Key.wire()
	w.Secret = k.Secret
	return marshal(w)
}

// UnmarshalJSON reads the API's form of a created key.
func (k *CreatedKey) UnmarshalJSON(b []byte) error {
	var w keyJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	k.Secret = w.Secret
	return k.Key.fromWire(w)
}

// CreateKey creates an API key with the scopes ("admin",
// "publish:<pattern>", "read:<pattern>", "subscribe:<pattern>") that
// expires after expiresIn (0: never). It needs an admin key. Invalid scopes
// are a *Problem with status 400 and field "scopes".
func (c *Client) CreateKey(ctx context.Context, name string, scopes []string, expiresIn time.Duration) (CreatedKey, error) {
	return c.CreateTenantKey(ctx, "", name, scopes, expiresIn)
}

// CreateTenantKey is CreateKey for a key bound to the tenant: it sees and
// changes only that tenant's subscriptions, and cannot be admin. An empty
// tenant makes a platform key.
func (c *Client) CreateTenantKey(ctx context.Context, tenant, name string, scopes []string, expiresIn time.Duration) (CreatedKey, error) {
	body, hdr, err := jsonBody(struct {
		Name      string   `json:"name"`
		Scopes    []string `json:"scopes"`
		ExpiresIn string   `json:"expires_in,omitempty"`
		Tenant    string   `json:"tenant,omitempty"`
	}{name, scopes, formatDuration(expiresIn), tenant})
	if err != nil {
		return CreatedKey{}, err
	}
	var k CreatedKey
	_, err = c.do(ctx, request{method: http.MethodPost, path: "/v1/keys", header: hdr, body: body, out: &k})
	return k, err
}

// ListKeys returns every API key, without secrets. It needs an admin key.
func (c *Client) ListKeys(ctx context.Context) ([]Key, error) {
	var out struct {
		Keys []Key `json:"keys"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/keys", out: &out})
	return out.Keys, err
}

// DeleteKey deletes the API key with the id; requests with it fail from
// then on. It needs an admin key; a missing key is a *Problem with status
// 404.
func (c *Client) DeleteKey(ctx context.Context, id string) error {
	seg, err := segment("id", id)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/keys/" + seg})
	return err
}
