package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald"
)

const (
	// keyCacheTTL is how long a key looked up in the store is trusted
	// without asking again. A key deleted through another node stays usable
	// here for at most this long; one deleted through this server is
	// dropped at once.
	keyCacheTTL = 5 * time.Second
	// keyIndexTTL is how long the list of keys that CheckKey reads is
	// trusted: a key deleted through another node still passes CheckKey
	// here for at most this long, so its tokens are refused, and its open
	// streams closed (with the stream hub's KeyCheckInterval on top),
	// within about 3 seconds.
	keyIndexTTL = 2 * time.Second
	// keyCacheSize bounds the cached keys.
	keyCacheSize = 1024
	// maxBearerLen bounds the credential we hash; real secrets are 48 bytes.
	maxBearerLen = 256
)

// principal is the caller of a request, as established by authenticate.
type principal struct {
	keyID  string // "" for the bootstrap admin and insecure mode
	scopes herald.Scopes
	// tenant binds the caller to one tenant: it sees and changes only that
	// tenant's subscriptions and keys ("" for the platform).
	tenant string
	// portal: the key behind a tenant portal link, which may not mint
	// further links.
	portal bool
	// external names a caller of a token from outside (OIDC or
	// introspection, identity.Identity.Subject); "" for keys.
	external string
	// expires is when an outside token stops being valid; zero for keys.
	expires time.Time
}

// adminSubject names the bootstrap admin key (and everyone, with
// authentication off) to the stream hub, which stored keys name by id.
// It is never revoked.
const adminSubject = "admin"

var adminPrincipal = &principal{scopes: herald.Scopes{{Action: herald.ActionAdmin}}}

// subject names the caller to the stream hub and in tokens: its key's id,
// or adminSubject.
func (p *principal) subject() string {
	if p.external != "" {
		return p.external
	}
	if p.keyID == "" {
		return adminSubject
	}
	return p.keyID
}

// principalFrom returns the caller authenticate established, or one a
// handler set under principalKey for what it calls (push registration).
func principalFrom(ctx context.Context) *principal {
	if p, ok := ctx.Value(principalKey).(*principal); ok {
		return p
	}
	if st := requestStateFrom(ctx); st != nil {
		return st.principal
	}
	return nil
}

// errBadCredentials is the single answer to any unusable key: unknown,
// expired, or malformed look the same, so a caller cannot probe which keys
// exist.
var errBadCredentials = herald.Errorf(herald.CodeUnauthorized, "the API key is not valid")

// authenticate establishes the caller from the Bearer key and, for admin
// routes, checks the admin scope. Other routes check their topic scope in
// the handler through authorize.
func (s *Server) authenticate(acc access, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.principal(r)
		if rec := auditRecordFrom(r.Context()); rec != nil && p != nil {
			rec.p = p // a refused call of a known caller is recorded too
		}
		if err == nil && acc == adminOnly && !p.scopes.IsAdmin() {
			err = herald.Errorf(herald.CodeForbidden, "this operation needs the admin scope")
		}
		if err != nil {
			writeProblem(w, r, s.log, err)
			return
		}
		if st := requestStateFrom(r.Context()); st != nil {
			st.principal = p // no second copy of the request
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey, p)))
	})
}

// principal establishes the caller of r from its credentials. Success
// also marks r's connection as authenticated, so the Listener never closes
// it to make room for others.
func (s *Server) principal(r *http.Request) (*principal, error) {
	p, err := s.credentials(r)
	if err == nil {
		connAuthenticated(r.Context())
	}
	return p, err
}

