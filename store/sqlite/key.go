package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

const keyColumns = `id, name, hash, prefix, scopes, created_at, expires_at, tenant, portal`

func scanKey(sc interface{ Scan(...any) error }) (herald.APIKey, error) {
	var k herald.APIKey
	var scopes string
	var created, expires int64
	if err := sc.Scan(&k.ID, &k.Name, &k.Hash, &k.Prefix, &scopes, &created, &expires, &k.Tenant, &k.Portal); err != nil {
		return herald.APIKey{}, err
	}
	k.CreatedAt, k.ExpiresAt = fromNanos(created), fromNanos(expires)
	if scopes != "" {
		var err error
		if k.Scopes, err = herald.ParseScopes(strings.Fields(scopes)); err != nil {
			return herald.APIKey{}, err
		}
	}
	return k, nil
}

// CreateKey stores a new API key; CodeConflict if the ID or the hash
// exists. A zero CreatedAt is set to the current time.
func (s *Store) CreateKey(ctx context.Context, k herald.APIKey) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if k.ID == "" || len(k.Hash) == 0 {
		return herald.FieldErrorf("id", "an API key needs an id and a hash")
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO api_keys (`+keyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			k.ID, k.Name, k.Hash, k.Prefix, strings.Join(k.Scopes.Strings(), " "), nanos(k.CreatedAt), nanos(k.ExpiresAt), k.Tenant, k.Portal)
		return err
	})
	err = s.fail("create key", err)
	if herald.IsCode(err, herald.CodeConflict) {
		return &herald.Error{Code: herald.CodeConflict, Field: "id", Message: "API key " + k.ID + " or its secret already exists", Err: err}
	}
	return err
}

// KeyByHash returns the key whose secret has the hash, or CodeNotFound.
func (s *Store) KeyByHash(ctx context.Context, hash []byte) (herald.APIKey, error) {
	if err := s.checkOpen(); err != nil {
		return herald.APIKey{}, err
	}
	k, err := scanKey(s.reader.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return herald.APIKey{}, herald.Errorf(herald.CodeNotFound, "no API key has this secret")
	}
	if err != nil {
		return herald.APIKey{}, s.fail("key by hash", err)
	}
	return k, nil
}

// ListKeys returns every key, oldest first (ties by id), hashes included.
func (s *Store) ListKeys(ctx context.Context) ([]herald.APIKey, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, s.fail("list keys", err)
	}
	defer rows.Close()
	var out []herald.APIKey
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, s.fail("list keys", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list keys", err)
	}
	return out, nil
}

// DeleteKey removes the key, or returns CodeNotFound.
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	var n int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = execCount(ctx, tx, `DELETE FROM api_keys WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return s.fail("delete key", err)
	}
	if n == 0 {
		return &herald.Error{Code: herald.CodeNotFound, Field: "id", Message: "API key " + id + " does not exist"}
	}
	return nil
}
