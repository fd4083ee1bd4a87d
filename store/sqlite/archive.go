package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/heraldhq/herald"
)

var _ herald.ArchiveStore = (*Store)(nil)

// CreateArchive stores a new archive; CodeConflict if the name exists. A
// zero CreatedAt is set to the current time.
func (s *Store) CreateArchive(ctx context.Context, a herald.Archive) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := herald.ValidateArchiveName(a.Name); err != nil {
		return err
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = time.Now()
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO archives (name, subscription_id, created_at) VALUES (?, ?, ?)`,
			a.Name, a.SubscriptionID, nanos(a.CreatedAt))
		return err
	})
	err = s.fail("create archive", err)
	if herald.IsCode(err, herald.CodeConflict) {
		return &herald.Error{Code: herald.CodeConflict, Field: "name", Message: "archive " + a.Name + " already exists", Err: err}
	}
	return err
}

// GetArchive returns the archive, or CodeNotFound.
func (s *Store) GetArchive(ctx context.Context, name string) (herald.Archive, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Archive{}, err
	}
	var a herald.Archive
	var created int64
	err := s.reader.QueryRowContext(ctx, `SELECT name, subscription_id, created_at FROM archives WHERE name = ?`, name).
		Scan(&a.Name, &a.SubscriptionID, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return herald.Archive{}, &herald.Error{Code: herald.CodeNotFound, Field: "name", Message: "archive " + name + " does not exist"}
	}
	if err != nil {
		return herald.Archive{}, s.fail("get archive", err)
	}
	a.CreatedAt = fromNanos(created)
	return a, nil
}

// ListArchives returns up to limit archives after the name, in name order.
func (s *Store) ListArchives(ctx context.Context, after string, limit int) ([]herald.Archive, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT name, subscription_id, created_at FROM archives WHERE name > ? ORDER BY name LIMIT ?`, after, limit)
	if err != nil {
		return nil, s.fail("list archives", err)
	}
	defer rows.Close()
	var out []herald.Archive
	for rows.Next() {
		var a herald.Archive
		var created int64
		if err := rows.Scan(&a.Name, &a.SubscriptionID, &created); err != nil {
			return nil, s.fail("list archives", err)
		}
		a.CreatedAt = fromNanos(created)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list archives", err)
	}
	return out, nil
}

// DeleteArchive removes the archive, or returns CodeNotFound.
func (s *Store) DeleteArchive(ctx context.Context, name string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	var n int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = execCount(ctx, tx, `DELETE FROM archives WHERE name = ?`, name)
		return err
	})
	if err != nil {
		return s.fail("delete archive", err)
	}
	if n == 0 {
		return &herald.Error{Code: herald.CodeNotFound, Field: "name", Message: "archive " + name + " does not exist"}
	}
	return nil
}
