package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
)

const keyColumns = `id, name, hash, prefix, scopes, created_at, expires_at, tenant, portal`

func scanKey(row pgx.Row) (herald.APIKey, error) {
	var k herald.APIKey
	var scopes []string
	var created, expires int64
	if err := row.Scan(&k.ID, &k.Name, &k.Hash, &k.Prefix, &scopes, &created, &expires, &k.Tenant, &k.Portal); err != nil {
		return herald.APIKey{}, err
	}
	k.CreatedAt, k.ExpiresAt = fromNanos(created), fromNanos(expires)
	for _, text := range scopes {
		sc, err := herald.ParseScope(text)
		if err != nil {
			return herald.APIKey{}, fmt.Errorf("key %s: stored scope %q: %w", k.ID, text, err)
		}
		k.Scopes = append(k.Scopes, sc)
	}
	return k, nil
}

// CreateKey stores a new API key; CodeConflict if the ID (or the hash)
// exists. A zero CreatedAt is set to the current time; a zero ExpiresAt
// means the key never expires. An empty ID or hash, or text that is not
// valid UTF-8, fails with CodeInvalid.
func (s *Store) CreateKey(ctx context.Context, k herald.APIKey) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	switch {
	case k.ID == "" || !validText(k.ID):
		return herald.FieldErrorf("id", "the key id must be non-empty UTF-8 without NUL bytes")
	case len(k.Hash) == 0:
		return herald.FieldErrorf("hash", "the key hash is empty")
	case !validText(k.Name):
		return herald.FieldErrorf("name", "the key name must be valid UTF-8 without NUL bytes")
	case !validText(k.Tenant):
		return herald.FieldErrorf("tenant", "the key tenant must be valid UTF-8 without NUL bytes")
	case !validText(k.Prefix):
		return herald.FieldErrorf("prefix", "the key prefix must be valid UTF-8 without NUL bytes")
	case !inNanosRange(k.CreatedAt):
		return herald.FieldErrorf("created_at", "created_at must be between %s and %s", minTime.UTC(), maxTime.UTC())
	case !inNanosRange(k.ExpiresAt):
		return herald.FieldErrorf("expires_at", "expires_at must be between %s and %s", minTime.UTC(), maxTime.UTC())
	}
	scopes := k.Scopes.Strings()
	for _, sc := range scopes {
		if !validText(sc) {
			return herald.FieldErrorf("scopes", "scopes must be valid UTF-8 without NUL bytes")
		}
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO api_keys (`+keyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		k.ID, k.Name, k.Hash, k.Prefix, scopes, nanos(k.CreatedAt), nanos(k.ExpiresAt), k.Tenant, k.Portal)
	if err != nil {
		err = s.fail("create key", err)
		if e, ok := errors.AsType[*herald.Error](err); ok && e.Code == herald.CodeConflict {
			e.Field, e.Message = "id", "an API key with this id or secret already exists"
		}
		return err
	}
	return nil
}

// KeyByHash returns the key whose secret has the hash, expired or not, or
// CodeNotFound.
func (s *Store) KeyByHash(ctx context.Context, hash []byte) (herald.APIKey, error) {
	if err := s.checkOpen(); err != nil {
		return herald.APIKey{}, err
	}
	k, err := scanKey(s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE hash = $1`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.APIKey{}, herald.Errorf(herald.CodeNotFound, "no API key has this secret")
	}
	if err != nil {
		return herald.APIKey{}, s.fail("key by hash", err)
	}
	return k, nil
}

// ListKeys returns every key, oldest first (ties by id). Hashes are
// included.
func (s *Store) ListKeys(ctx context.Context) ([]herald.APIKey, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, s.fail("list keys", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.APIKey, error) { return scanKey(row) })
	if err != nil {
		return nil, s.fail("list keys", err)
	}
	return out, nil
}

// DeleteKey removes the key, or returns CodeNotFound.
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	notFound := &herald.Error{Code: herald.CodeNotFound, Field: "id", Message: "API key " + id + " does not exist"}
	if !validText(id) {
		return notFound
	}
	n, err := s.exec(ctx, `DELETE FROM api_keys WHERE id = $1`, id)
	if err != nil {
		return s.fail("delete key", err)
	}
	if n == 0 {
		return notFound
	}
	return nil
}
