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

// StateBatch is what CommitStateBatch writes at once: one batch of a rule
// or a view.
type StateBatch struct {
	Owner    string
	Entries  []StateEntry // as CommitState's: a nil Value deletes the key
	Position int64        // when > 0, the owner's new position
	// Emits are the events the batch publishes, appended in the same
	// transaction; their ID and Seq are set on success, as Append sets
	// them.
	Emits []*Event
	// SubscriptionID, Epoch and Cursors: the subscription whose input the
	// batch consumed, its lease epoch, and its cursors once the batch is
	// settled. "" for none (no lease check, no cursor).
	SubscriptionID string
	Epoch          int64
	Cursors        []Cursor
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

	// CommitStateBatch commits one batch of a rule or a view in one
	// transaction: its state entries and position as CommitState writes
	// them, its emitted events as Append stores them (seqs, dedup, the
	// same results; Time must be set), and, when b.SubscriptionID is set,
	// the advance of that subscription's cursors as Settle writes them
	// (advance only; not in a topic fenced under the epoch). Either all of
	// it commits or none: a crash leaves the state, the emitted events
	// and the cursors as the last commit left them, so a batch delivered
	// again computes and emits exactly what it would have.
	//
	// With b.SubscriptionID set, the commit holds only while the
	// subscription's lease has epoch b.Epoch: otherwise it writes nothing
	// and returns CodeConflict (a node that lost the lease cannot commit
	// state), or CodeNotFound when the subscription is gone. An emitted
	// event that Append would fail (its topic does not exist, its id
	// conflicts) fails the whole commit with that event's error.
	CommitStateBatch(ctx context.Context, b StateBatch) ([]AppendResult, error)

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
