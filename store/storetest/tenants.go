package storetest

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func sameTenant(t *testing.T, what string, got, want herald.Tenant) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || !maps.Equal(got.Metadata, want.Metadata) ||
		got.TopicPattern != want.TopicPattern || got.Limits != want.Limits ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Fatalf("%s: tenant read back as %+v, want %+v", what, got, want)
	}
}

// runTenants checks the TenantStore: put, get, list, count and the
// deletion of a tenant with its subscriptions and keys. It lists every
// tenant, so it does not run in parallel.
func runTenants(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Run("PutGetListDelete", func(t *testing.T) {
		s := open(t)
		ctx := t.Context()
		acme := herald.Tenant{ID: "acme", Name: "Acme \u00e9", Metadata: map[string]string{"plan": "gold", "region": "eu"},
			TopicPattern: "tenants.acme.>",
			Limits:       herald.TenantLimits{MaxSubscriptions: 3, DeliveriesPerSecond: 2.5, MaxInFlight: 4, PublishRate: 7.5, MaxSources: 5},
			CreatedAt:    at(0), UpdatedAt: at(0)}
		got, created, err := s.PutTenant(ctx, acme)
		if err != nil || !created {
			t.Fatalf("PutTenant(acme) = created %v, %v; want created", created, err)
		}
		sameTenant(t, "created", got, acme)
		if _, _, err := s.PutTenant(ctx, herald.Tenant{ID: "beta", CreatedAt: at(1), UpdatedAt: at(1)}); err != nil {
			t.Fatalf("PutTenant(beta): %v", err)
		}
		beta, err := s.GetTenant(ctx, "beta")
		if err != nil {
			t.Fatalf("GetTenant(beta): %v", err)
		}
		if len(beta.Metadata) != 0 || !beta.CreatedAt.Equal(at(1)) {
			t.Fatalf("beta read back as %+v", beta)
		}

		// An update keeps CreatedAt and replaces the rest.
		upd := acme
		upd.Name, upd.Metadata, upd.TopicPattern = "Acme Ltd", map[string]string{"plan": "silver"}, ""
		upd.Limits = herald.TenantLimits{MaxSubscriptions: 10, MaxSources: 2}
		upd.CreatedAt, upd.UpdatedAt = at(50), at(60)
		got, created, err = s.PutTenant(ctx, upd)
		if err != nil || created {
			t.Fatalf("PutTenant(acme again) = created %v, %v; want updated", created, err)
		}
		upd.CreatedAt = at(0)
		sameTenant(t, "updated", got, upd)
		got, err = s.GetTenant(ctx, "acme")
		if err != nil {
			t.Fatalf("GetTenant(acme): %v", err)
		}
		sameTenant(t, "read back", got, upd)
		if _, err := s.GetTenant(ctx, "nobody"); !herald.IsCode(err, herald.CodeNotFound) {
			t.Fatalf("GetTenant(nobody) = %v, want CodeNotFound", err)
		}

		list, err := s.ListTenants(ctx, "", 0)
		if err != nil {
			t.Fatalf("ListTenants: %v", err)
		}
		if ids := tenantIDs(list); !slices.Equal(ids, []string{"acme", "beta"}) {
			t.Fatalf("ListTenants = %v, want [acme beta]", ids)
		}
		list, err = s.ListTenants(ctx, "acme", 1)
		if err != nil || !slices.Equal(tenantIDs(list), []string{"beta"}) {
			t.Fatalf("ListTenants(after acme, 1) = %v, %v; want [beta]", tenantIDs(list), err)
		}
		list, err = s.ListTenants(ctx, "", 1)
		if err != nil || !slices.Equal(tenantIDs(list), []string{"acme"}) {
			t.Fatalf("ListTenants(first, 1) = %v, %v; want [acme]", tenantIDs(list), err)
		}

		// Subscriptions and keys of acme, of beta and of no tenant.
		putTopic(t, s, topic("tenants.acme.orders"))
		mine := plainSub("sub_acme1", "tenants.acme.orders")
		mine.Tenant = "acme"
		mine2 := plainSub("sub_acme2", "tenants.acme.>")
		mine2.Tenant = "acme"
		theirs := plainSub("sub_beta1", "tenants.acme.orders")
		theirs.Tenant = "beta"
		platform := plainSub("sub_plat1", "tenants.acme.orders")
		for _, sub := range []herald.Subscription{mine, mine2, theirs, platform} {
			createSub(t, s, sub, herald.StartPosition{})
		}
		n, err := s.CountSubscriptions(ctx, "acme")
		if err != nil || n != 2 {
			t.Fatalf("CountSubscriptions(acme) = %d, %v; want 2", n, err)
		}
		subs, err := s.ListSubscriptions(ctx, herald.SubscriptionFilter{Tenant: "acme"})
		if err != nil || !slices.Equal(subIDs(subs), []string{"sub_acme1", "sub_acme2"}) {
			t.Fatalf("ListSubscriptions(tenant acme) = %v, %v", subIDs(subs), err)
		}
		// A dead letter of acme's subscription goes with it.
		evs := subTopic(t, s, "tenants.acme.orders", 1)
		epoch := lease(t, s, "sub_acme1")
		settleOK(t, s, "sub_acme1", epoch, herald.Settlement{
			Cursors:     []herald.Cursor{{Topic: "tenants.acme.orders", Seq: evs[0].Seq}},
			DeadLetters: []herald.DeadLetter{deadLetter("sub_acme1", "tenants.acme.orders", evs[0].Seq, "", 3, at(10))},
		})

		acmeKey := newKey(t, "acme backend", base(), "subscribe:tenants.acme.>")
		acmeKey.Tenant = "acme"
		platKey := newKey(t, "platform", base(), "admin")
		for _, k := range []herald.APIKey{acmeKey, platKey} {
			if err := s.CreateKey(ctx, k); err != nil {
				t.Fatalf("CreateKey: %v", err)
			}
		}

		// Sources of acme go with it; the platform's stay.
		ss, hasSources := any(s).(herald.SourceStore)
		if hasSources {
			for _, src := range []herald.Source{
				{ID: "src_acme", Kind: "webhook", Topic: "tenants.acme.in", Shards: 1, State: herald.SourceActive, Tenant: "acme", CreatedAt: at(0), UpdatedAt: at(0)},
				{ID: "src_plat", Kind: "webhook", Topic: "platform.in", Shards: 1, State: herald.SourceActive, CreatedAt: at(0), UpdatedAt: at(0)},
			} {
				if err := ss.CreateSource(ctx, src); err != nil {
					t.Fatalf("CreateSource(%s): %v", src.ID, err)
				}
			}
			if _, err := ss.AcquireSourceLease(ctx, "src_acme", 0, "node-a", at(1), time.Minute); err != nil {
				t.Fatalf("AcquireSourceLease: %v", err)
			}
			got, err := ss.GetSource(ctx, "src_acme")
			if err != nil || got.Tenant != "acme" {
				t.Fatalf("GetSource(src_acme) = tenant %q, %v; want acme", got.Tenant, err)
			}
		}

		del, err := s.DeleteTenant(ctx, "acme")
		if err != nil {
			t.Fatalf("DeleteTenant(acme): %v", err)
		}
		if hasSources {
			if !slices.Equal(del.Sources, []string{"src_acme"}) {
				t.Fatalf("DeleteTenant removed sources %v, want src_acme", del.Sources)
			}
			if _, err := ss.GetSource(ctx, "src_acme"); !herald.IsCode(err, herald.CodeNotFound) {
				t.Fatalf("GetSource(src_acme) after its tenant's delete = %v, want CodeNotFound", err)
			}
			if shards, err := ss.SourceShards(ctx, "src_acme"); err != nil || len(shards) != 0 {
				t.Fatalf("shards of a deleted tenant's source: %v, %v", shards, err)
			}
			if got, err := ss.GetSource(ctx, "src_plat"); err != nil || got.Tenant != "" {
				t.Fatalf("GetSource(src_plat) = %+v, %v; want the platform's source kept", got, err)
			}
		}
		slices.Sort(del.Subscriptions)
		if !slices.Equal(del.Subscriptions, []string{"sub_acme1", "sub_acme2"}) || !slices.Equal(del.Keys, []string{acmeKey.ID}) {
			t.Fatalf("DeleteTenant removed %+v, want acme's two subscriptions and its key", del)
		}
		if _, err := s.GetTenant(ctx, "acme"); !herald.IsCode(err, herald.CodeNotFound) {
			t.Fatalf("GetTenant after delete = %v, want CodeNotFound", err)
		}
		if _, err := s.GetSubscription(ctx, "sub_acme1"); !herald.IsCode(err, herald.CodeNotFound) {
			t.Fatalf("GetSubscription(sub_acme1) after delete = %v, want CodeNotFound", err)
		}
		if n := countDead(t, s, "sub_acme1"); n != 0 {
			t.Fatalf("dead letters of a deleted tenant's subscription: %d", n)
		}
		subs, err = s.ListSubscriptions(ctx, herald.SubscriptionFilter{})
		if err != nil || !slices.Equal(subIDs(subs), []string{"sub_beta1", "sub_plat1"}) {
			t.Fatalf("subscriptions left = %v, %v; want the other tenant's and the platform's", subIDs(subs), err)
		}
		keys, err := s.ListKeys(ctx)
		if err != nil || !slices.Equal(keyIDs(keys), []string{platKey.ID}) {
			t.Fatalf("keys left = %v, %v; want the platform key", keyIDs(keys), err)
		}
		if _, err := s.DeleteTenant(ctx, "acme"); !herald.IsCode(err, herald.CodeNotFound) {
			t.Fatalf("DeleteTenant again = %v, want CodeNotFound", err)
		}
	})
}

func tenantIDs(ts []herald.Tenant) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}
