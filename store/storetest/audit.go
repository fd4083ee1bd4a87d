package storetest

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/heraldhq/herald"
)

func auditIDs(es []herald.AuditEntry) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// runAudit checks the audit log: append, list newest first with each
// filter and paging, and prune. It reads the whole log, so it does not
// run in parallel.
func runAudit(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("AppendListPrune", func(t *testing.T) {
		s := open(t)
		ctx := t.Context()
		t0 := base()
		entries := []herald.AuditEntry{
			{Time: t0, Principal: "admin", Method: "PUT", Route: "/v1/tenants/{id}", Object: "acme", Status: 201,
				RequestID: "r1", Remote: "127.0.0.1:5000", Changes: json.RawMessage(`{"name":"Acme \u00e9"}`)},
			{Time: t0.Add(60e9), Principal: "key_a", Tenant: "acme", Method: "POST", Route: "/v1/subscriptions", Object: "sub_1",
				Status: 201, RequestID: "r2", Remote: "[::1]:6000", Changes: json.RawMessage(`{"secret":"***"}`)},
			{Time: t0.Add(120e9), Principal: "admin", Method: "DELETE", Route: "/v1/tenants/{id}", Object: "acme", Status: 204,
				RequestID: "r3", Remote: "127.0.0.1:5001"},
		}
		var ids []int64
		for i, e := range entries {
			id, err := s.AppendAudit(ctx, e)
			if err != nil {
				t.Fatalf("AppendAudit(%d): %v", i, err)
			}
			if len(ids) > 0 && id <= ids[len(ids)-1] {
				t.Fatalf("AppendAudit ids %v then %d: not increasing", ids, id)
			}
			ids = append(ids, id)
			entries[i].ID = id
		}
		all, err := s.ListAudit(ctx, herald.AuditFilter{})
		if err != nil {
			t.Fatalf("ListAudit: %v", err)
		}
		if want := []int64{ids[2], ids[1], ids[0]}; !slices.Equal(auditIDs(all), want) {
			t.Fatalf("ListAudit ids %v, want %v (newest first)", auditIDs(all), want)
		}
		for i, got := range all {
			want := entries[2-i]
			if got.ID != want.ID || !got.Time.Equal(want.Time) || got.Principal != want.Principal || got.Tenant != want.Tenant ||
				got.Method != want.Method || got.Route != want.Route || got.Object != want.Object || got.Status != want.Status ||
				got.RequestID != want.RequestID || got.Remote != want.Remote || !bytes.Equal(got.Changes, want.Changes) {
				t.Fatalf("entry read back as %+v, want %+v", got, want)
			}
		}
		for _, c := range []struct {
			name string
			f    herald.AuditFilter
			want []int64
		}{
			{"principal", herald.AuditFilter{Principal: "admin"}, []int64{ids[2], ids[0]}},
			{"tenant", herald.AuditFilter{Tenant: "acme"}, []int64{ids[1]}},
			{"object", herald.AuditFilter{Object: "acme", Method: "DELETE"}, []int64{ids[2]}},
			{"route", herald.AuditFilter{Route: "/v1/subscriptions"}, []int64{ids[1]}},
			{"since", herald.AuditFilter{Since: t0.Add(60e9)}, []int64{ids[2], ids[1]}},
			{"until", herald.AuditFilter{Until: t0.Add(60e9)}, []int64{ids[0]}},
			{"page", herald.AuditFilter{BeforeID: ids[2], Limit: 1}, []int64{ids[1]}},
			{"limit", herald.AuditFilter{Limit: 2}, []int64{ids[2], ids[1]}},
			{"none", herald.AuditFilter{Principal: "nobody"}, nil},
		} {
			got, err := s.ListAudit(ctx, c.f)
			if err != nil || !slices.Equal(auditIDs(got), c.want) {
				t.Fatalf("ListAudit(%s) = %v, %v; want %v", c.name, auditIDs(got), err, c.want)
			}
		}
		n, err := s.PruneAudit(ctx, t0.Add(61e9), 1000)
		if err != nil || n != 2 {
			t.Fatalf("PruneAudit = %d, %v; want 2", n, err)
		}
		left, err := s.ListAudit(ctx, herald.AuditFilter{})
		if err != nil || !slices.Equal(auditIDs(left), []int64{ids[2]}) {
			t.Fatalf("after PruneAudit: %v, %v", auditIDs(left), err)
		}
	})
}
