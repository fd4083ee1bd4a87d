package postgres

import (
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// Keys survive a round trip at nanosecond precision, including scopes, and
// duplicates conflict.
func TestKeysRoundTrip(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	secret, hash := herald.NewKeySecret()
	scopes, err := herald.ParseScopes([]string{"publish:orders.>", "read:*"})
	if err != nil {
		t.Fatal(err)
	}
	k := herald.APIKey{ID: herald.NewKeyID(), Name: "ci", Hash: hash, Prefix: secret[:9], Scopes: scopes,
		CreatedAt: time.Unix(0, 1_700_000_000_123_456_789), ExpiresAt: time.Unix(0, 1_800_000_000_000_000_001)}
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, k); !herald.IsCode(err, herald.CodeConflict) {
		t.Errorf("second CreateKey: %v, want CodeConflict", err)
	}
	got, err := s.KeyByHash(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || !got.CreatedAt.Equal(k.CreatedAt) || !got.ExpiresAt.Equal(k.ExpiresAt) ||
		!slices.Equal(got.Scopes.Strings(), scopes.Strings()) || string(got.Hash) != string(hash) {
		t.Errorf("KeyByHash: %+v, want %+v", got, k)
	}
	if err := s.DeleteKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKey(ctx, k.ID); !herald.IsCode(err, herald.CodeNotFound) {
		t.Errorf("second DeleteKey: %v, want CodeNotFound", err)
	}
}
