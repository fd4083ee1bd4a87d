package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/examples/deposits"
)

// TestDepositsExampleEndToEnd runs examples/deposits against the real
// herald binary: deposits below and above the threshold inside and across
// two-minute windows (on the service's own clock), a kill -9 of Herald in
// the middle, the answers of /check, and a manual flag and unflag.
func TestDepositsExampleEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	t.Parallel()
	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--admin-key", testAdminKey}
	p := startProc(t, args...)
	hc := client.New(p.url, client.WithKey(testAdminKey))
	ctx := t.Context()
	for range 2 { // the service applies its config at every start
		if err := deposits.Setup(ctx, hc); err != nil {
			t.Fatal(err)
		}
	}

	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	var offset atomic.Int64 // seconds after t0
	svc := &deposits.Service{Herald: hc, Now: func() time.Time { return t0.Add(time.Duration(offset.Load()) * time.Second) }}
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()

	var lastSeq int64
	deposit := func(at int64, wallet, amount string) {
		t.Helper()
		offset.Store(at)
		resp, err := http.Post(srv.URL+"/deposit", "application/json",
			strings.NewReader(fmt.Sprintf(`{"wallet_id": %q, "amount": %s}`, wallet, amount)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var out deposits.DepositResponse
		if resp.StatusCode != 201 || json.Unmarshal(body, &out) != nil || out.Seq == 0 {
			t.Fatalf("deposit %s %s = %d %s", wallet, amount, resp.StatusCode, body)
		}
		lastSeq = out.Seq
	}
	// Before the kill.
	deposit(0, "0xA", "6000")
	deposit(0, "0xB", "6000")
	deposit(0, "0xC", "9000")
	deposit(10, "0xE", `"2000"`) // the seed's clients send amounts as strings

	// Herald dies with SIGKILL and comes back; the service keeps no state.
	p.kill()
	p = startProc(t, args...)
	hc = client.New(p.url, client.WithKey(testAdminKey))
	svc.Herald = hc

	deposit(60, "0xA", "5000")   // 11,000 within two minutes: flagged
	deposit(119, "0xC", "2000")  // 11,000, the first one second inside: flagged
	deposit(150, "0xB", "5000")  // the first left the window: 5,000
	deposit(200, "0xB", "5500")  // 10,500 within two minutes: flagged
	deposit(300, "0xD", "10000") // exactly 10,000 is not over it

	// Bad input is a problem naming the field.
	resp, err := http.Post(srv.URL+"/deposit", "application/json", strings.NewReader(`{"wallet_id": "0xA", "amount": "lots"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"field":"amount"`) {
		t.Fatalf("bad amount: %d %s", resp.StatusCode, body)
	}

	// Once the balance view, the flagger and the flagged view have caught
	// up, /check answers from the two views. (Its min_seq waits only
	// briefly on the server, and a CI machine under load can lag longer.)
	settle := func() {
		t.Helper()
		waitProcessor(t, hc, "view", deposits.ViewBalance, lastSeq)
		waitProcessor(t, hc, "rule", deposits.RuleFlagger, lastSeq)
		if flags := readTopic(t, hc, deposits.FlagTopic); len(flags) > 0 {
			waitProcessor(t, hc, "view", deposits.ViewFlagged, flags[len(flags)-1].Seq)
		}
	}
	settle()
	check := func(wallet string, balance float64, above bool) {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("%s/check/%s?min_seq=%d", srv.URL, wallet, lastSeq))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got deposits.Check
		if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil {
			t.Fatalf("check %s = %d %s", wallet, resp.StatusCode, body)
		}
		want := deposits.Check{WalletID: wallet, Balance: balance, AboveThreshold: above}
		if got != want {
			t.Fatalf("check %s = %+v, want %+v", wallet, got, want)
		}
	}
	check("0xA", 11000, true)
	check("0xB", 16500, true)
	check("0xC", 11000, true)
	check("0xD", 10000, false)
	check("0xE", 2000, false)
	check("0xNone", 0, false)
	if n := len(readTopic(t, hc, deposits.FlagTopic)); n != 3 {
		t.Fatalf("%d flags emitted, want 3 (A, B, C once each)", n)
	}

	// An operator flags D and clears A (the seed's flag-wallet tool).
	seq, err := deposits.Flag(ctx, hc, "0xD")
	if err != nil {
		t.Fatal(err)
	}
	waitProcessor(t, hc, "view", deposits.ViewFlagged, seq)
	check("0xD", 10000, true)
	if seq, err = deposits.Unflag(ctx, hc, "0xA"); err != nil {
		t.Fatal(err)
	}
	waitProcessor(t, hc, "view", deposits.ViewFlagged, seq)
	check("0xA", 11000, false)

	// The schema was applied once, though Setup ran twice.
	raw, err := hc.ListSchemaVersions(ctx, deposits.Topic)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), `"version":`); n != 1 {
		t.Fatalf("schema versions: %s", raw)
	}
}
