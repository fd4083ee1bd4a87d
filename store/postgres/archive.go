package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

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
	if !validText(a.SubscriptionID) {
		return herald.FieldErrorf("subscription_id", "the subscription id must be valid UTF-8 without NUL bytes")
	}
	if err := herald.ValidateArchiveMaxHold(a.MaxHold); err != nil {
		return err
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = time.Now()
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO archives (name, subscription_id, max_hold, created_at) VALUES ($1, $2, $3, $4)`,
		a.Name, a.SubscriptionID, int64(a.MaxHold), nanos(a.CreatedAt))
	if err != nil {
		err = s.fail("create archive", err)
		if e, ok := errors.AsType[*herald.Error](err); ok && e.Code == herald.CodeConflict {
			e.Field, e.Message = "name", "archive "+a.Name+" already exists"
		}
		return err
	}
	return nil
}

// GetArchive returns the archive, or CodeNotFound.
func (s *Store) GetArchive(ctx context.Context, name string) (herald.Archive, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Archive{}, err
	}
	notFound := &herald.Error{Code: herald.CodeNotFound, Field: "name", Message: "archive " + name + " does not exist"}
	if !validText(name) {
		return herald.Archive{}, notFound
	}
	a, err := scanArchive(s.pool.QueryRow(ctx, `SELECT `+archiveColumns+` FROM archives WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.Archive{}, notFound
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
	if !validText(after) {
		return nil, herald.FieldErrorf("cursor", "the cursor must be valid UTF-8 without NUL bytes")
	}
	rows, err := s.pool.Query(ctx, `SELECT `+archiveColumns+` FROM archives WHERE name > $1 ORDER BY name LIMIT $2`, after, limit)
	if err != nil {
		return nil, s.fail("list archives", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.Archive, error) { return scanArchive(row) })
	if err != nil {
		return nil, s.fail("list archives", err)
	}
	return out, nil
}

// DeleteArchive removes the archive, or returns CodeNotFound.
func (s *Store) DeleteArchive(ctx context.Context, name string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	notFound := &herald.Error{Code: herald.CodeNotFound, Field: "name", Message: "archive " + name + " does not exist"}
	if !validText(name) {
		return notFound
	}
	n, err := s.exec(ctx, `DELETE FROM archives WHERE name = $1`, name)
	if err != nil {
		return s.fail("delete archive", err)
	}
	if n == 0 {
		return notFound
	}
	return nil
}

// UpdateArchive replaces the archive's MaxHold, or returns CodeNotFound.
func (s *Store) UpdateArchive(ctx context.Context, a herald.Archive) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	notFound := &herald.Error{Code: herald.CodeNotFound, Field: "name", Message: "archive " + a.Name + " does not exist"}
	if !validText(a.Name) {
		return notFound
	}
	if err := herald.ValidateArchiveMaxHold(a.MaxHold); err != nil {
		return err
	}
	n, err := s.exec(ctx, `UPDATE archives SET max_hold = $1 WHERE name = $2`, int64(a.MaxHold), a.Name)
	if err != nil {
		return s.fail("update archive", err)
	}
	if n == 0 {
		return notFound
	}
	return nil
}

// archiveColumns are what scanArchive reads.
const archiveColumns = `name, subscription_id, max_hold, created_at`

func scanArchive(row pgx.Row) (herald.Archive, error) {
	var a herald.Archive
	var hold, created int64
	if err := row.Scan(&a.Name, &a.SubscriptionID, &hold, &created); err != nil {
		return herald.Archive{}, err
	}
	a.MaxHold, a.CreatedAt = time.Duration(hold), fromNanos(created)
	return a, nil
}
