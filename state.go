package herald

import (
	"context"
	"time"
)

// State limits.
const (
	// MaxStateValueBytes bounds one key's stored state (a rule's window, a
	// view's value).
	MaxStateValueBytes = 1 << 20
)

// StateEntry is one key's state of a rule or a view.
type StateEntry struct {
	Key string
	// Value is the owner's encoding of the key's state; nil in a commit
	// deletes the key.
	Value []byte
	// Seq is the seq of the newest input event the state reflects.
	Seq       int64
	UpdatedAt time.Time
}

// StateStore keeps the per-key state of rules and views, named by an owner
// ("rule:flagger", "view:balance"). A commit is one transaction: the state
// of every key it names and the owner's position change together or not
// at all, so a crash between two commits leaves the state as the first
// left it.
type StateStore interface {
	// CommitState writes the entries of owner (a nil Value deletes the
	// key) and, when position > 0, sets the owner's position (the seq of
	// the newest input event applied) to it, in one transaction.
	CommitState(ctx context.Context, owner string, entries []StateEntry, position int64) error

	// GetState returns the key's state, or CodeNotFound.
	GetState(ctx context.Context, owner, key string) (StateEntry, error)

	// GetStates returns the state of those keys that have one, in no
	// particular order (a key without state is absent from the result).
	// It reads many keys in one round trip: a rule loads a batch's keys
	// with it.
	GetStates(ctx context.Context, owner string, keys []string) ([]StateEntry, error)

	// CountState returns how many keys owner holds.
	CountState(ctx context.Context, owner string) (int64, error)

	// ListState returns up to limit entries of owner whose keys sort after
	// the given one ("" for the first page), in key order.
	ListState(ctx context.Context, owner, after string, limit int) ([]StateEntry, error)

	// StatePosition returns the owner's position (0 when none was set).
	StatePosition(ctx context.Context, owner string) (int64, error)

	// DeleteState removes every key and the position of owner.
	DeleteState(ctx context.Context, owner string) error
}
