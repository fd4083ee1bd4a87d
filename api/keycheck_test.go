package api

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// TestCheckKey: the stream hub's view of whether a key still holds. A key
// deleted through this server fails at once; one deleted elsewhere (behind
// the cache's back) fails once the list of keys is older than indexTTL; an
// expired key fails; the bootstrap admin always holds.
func TestCheckKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := t.Context()
	if exp, err := e.api.CheckKey(ctx, adminSubject); err != nil || !exp.IsZero() {
		t.Errorf("CheckKey(admin) = %v, %v", exp, err)
	}
	var short keyJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/keys", body: []byte(`{"name":"s","scopes":["read:a"],"expires_in":"1h"}`)}, &short)
	exp, err := e.api.CheckKey(ctx, short.ID)
	if want, _ := time.Parse(time.RFC3339, short.ExpiresAt); err != nil || exp.Sub(want).Abs() >= time.Millisecond {
		t.Errorf("CheckKey(a key expiring at %s) = %v, %v", short.ExpiresAt, exp, err)
	}
	e.must(http.StatusNoContent, req{method: "DELETE", path: "/v1/keys/" + short.ID}, nil)
	if _, err := e.api.CheckKey(ctx, short.ID); !herald.IsCode(err, herald.CodeUnauthorized) {
		t.Errorf("CheckKey of a key deleted here = %v, want unauthorized at once", err)
	}
	_, hash := herald.NewKeySecret()
	old := herald.APIKey{ID: herald.NewKeyID(), Name: "old", Hash: hash, Scopes: herald.Scopes{{Action: herald.ActionAdmin}},
		CreatedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)}
	if err := e.store.CreateKey(ctx, old); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{old.ID, "key_never"} {
		if _, err := e.api.CheckKey(ctx, id); !herald.IsCode(err, herald.CodeUnauthorized) {
			t.Errorf("CheckKey(%s) = %v, want unauthorized", id, err)
		}
	}
}

// countingLister counts the lists of keys read from the store.
type countingLister struct {
	keyLookup
	lists atomic.Int64
}

func (c *countingLister) ListKeys(ctx context.Context) ([]herald.APIKey, error) {
	c.lists.Add(1)
	return c.keyLookup.ListKeys(ctx)
}

// TestKeyIndexTTL: a key deleted through another node is seen within
// indexTTL, a key created anywhere is found at once, and checking many
// keys costs one store read per indexTTL.
func TestKeyIndexTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := &countingLister{keyLookup: e.store}
	c := newKeyCache(store, time.Second, 2*time.Second, 16, clock)
	var ids []string
	for range 5 {
		id, _ := e.createKey("read:a")
		ids = append(ids, id)
	}
	for range 3 {
		for _, id := range ids {
			if k, err := c.byID(t.Context(), id); err != nil || k.ID != id {
				t.Fatalf("byID(%s) = %+v, %v", id, k, err)
			}
		}
	}
	if n := store.lists.Load(); n != 1 {
		t.Errorf("15 checks of 5 keys read the list %d times, want 1", n)
	}
	// Deleted behind the cache's back: still found while the list is
	// fresh, not found once it is indexTTL old.
	if err := e.store.DeleteKey(t.Context(), ids[0]); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	if _, err := c.byID(t.Context(), ids[0]); err != nil {
		t.Fatalf("a key deleted elsewhere within indexTTL: %v", err)
	}
	now = now.Add(time.Second)
	if _, err := c.byID(t.Context(), ids[0]); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("a key deleted elsewhere after indexTTL: %v, want not-found", err)
	}
	if n := store.lists.Load(); n != 2 {
		t.Errorf("the list was read %d times, want 2", n)
	}
	// A key created after the list was read is found at once: a miss is
	// answered by a list read after the question.
	id, _ := e.createKey("read:a")
	now = now.Add(time.Millisecond)
	if k, err := c.byID(t.Context(), id); err != nil || k.ID != id {
		t.Fatalf("a key created after the list was read: %+v, %v", k, err)
	}
	if n := store.lists.Load(); n != 3 {
		t.Errorf("the list was read %d times, want 3", n)
	}
}
