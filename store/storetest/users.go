package storetest

import (
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// RunUsers runs the conformance suite of herald.UserStore: users'
// server-side subscriptions and presence. open is as for Run.
func RunUsers(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("UserSubscriptions", func(t *testing.T) {
		t.Parallel()
		s := open(t).(herald.UserStore)
		ctx := t.Context()
		b := base()
		us, created, err := s.PutUserSubscription(ctx, "u42", "accounts.u42.balance", b)
		if err != nil || !created || us.Topic != "accounts.u42.balance" || !us.CreatedAt.Equal(b) {
			t.Fatalf("Put = %+v, %v, %v", us, created, err)
		}
		us, created, err = s.PutUserSubscription(ctx, "u42", "accounts.u42.balance", b.Add(time.Hour))
		if err != nil || created || !us.CreatedAt.Equal(b) {
			t.Fatalf("Put again = %+v, %v, %v; want the first kept", us, created, err)
		}
		if _, _, err := s.PutUserSubscription(ctx, "u42", "accounts.u42.tx", b); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.PutUserSubscription(ctx, "u7", "accounts.u7.tx", b); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListUserSubscriptions(ctx, "u42")
		if err != nil || len(list) != 2 || list[0].Topic != "accounts.u42.balance" || list[1].Topic != "accounts.u42.tx" || list[1].User != "u42" {
			t.Fatalf("List = %+v, %v", list, err)
		}
		if err := s.DeleteUserSubscription(ctx, "u42", "accounts.u42.tx"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteUserSubscription(ctx, "u42", "accounts.u42.tx"); !herald.IsCode(err, herald.CodeNotFound) {
			t.Fatalf("second Delete = %v; want CodeNotFound", err)
		}
		if list, _ := s.ListUserSubscriptions(ctx, "u42"); len(list) != 1 {
			t.Fatalf("after delete: %+v", list)
		}
		if list, err := s.ListUserSubscriptions(ctx, "nobody"); err != nil || len(list) != 0 {
			t.Fatalf("List of an unknown user = %+v, %v", list, err)
		}
	})
	t.Run("Presence", func(t *testing.T) {
		t.Parallel()
		s := open(t).(herald.UserStore)
		ctx := t.Context()
		b := base()
		if err := s.SetPresence(ctx, "n1", map[string]int{"u1": 2, "u2": 1}, b); err != nil {
			t.Fatal(err)
		}
		if err := s.SetPresence(ctx, "n2", map[string]int{"u1": 1}, b.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if all, err := s.CountPresence(ctx, b.Add(-time.Second)); err != nil || len(all) != 2 || all["u1"] != 3 || all["u2"] != 1 {
			t.Fatalf("CountPresence = %v, %v; want u1 3 (over two nodes), u2 1", all, err)
		}
		if all, err := s.CountPresence(ctx, b); err != nil || len(all) != 1 || all["u1"] != 1 {
			t.Fatalf("CountPresence after a time = %v, %v; want only n2's u1", all, err)
		}
		got, err := s.ListPresence(ctx, "u1", b.Add(-time.Second))
		if err != nil || len(got) != 2 || got[0].Node != "n1" || got[0].Conns != 2 || got[1].Node != "n2" || got[1].Conns != 1 {
			t.Fatalf("ListPresence = %+v, %v", got, err)
		}
		if got, _ := s.ListPresence(ctx, "u1", b); len(got) != 1 || got[0].Node != "n2" {
			t.Fatalf("ListPresence after a time = %+v; want only n2's fresh row", got)
		}
		// n1's next report replaces its rows: u2 left.
		if err := s.SetPresence(ctx, "n1", map[string]int{"u1": 1}, b.Add(2*time.Second)); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.ListPresence(ctx, "u2", time.Time{}); len(got) != 0 {
			t.Fatalf("u2 after leaving = %+v", got)
		}
	})
}
