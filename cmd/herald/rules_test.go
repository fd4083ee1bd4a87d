package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/schema"
)

// The seed's deposit, with the event time a producer stamps (ts, Unix
// seconds) so the test controls the clock the windows follow.
const seedDepositProto = `syntax = "proto3";
package deposits.v1;
message Deposit {
  string wallet_id = 1;
  double amount = 2;
  int64 ts = 3;
}`

type deposit struct {
	wallet string
	amount float64
	at     int64 // seconds after t0
}

// flaggedModel computes from the input log what the flagger must emit: for
// each wallet, the deposits at which the sum over the two minutes ending
// there first exceeds 10,000 (again only after it fell back).
func flaggedModel(in []deposit) map[string][]int {
	out := map[string][]int{}
	above := map[string]bool{}
	for i, d := range in {
		var sum float64
		for _, e := range in[:i+1] {
			if e.wallet == d.wallet && e.at > d.at-120 && e.at <= d.at {
				sum += e.amount
			}
		}
		hit := sum > 10000
		if hit && !above[d.wallet] {
			out[d.wallet] = append(out[d.wallet], i+1) // seqs count from 1
		}
		above[d.wallet] = hit
	}
	return out
}

func TestFlaggerRuleAndViewsAcrossRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, _ := testServer(t, dir, nil)
	def, _ := json.Marshal(seedDepositProto)
	mustAdmin(t, m, "PUT", "/v1/topics/deposits/schema", "application/json",
		`{"type":"protobuf","message":"deposits.v1.Deposit","proto":`+string(def)+`}`, 201)
	rule := `{"input": "deposits", "key": "wallet_id", "time": "ts",
	 "window": {"kind": "sliding", "size": "2m"},
	 "aggregate": {"op": "sum", "field": "amount"},
	 "when": "value > 10000",
	 "emit": {"topic": "wallets.flagged", "type": "wallet.flagged"}}`
	got := mustAdmin(t, m, "PUT", "/v1/rules/flagger", "application/json", rule, 201)
	if !strings.Contains(got, `"state":"active"`) || !strings.Contains(got, `"name":"flagger"`) {
		t.Fatalf("PUT rule answered %s", got)
	}
	mustAdmin(t, m, "PUT", "/v1/rules/flagger", "application/json", rule, 200)
	mustAdmin(t, m, "PUT", "/v1/views/balance", "application/json",
		`{"input":"deposits","key":"wallet_id","aggregate":{"op":"sum","field":"amount"}}`, 201)
	mustAdmin(t, m, "PUT", "/v1/views/flagged", "application/json", `{"input":"wallets.flagged","key":"wallet_id"}`, 201)

	c, err := schema.Compile(herald.Schema{Kind: herald.SchemaProtobuf, Message: "deposits.v1.Deposit", Definition: []byte(seedDepositProto)})
	if err != nil {
		t.Fatal(err)
	}
	fields := c.Descriptor().Fields()
	t0 := time.Now().Add(-time.Hour).Unix()
	publish := func(m *Main, d deposit) {
		t.Helper()
		msg := dynamicpb.NewMessage(c.Descriptor())
		msg.Set(fields.ByName("wallet_id"), protoString(d.wallet))
		msg.Set(fields.ByName("amount"), protoDouble(d.amount))
		msg.Set(fields.ByName("ts"), protoInt64(t0+d.at))
		payload, _ := proto.Marshal(msg)
		req, _ := http.NewRequestWithContext(t.Context(), "POST", m.URL()+"/v1/topics/deposits/events", strings.NewReader(string(payload)))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		req.Header.Set("Content-Type", "application/protobuf")
		req.Header.Set("Herald-Event-Key", d.wallet)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("publish deposit = %d", resp.StatusCode)
		}
	}
	in := []deposit{
		{"w1", 6000, 0}, {"w2", 6000, 0}, {"w3", 9000, 0}, {"w4", 10001, 10},
		{"w1", 5000, 60},   // w1: 11,000 within 2 minutes: flagged
		{"w2", 5000, 150},  // w2: the first deposit left the window: not flagged
		{"w3", 2000, 119},  // w3: 11,000 one second inside the window: flagged
		{"w2", 5500, 200},  // w2: 10,500 within 2 minutes (150s and 200s): flagged
		{"w1", 1, 61},      // w1 is still above: no second flag
		{"w5", 10000, 300}, // exactly 10,000 is not over it
	}
	half := len(in) / 2
	for _, d := range in[:half] {
		publish(m, d)
	}
	// Restart in the middle: the state and the cursor come back from the store.
	if err := m.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	m, _ = testServer(t, dir, nil)
	for _, d := range in[half:] {
		publish(m, d)
	}

	// Balances, read at least at the last deposit's seq.
	want := map[string]float64{}
	for _, d := range in {
		want[d.wallet] += d.amount
	}
	for w, bal := range want {
		body := mustAdmin(t, m, "GET", fmt.Sprintf("/v1/views/balance/%s?min_seq=%d", w, len(in)), "", "", 200)
		var row struct {
			Value float64 `json:"value"`
			Seq   int64   `json:"seq"`
		}
		if err := json.Unmarshal([]byte(body), &row); err != nil || row.Value != bal {
			t.Fatalf("balance of %s = %s, want %v", w, body, bal)
		}
	}

	// What the flagger emitted is what the model says, once each.
	model := flaggedModel(in)
	wantFlags := 0
	for _, seqs := range model {
		wantFlags += len(seqs)
	}
	flags := waitFlagged(t, m, wantFlags)
	gotFlags := map[string][]int{}
	for _, f := range flags {
		gotFlags[f.Wallet] = append(gotFlags[f.Wallet], f.Event.Seq)
	}
	if fmt.Sprint(sortedMap(gotFlags)) != fmt.Sprint(sortedMap(model)) {
		t.Fatalf("flagged %v, the model says %v", sortedMap(gotFlags), sortedMap(model))
	}
	for _, w := range []string{"w1", "w2", "w3", "w4"} {
		mustAdmin(t, m, "GET", "/v1/views/flagged/"+w+"?min_seq="+fmt.Sprint(wantFlags), "", "", 200)
	}
	if status, body := adminDo(t, m, "GET", "/v1/views/flagged/w5", "", ""); status != 404 {
		t.Fatalf("w5 flagged: %d %s", status, body)
	}

	// An operator flags w5 and clears w1 by hand; a read asking for the
	// override's seq sees it.
	var wr struct {
		Seq int64 `json:"seq"`
	}
	body := mustAdmin(t, m, "PUT", "/v1/views/flagged/w5", "application/json", `true`, 202)
	if err := json.Unmarshal([]byte(body), &wr); err != nil || wr.Seq == 0 {
		t.Fatalf("PUT view key: %s", body)
	}
	if got := mustAdmin(t, m, "GET", fmt.Sprintf("/v1/views/flagged/w5?min_seq=%d", wr.Seq), "", "", 200); !strings.Contains(got, `"value":true`) {
		t.Fatalf("w5 after the manual flag: %s", got)
	}
	body = mustAdmin(t, m, "DELETE", "/v1/views/flagged/w1", "", "", 202)
	_ = json.Unmarshal([]byte(body), &wr)
	if status, got := adminDo(t, m, "GET", fmt.Sprintf("/v1/views/flagged/w1?min_seq=%d", wr.Seq), "", ""); status != 404 {
		t.Fatalf("w1 after the manual clear: %d %s", status, got)
	}
	list := mustAdmin(t, m, "GET", "/v1/views/flagged/keys?limit=2", "", "", 200)
	if !strings.Contains(list, `"next_cursor"`) || strings.Count(list, `"view":"flagged"`) != 2 {
		t.Fatalf("list: %s", list)
	}

	// The CLI: the seed's flag-wallet tool is herald views set/delete.
	cliEnv := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}
	if r := runCLI(t, nil, cliEnv, "views", "set", "flagged", "w9", "true"); r.code != 0 || !strings.Contains(r.stdout, `"seq"`) {
		t.Fatalf("views set: %+v", r)
	}
	var set struct {
		Seq int64 `json:"seq"`
	}
	if r := runCLI(t, nil, cliEnv, "views", "delete", "flagged", "w9"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &set) != nil {
		t.Fatalf("views delete KEY: %+v", r)
	}
	if r := runCLI(t, nil, cliEnv, "views", "get", "--min-seq", fmt.Sprint(set.Seq), "flagged", "w9"); r.code == 0 {
		t.Fatalf("views get of a cleared row: %+v", r)
	}
	if r := runCLI(t, nil, cliEnv, "views", "get", "balance", "w1"); r.code != 0 || !strings.Contains(r.stdout, `"value": 11001`) {
		t.Fatalf("views get: %+v", r)
	}
	if r := runCLI(t, strings.NewReader(rule), cliEnv, "rules", "put", "flagger2", "-"); r.code != 0 || !strings.Contains(r.stdout, `"name": "flagger2"`) {
		t.Fatalf("rules put: %+v", r)
	}
	if r := runCLI(t, nil, cliEnv, "rules", "list"); r.code != 0 || !strings.Contains(r.stdout, "flagger2") {
		t.Fatalf("rules list: %+v", r)
	}

	// Pause, resume, the list of rules, delete.
	mustAdmin(t, m, "POST", "/v1/rules/flagger/pause", "", "", 200)
	if got := mustAdmin(t, m, "GET", "/v1/rules/flagger", "", "", 200); !strings.Contains(got, `"state":"paused"`) {
		t.Fatalf("paused rule: %s", got)
	}
	mustAdmin(t, m, "POST", "/v1/rules/flagger/resume", "", "", 200)
	if got := mustAdmin(t, m, "GET", "/v1/rules", "", "", 200); !strings.Contains(got, `"name":"flagger"`) {
		t.Fatalf("rules: %s", got)
	}
	mustAdmin(t, m, "DELETE", "/v1/rules/flagger", "", "", 204)
	mustAdmin(t, m, "GET", "/v1/rules/flagger", "", "", 404)
}