func (s *Server) credentials(r *http.Request) (*principal, error) {
	if s.cfg.InsecureNoAuth {
		return adminPrincipal, nil
	}
	auth := r.Header.Get("Authorization")
	if auth == "" && s.sessions != nil {
		// The operator console's session cookie stands for the key it
		// signed in with; a change needs the session's CSRF token too.
		if cred, id, csrf, ok := s.sessions.Open(r); ok {
			switch r.Method {
			case http.MethodGet, http.MethodHead, http.MethodOptions:
			default:
				if got := r.Header.Get("X-CSRF-Token"); csrf == "" || subtle.ConstantTimeCompare([]byte(got), []byte(csrf)) != 1 {
					return nil, herald.Errorf(herald.CodeForbidden, "a console session's changes need its X-CSRF-Token header")
				}
			}
			if id.Subject != "" {
				// A sign-in with the OpenID provider: the session holds
				// what the provider vouched for at sign-in.
				return &principal{external: id.Subject, scopes: id.Scopes, tenant: id.Tenant, expires: id.Expires}, nil
			}
			auth = "Bearer " + cred
		}
	}
	if auth == "" {
		return nil, herald.Errorf(herald.CodeUnauthorized, "an API key is required: Authorization: Bearer <key>")
	}
	scheme, secret, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, herald.Errorf(herald.CodeUnauthorized, "the Authorization header must use the Bearer scheme")
	}
	secret = strings.TrimSpace(secret)
	if secret == "" {
		return nil, errBadCredentials
	}
	if s.external() && !strings.HasPrefix(secret, herald.KeySecretPrefix) {
		if p, err, ok := s.externalPrincipal(r, secret); ok {
			return p, err
		}
	}
	if len(secret) > maxBearerLen {
		return nil, errBadCredentials
	}
	hash := sha256.Sum256([]byte(secret))
	if len(s.cfg.AdminKeyHash) == sha256.Size && subtle.ConstantTimeCompare(hash[:], s.cfg.AdminKeyHash) == 1 {
		return adminPrincipal, nil
	}
	k, err := s.keys.lookup(r.Context(), hash)
	if herald.IsCode(err, herald.CodeNotFound) {
		return nil, errBadCredentials
	}
	if err != nil {
		return nil, err
	}
	if k.Expired(s.now()) {
		return nil, errBadCredentials
	}
	return &principal{keyID: k.ID, scopes: k.Scopes, tenant: k.Tenant, portal: k.Portal}, nil
}

// authorize checks that the caller may take the action on the topic.
func authorize(r *http.Request, a herald.Action, topic string) error {
	p := principalFrom(r.Context())
	if p != nil && p.scopes.Allows(a, topic) {
		return nil
	}
	return herald.Errorf(herald.CodeForbidden, "the API key has no %s scope for topic %q", a, topic)
}

// showsDetail reports whether the caller sees failure details: the raw
// causes behind the public reasons of attempts, dead letters and
// subscription states, which name internal hosts, resolvers and addresses
// (see herald.JoinReason). Admins only.
func showsDetail(r *http.Request) bool {
	p := principalFrom(r.Context())
	return p != nil && p.scopes.IsAdmin()
}

// splitReason splits a stored reason into its public text and, when
// detail is true, its detail ("" otherwise).
func splitReason(stored string, detail bool) (string, string) {
	reason, d := herald.SplitReason(stored)
	if !detail {
		d = ""
	}
	return reason, d
}

// keyLookup is the part of the store the key cache reads.
type keyLookup interface {
	KeyByHash(ctx context.Context, hash []byte) (herald.APIKey, error)
	ListKeys(ctx context.Context) ([]herald.APIKey, error)
}

// keyCache remembers keys found in the store for a few seconds, so a busy
// producer costs one store read per TTL rather than one per request. It
// keeps only found keys: a key created anywhere works at once. Apart, it
// keeps a list of every key by id for byID, read again after indexTTL.
type keyCache struct {
	store    keyLookup
	ttl      time.Duration
	indexTTL time.Duration
	size     int
	now      func() time.Time

	refreshMu sync.Mutex // held while byID reads the list of keys

	mu        sync.Mutex
	entries   map[[sha256.Size]byte]cachedKey
	index     map[string]herald.APIKey // every key by id; nil until read
	indexedAt time.Time                // when the read of index began
	// gen counts forget calls: a lookup that raced a delete does not put
	// the deleted key back.
	gen uint64
}

type cachedKey struct {
	key     herald.APIKey
	fetched time.Time
}

