package storetest

import (
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// runArchives checks the ArchiveStore contract: create, conflict on a
// repeated name, get, list in name order with paging, delete, not found.
func runArchives(t *testing.T, open func(t *testing.T) herald.Store) {
	s, ok := open(t).(herald.ArchiveStore)
	if !ok {
		t.Fatal("the store does not implement herald.ArchiveStore")
	}
	ctx := t.Context()
	at := base().Truncate(time.Microsecond)
	for _, name := range []string{"logs", "audit", "metrics-2"} {
		if err := s.CreateArchive(ctx, herald.Archive{Name: name, SubscriptionID: "sub_" + name, MaxHold: 36*time.Hour + time.Nanosecond, CreatedAt: at}); err != nil {
			t.Fatalf("CreateArchive(%s): %v", name, err)
		}
	}
	if err := s.CreateArchive(ctx, herald.Archive{Name: "logs", SubscriptionID: "sub_other"}); !herald.IsCode(err, herald.CodeConflict) {
		t.Fatalf("CreateArchive(logs) again: got %v, want CodeConflict", err)
	}
	if err := s.CreateArchive(ctx, herald.Archive{Name: "Bad/Name", SubscriptionID: "sub_x"}); !herald.IsCode(err, herald.CodeInvalid) {
		t.Fatalf("CreateArchive(Bad/Name): got %v, want CodeInvalid", err)
	}
	got, err := s.GetArchive(ctx, "logs")
	if err != nil {
		t.Fatalf("GetArchive(logs): %v", err)
	}
	if got.Name != "logs" || got.SubscriptionID != "sub_logs" || got.MaxHold != 36*time.Hour+time.Nanosecond || !got.CreatedAt.Equal(at) {
		t.Fatalf("GetArchive(logs) = %+v, want name logs, subscription sub_logs, max hold 36h1ns, created %s", got, at)
	}
	if err := s.CreateArchive(ctx, herald.Archive{Name: "toolong", SubscriptionID: "sub_x", MaxHold: herald.MaxArchiveMaxHold + 1}); !herald.IsCode(err, herald.CodeInvalid) {
		t.Fatalf("CreateArchive with a max hold over the limit: got %v, want CodeInvalid", err)
	}
	// UpdateArchive changes the hold only.
	if err := s.UpdateArchive(ctx, herald.Archive{Name: "logs", SubscriptionID: "sub_other", MaxHold: 0}); err != nil {
		t.Fatalf("UpdateArchive(logs): %v", err)
	}
	if got, err := s.GetArchive(ctx, "logs"); err != nil || got.MaxHold != 0 || got.SubscriptionID != "sub_logs" || !got.CreatedAt.Equal(at) {
		t.Fatalf("GetArchive(logs) after UpdateArchive = %+v, %v; want max hold 0, the rest unchanged", got, err)
	}
	if err := s.UpdateArchive(ctx, herald.Archive{Name: "nope", MaxHold: time.Hour}); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("UpdateArchive(nope): got %v, want CodeNotFound", err)
	}
	if err := s.UpdateArchive(ctx, herald.Archive{Name: "logs", MaxHold: -time.Second}); !herald.IsCode(err, herald.CodeInvalid) {
		t.Fatalf("UpdateArchive with a negative hold: got %v, want CodeInvalid", err)
	}
	if _, err := s.GetArchive(ctx, "nope"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("GetArchive(nope): got %v, want CodeNotFound", err)
	}
	page, err := s.ListArchives(ctx, "", 2)
	if err != nil {
		t.Fatalf("ListArchives: %v", err)
	}
	if len(page) != 2 || page[0].Name != "audit" || page[1].Name != "logs" {
		t.Fatalf("ListArchives(\"\", 2) = %+v, want audit, logs", page)
	}
	page, err = s.ListArchives(ctx, "logs", 2)
	if err != nil {
		t.Fatalf("ListArchives: %v", err)
	}
	if len(page) != 1 || page[0].Name != "metrics-2" {
		t.Fatalf("ListArchives(logs, 2) = %+v, want metrics-2", page)
	}
	if err := s.DeleteArchive(ctx, "logs"); err != nil {
		t.Fatalf("DeleteArchive(logs): %v", err)
	}
	if err := s.DeleteArchive(ctx, "logs"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("DeleteArchive(logs) again: got %v, want CodeNotFound", err)
	}
	if _, err := s.GetArchive(ctx, "logs"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("GetArchive(logs) after delete: got %v, want CodeNotFound", err)
	}
}