type flagEvent struct {
	Wallet string `json:"wallet_id"`
	Value  float64
	Event  struct {
		Seq int `json:"seq"`
	} `json:"event"`
}

// waitFlagged reads wallets.flagged until it holds n events (or more).
func waitFlagged(t *testing.T, m *Main, n int) []flagEvent {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		body := mustAdmin(t, m, "GET", "/v1/topics/wallets.flagged/events?limit=100", "", "", 200)
		var page struct {
			Events []struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			} `json:"events"`
		}
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatal(err)
		}
		var out []flagEvent
		for _, e := range page.Events {
			if e.Type != "wallet.flagged" {
				continue
			}
			var f flagEvent
			if err := json.Unmarshal(e.Data, &f); err != nil {
				t.Fatal(err)
			}
			out = append(out, f)
		}
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func sortedMap(m map[string][]int) []string {
	var out []string
	for k, v := range m {
		sort.Ints(v)
		out = append(out, fmt.Sprintf("%s:%v", k, v))
	}
	sort.Strings(out)
	return out
}

// TestRulePartitionsLifecycle puts a rule in three partitions and checks
// what a user sees: one rule listed, its parts as subscriptions, the
// count fixed, pause, rebuild and delete acting on every part, and the
// position reaching the input's head once every part has applied it.
func TestRulePartitionsLifecycle(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	mustAdmin(t, m, "PUT", "/v1/topics/pay", "application/json", `{}`, 201)
	rule := func(n int) string {
		return fmt.Sprintf(`{"input":"pay","key":"who","aggregate":{"op":"count"},"when":"value >= 2",
			"emit":{"topic":"pay.twice"},"partitions":%d}`, n)
	}
	mustAdmin(t, m, "PUT", "/v1/rules/twice", "application/json", rule(3), 201)
	mustAdmin(t, m, "PUT", "/v1/rules/twice", "application/json", rule(3), 200)
	if got := mustAdmin(t, m, "PUT", "/v1/rules/twice", "application/json", rule(2), 400); !strings.Contains(got, `"field":"partitions"`) {
		t.Fatalf("changing the partitions answered %s", got)
	}
	list := mustAdmin(t, m, "GET", "/v1/rules", "", "", 200)
	if strings.Count(list, `"name":`) != 1 || !strings.Contains(list, `"partitions":3`) {
		t.Fatalf("rules listed: %s", list)
	}
	for i := 1; i < 3; i++ {
		mustAdmin(t, m, "GET", fmt.Sprintf("/v1/subscriptions/rule_twice~%d", i), "", "", 200)
	}
	var last int64
	for i := range 30 {
		got := mustAdmin(t, m, "POST", "/v1/topics/pay/events", "application/json", fmt.Sprintf(`{"who":"p%d"}`, i%10), 201)
		var r struct{ Seq int64 }
		_ = json.Unmarshal([]byte(got), &r)
		last = r.Seq
	}
	waitPosition := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			var p struct{ Position int64 }
			_ = json.Unmarshal([]byte(mustAdmin(t, m, "GET", "/v1/rules/twice", "", "", 200)), &p)
			if p.Position >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("position %d, want %d", p.Position, want)
			}
			select {
			case <-t.Context().Done():
				t.Fatal(t.Context().Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	waitPosition(last)
	twice := mustAdmin(t, m, "GET", "/v1/topics/pay.twice/events", "", "", 200)
	if n := strings.Count(twice, `"seq":`); n < 10 {
		t.Fatalf("%d events emitted for 10 keys seen three times each: %s", n, twice)
	}
	mustAdmin(t, m, "POST", "/v1/rules/twice/pause", "", "", 200)
	if got := mustAdmin(t, m, "GET", "/v1/subscriptions/rule_twice~2", "", "", 200); !strings.Contains(got, `"state":"paused"`) {
		t.Fatalf("a part of a paused rule: %s", got)
	}
	mustAdmin(t, m, "POST", "/v1/rules/twice/resume", "", "", 200)
	mustAdmin(t, m, "POST", "/v1/rules/twice/rebuild", "", "", 202)
	waitPosition(last)
	mustAdmin(t, m, "DELETE", "/v1/rules/twice", "", "", 204)
	for i := 1; i < 3; i++ {
		mustAdmin(t, m, "GET", fmt.Sprintf("/v1/subscriptions/rule_twice~%d", i), "", "", 404)
	}
}