func newKeyCache(store keyLookup, ttl, indexTTL time.Duration, size int, now func() time.Time) *keyCache {
	return &keyCache{store: store, ttl: ttl, indexTTL: indexTTL, size: size, now: now,
		entries: make(map[[sha256.Size]byte]cachedKey)}
}

// lookup returns the key with the hash, from the cache when fresh, else from
// the store (CodeNotFound when there is none).
func (c *keyCache) lookup(ctx context.Context, hash [sha256.Size]byte) (herald.APIKey, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[hash]
	gen := c.gen
	c.mu.Unlock()
	if ok && now.Sub(e.fetched) < c.ttl {
		return e.key, nil
	}
	k, err := c.store.KeyByHash(ctx, hash[:])
	if err != nil {
		if herald.IsCode(err, herald.CodeNotFound) {
			c.mu.Lock()
			delete(c.entries, hash)
			c.mu.Unlock()
		}
		return herald.APIKey{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return k, nil // a key was deleted meanwhile; maybe this one: ask again next time
	}
	if len(c.entries) >= c.size {
		c.evict(now)
	}
	c.entries[hash] = cachedKey{key: k, fetched: now}
	return k, nil
}

// evict makes room: stale entries go first, then arbitrary ones until a
// quarter of the cache is free. c.mu is held.
func (c *keyCache) evict(now time.Time) {
	for h, e := range c.entries {
		if now.Sub(e.fetched) >= c.ttl {
			delete(c.entries, h)
		}
	}
	for h := range c.entries {
		if len(c.entries) < c.size*3/4 {
			break
		}
		delete(c.entries, h)
	}
}

// forget drops the key with the id, so a key deleted through this server is
// refused from the next request on.
func (c *keyCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for h, e := range c.entries {
		if e.key.ID == id {
			delete(c.entries, h)
		}
	}
	delete(c.index, id)
}

// byID returns the key with the id (CodeNotFound when there is none) from
// a list of every key, read again from the store when older than
// indexTTL: one read per indexTTL, however many streams and tokens are
// checked, whatever the number of keys behind them. An id missing from
// the list may be a key created since it was read, so a miss is answered
// only by a list read after the call began: a key created anywhere is
// found at once, and a deleted one costs a read per call, as an unknown
// secret does in lookup.
func (c *keyCache) byID(ctx context.Context, id string) (herald.APIKey, error) {
	asked := c.now()
	k, found, fresh, _ := c.indexed(id)
	if !found || !fresh {
		c.refreshMu.Lock() // one reader at a time; the others use its list
		defer c.refreshMu.Unlock()
		var readAt time.Time
		k, found, fresh, readAt = c.indexed(id)
		if !fresh || !found && readAt.Before(asked) {
			if err := c.readIndex(ctx); err != nil {
				return herald.APIKey{}, err
			}
			k, found, _, _ = c.indexed(id)
		}
	}
	if !found {
		return herald.APIKey{}, herald.Errorf(herald.CodeNotFound, "API key %s not found", id)
	}
	return k, nil
}

// indexed looks the id up in the list of keys, and reports whether the
// list is fresh and when its read began.
func (c *keyCache) indexed(id string) (k herald.APIKey, found, fresh bool, readAt time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, found = c.index[id]
	return k, found, c.index != nil && c.now().Sub(c.indexedAt) < c.indexTTL, c.indexedAt
}

// readIndex reads the list of keys from the store. c.refreshMu is held.
func (c *keyCache) readIndex(ctx context.Context) error {
	// A delete that commits while the list is read may be missing from
	// it: read again rather than bring the key back (forget counts in gen).
	for try := 1; ; try++ {
		c.mu.Lock()
		gen := c.gen
		c.mu.Unlock()
		start := c.now()
		keys, err := c.store.ListKeys(ctx)
		if err != nil {
			return err
		}
		index := make(map[string]herald.APIKey, len(keys))
		for _, k := range keys {
			index[k.ID] = k
		}
		c.mu.Lock()
		if c.gen == gen || try == 3 {
			c.index, c.indexedAt = index, start
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
	}
}

// len reports the number of cached keys (for tests).
func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
