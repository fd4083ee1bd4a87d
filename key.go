package herald

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"time"
)

// Action is what a scope permits on the topics its pattern matches.
type Action string

// The actions. ActionAdmin permits everything, including topic settings,
// keys, and other callers' subscriptions.
const (
	ActionAdmin     Action = "admin"
	ActionPublish   Action = "publish"   // publish events
	ActionRead      Action = "read"      // read events and topics, stream them
	ActionSubscribe Action = "subscribe" // create and manage subscriptions, stream
)

// Scope permits one action on the topics that match Pattern. Its text form is
// "admin" or "<action>:<pattern>", for example "publish:orders.>".
type Scope struct {
	Action  Action
	Pattern string // empty for admin
}

func (s Scope) String() string {
	if s.Action == ActionAdmin {
		return string(ActionAdmin)
	}
	return string(s.Action) + ":" + s.Pattern
}

// ParseScope parses the text form of a scope.
func ParseScope(s string) (Scope, error) {
	if s == string(ActionAdmin) {
		return Scope{Action: ActionAdmin}, nil
	}
	action, pattern, ok := strings.Cut(s, ":")
	if !ok {
		return Scope{}, FieldErrorf("scopes", "scope %q: want \"admin\" or \"<action>:<topic pattern>\"", s)
	}
	switch Action(action) {
	case ActionPublish, ActionRead, ActionSubscribe:
	default:
		return Scope{}, FieldErrorf("scopes", "scope %q: action must be publish, read or subscribe", s)
	}
	if err := ValidatePattern(pattern); err != nil {
		return Scope{}, FieldErrorf("scopes", "scope %q: %s", s, err.(*Error).Message)
	}
	return Scope{Action: Action(action), Pattern: pattern}, nil
}

// Allows reports whether the scope permits the action on the topic (a name,
// or a pattern when the caller asks for a pattern subscription: then the
// scope's pattern must cover every topic the asked pattern can match).
//
// Herald's own topics (IsSystemTopic) are covered only by admin and by a
// scope whose pattern names them ("read:herald.>", which only an admin can
// grant): a wildcard never reaches them, so "read:>" and
// "read:*.subscriptions" do not allow "herald.subscriptions". A pattern
// asked for that starts with a wildcard ("*.subscriptions", ">") may still
// match system topics: whoever delivers such a pattern to a non-admin must
// check each system topic with Allows before sending it (the stream hub
// skips those the caller may not read).
func (s Scope) Allows(a Action, topic string) bool {
	if s.Action == ActionAdmin {
		return true
	}
	if s.Action != a {
		return false
	}
	if IsSystemTopic(topic) && !IsSystemTopic(s.Pattern) {
		return false
	}
	return CoversPattern(s.Pattern, topic)
}

// CoversPattern reports whether every topic matched by inner is also matched
// by outer. For a plain name inner it is MatchTopic(outer, inner).
func CoversPattern(outer, inner string) bool {
	os, is := strings.Split(outer, "."), strings.Split(inner, ".")
	for i, o := range os {
		if o == ">" {
			return i < len(is)
		}
		if i >= len(is) {
			return false
		}
		switch in := is[i]; {
		case in == ">":
			return false
		case o == "*":
		case o != in: // also rejects a literal outer against an inner "*"
			return false
		}
	}
	return len(os) == len(is)
}

// Scopes is a key's set of scopes.
type Scopes []Scope

// Allows reports whether any scope permits the action on the topic.
func (ss Scopes) Allows(a Action, topic string) bool {
	for _, s := range ss {
		if s.Allows(a, topic) {
			return true
		}
	}
	return false
}

// IsAdmin reports whether the scopes include admin.
func (ss Scopes) IsAdmin() bool {
	for _, s := range ss {
		if s.Action == ActionAdmin {
			return true
		}
	}
	return false
}

// Strings returns the text forms.
func (ss Scopes) Strings() []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.String()
	}
	return out
}

// ParseScopes parses text scopes; an empty list is an error.
func ParseScopes(texts []string) (Scopes, error) {
	if len(texts) == 0 {
		return nil, FieldErrorf("scopes", "at least one scope is required")
	}
	out := make(Scopes, 0, len(texts))
	for _, t := range texts {
		s, err := ParseScope(t)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// APIKey is a stored API key. Only the SHA-256 hash of the secret is kept;
// the secret is shown once, when the key is created.
type APIKey struct {
	ID        string // public identifier, "key_..."
	Name      string
	Hash      []byte // SHA-256 of the secret
	Prefix    string // the secret's first characters, to recognise it in lists
	Scopes    Scopes
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
	// Tenant binds the key to one tenant: it sees and changes only that
	// tenant's objects. "" for a platform key.
	Tenant string
	// Portal marks the key behind a tenant portal link
	// (POST /v1/tenants/{id}/portal-links): short-lived, bound to its
	// tenant, and unable to mint further links, so a link cannot outlive
	// the expiry it was given.
	Portal bool
}

// Expired reports whether the key has passed its expiry at now.
func (k APIKey) Expired(now time.Time) bool { return !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) }

// KeySecretPrefix starts every API key secret, so leaked keys are easy to
// find with secret scanners.
const KeySecretPrefix = "hrld_"

// NewKeySecret returns a fresh random secret and its hash.
func NewKeySecret() (secret string, hash []byte) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	secret = KeySecretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return secret, HashKeySecret(secret)
}

// HashKeySecret returns the stored form of a secret. The secrets are 256
// random bits, so a fast hash is as strong as a slow one here.
func HashKeySecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// NewKeyID returns a fresh public key identifier.
func NewKeyID() string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return "key_" + base64.RawURLEncoding.EncodeToString(b[:])
}
