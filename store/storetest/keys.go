package storetest

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func newKey(t *testing.T, name string, created time.Time, scopes ...string) herald.APIKey {
	t.Helper()
	sc, err := herald.ParseScopes(scopes)
	if err != nil {
		t.Fatalf("ParseScopes(%q): %v", scopes, err)
	}
	secret, hash := herald.NewKeySecret()
	return herald.APIKey{ID: herald.NewKeyID(), Name: name, Hash: hash, Prefix: secret[:12], Scopes: sc, CreatedAt: created}
}

func sameKey(t *testing.T, got, want herald.APIKey) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || !bytes.Equal(got.Hash, want.Hash) || got.Prefix != want.Prefix ||
		!slices.Equal(got.Scopes, want.Scopes) || !got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) || got.Tenant != want.Tenant || got.Portal != want.Portal {
		t.Fatalf("key read back as %+v, want %+v", got, want)
	}
}

func keyIDs(ks []herald.APIKey) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.ID
	}
	return out
}

// The key subtests list every key in the store, so they do not run in
// parallel.
func runKeys(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("CreateLookUpListDelete", func(t *testing.T) {
		s := open(t)
		now := base()
		older := newKey(t, "admin", now.Add(-time.Hour), "admin")
		newer := newKey(t, "publisher", now, "publish:orders.>", "read:*")
		newer.ExpiresAt = now.Add(30 * 24 * time.Hour)
		newer.Tenant = "acme"
		newer.Portal = true
		// Created out of age order: the list is oldest first all the same.
		for _, k := range []herald.APIKey{newer, older} {
			if err := s.CreateKey(t.Context(), k); err != nil {
				t.Fatalf("CreateKey(%s): %v", k.Name, err)
			}
		}
		got, err := s.KeyByHash(t.Context(), newer.Hash)
		if err != nil {
			t.Fatalf("KeyByHash: %v", err)
		}
		sameKey(t, got, newer)
		got, err = s.KeyByHash(t.Context(), older.Hash)
		if err != nil {
			t.Fatalf("KeyByHash: %v", err)
		}
		sameKey(t, got, older)
		if !got.ExpiresAt.IsZero() {
			t.Fatalf("a key without expiry read back expiring at %v", got.ExpiresAt)
		}

		list, err := s.ListKeys(t.Context())
		if err != nil {
			t.Fatalf("ListKeys: %v", err)
		}
		if len(list) != 2 {
			t.Fatalf("ListKeys = %v, want 2 keys", keyIDs(list))
		}
		sameKey(t, list[0], older)
		sameKey(t, list[1], newer)

		if err := s.DeleteKey(t.Context(), older.ID); err != nil {
			t.Fatalf("DeleteKey: %v", err)
		}
		_, err = s.KeyByHash(t.Context(), older.Hash)
		wantCode(t, "KeyByHash of a deleted key", err, herald.CodeNotFound)
		wantCode(t, "DeleteKey twice", s.DeleteKey(t.Context(), older.ID), herald.CodeNotFound)
		list, err = s.ListKeys(t.Context())
		if err != nil || len(list) != 1 || list[0].ID != newer.ID {
			t.Fatalf("ListKeys after delete = %v, %v; want only %s", keyIDs(list), err, newer.ID)
		}
	})

	t.Run("CreateExistingIDIsConflict", func(t *testing.T) {
		s := open(t)
		k := newKey(t, "first", base(), "read:a.>")
		if err := s.CreateKey(t.Context(), k); err != nil {
			t.Fatalf("CreateKey: %v", err)
		}
		dup := newKey(t, "second", base(), "admin")
		dup.ID = k.ID
		wantCode(t, "CreateKey with an existing id", s.CreateKey(t.Context(), dup), herald.CodeConflict)
		got, err := s.KeyByHash(t.Context(), k.Hash)
		if err != nil {
			t.Fatalf("KeyByHash: %v", err)
		}
		sameKey(t, got, k) // the first key is untouched
		_, err = s.KeyByHash(t.Context(), dup.Hash)
		wantCode(t, "KeyByHash of the rejected key", err, herald.CodeNotFound)
	})

	t.Run("UnknownIsNotFound", func(t *testing.T) {
		s := open(t)
		_, err := s.KeyByHash(t.Context(), herald.HashKeySecret("hrld_nope"))
		wantCode(t, "KeyByHash unknown", err, herald.CodeNotFound)
		wantCode(t, "DeleteKey unknown", s.DeleteKey(t.Context(), "key_nope"), herald.CodeNotFound)
		list, err := s.ListKeys(t.Context())
		if err != nil || len(list) != 0 {
			t.Fatalf("ListKeys of an empty store = %v, %v", keyIDs(list), err)
		}
	})
}
