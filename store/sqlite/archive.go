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
	if err := herald.ValidateArchiveMaxHold(a.MaxHold); err != nil {
		return err
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = time.Now()
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO archives (name, subscription_id, max_hold, created_at) VALUES (?, ?, ?, ?)`,
			a.Name, a.SubscriptionID, int64(a.MaxHold), nanos(a.CreatedAt))
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
	a, err := scanArchive(s.reader.QueryRowContext(ctx, `SELECT `+archiveColumns+` FROM archives WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return herald.Archive{}, archiveNotFound(name)
	}
	if err != nil {
		return herald.Archive{}, s.fail("get archive", err)
	}
	return a, nil
}

// ListArchives returns up to limit archives after the name, in name order.
func (s *Store) ListArchives(ctx context.Context, after string, limit int) ([]herald.Archive, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT `+archiveColumns+` FROM archives WHERE name > ? ORDER BY name LIMIT ?`, after, limit)
	if err != nil {
		return nil, s.fail("list archives", err)
	}
	defer rows.Close()
	var out []herald.Archive
	for rows.Next() {
		a, err := scanArchive(rows)
		if err != nil {
			return nil, s.fail("list archives", err)
		}
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
		return archiveNotFound(name)
	}
	return nil
}

// UpdateArchive replaces the archive's MaxHold, or returns CodeNotFound.
func (s *Store) UpdateArchive(ctx context.Context, a herald.Archive) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := herald.ValidateArchiveMaxHold(a.MaxHold); err != nil {
		return err
	}
	var n int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = execCount(ctx, tx, `UPDATE archives SET max_hold = ? WHERE name = ?`, int64(a.MaxHold), a.Name)
		return err
	})
	if err != nil {
		return s.fail("update archive", err)
	}
	if n == 0 {
		return archiveNotFound(a.Name)
	}
	return nil
}

// archiveColumns are what scanArchive reads.
const archiveColumns = `name, subscription_id, max_hold, created_at`

func scanArchive(sc interface{ Scan(...any) error }) (herald.Archive, error) {
	var a herald.Archive
	var hold, created int64
	if err := sc.Scan(&a.Name, &a.SubscriptionID, &hold, &created); err != nil {
		return herald.Archive{}, err
	}
	a.MaxHold, a.CreatedAt = time.Duration(hold), fromNanos(created)
	return a, nil
}

func archiveNotFound(name string) error {
	return &herald.Error{Code: herald.CodeNotFound, Field: "name", Message: "archive " + name + " does not exist"}
}
