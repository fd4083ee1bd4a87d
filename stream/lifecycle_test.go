package stream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/stream"
)

// Stop tells every client to reconnect: a WebSocket closes with 1012 and
// the reason, an SSE stream ends with a herald.disconnect event. After a
// restart on the same store, clients resume with no gap and no duplicate.
func TestRestartResumesWithoutGapOrDuplicate(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.createTopic("orders.eu", 0)
	n.publishN("orders.eu", 1, 3)
	ws := n.dialWS("reader", "")
	ws.subscribe(map[string]any{"id": "s", "topic": "orders.eu", "since": 0})
	sse := n.openSSE("orders.eu", "reader", "since=0", nil)
	wsGot := seqsOf(ws.events(3))
	sseGot := sse.events(3)
	n.publishN("orders.eu", 4, 2)
	wsGot = append(wsGot, seqsOf(ws.events(2))...)
	sseGot = append(sseGot, sse.events(2)...)

	n.stop()
	code, reason := ws.closeStatus()
	if code != websocket.StatusServiceRestart || reason != stream.ReasonShutdown {
		t.Errorf("WebSocket closed with %v %q, want 1012 %q", code, reason, stream.ReasonShutdown)
	}
	if ev := sse.next(); ev == nil || ev.Event != "herald.disconnect" || !strings.Contains(ev.Data, `"code":"shutdown"`) {
		t.Errorf("SSE last event = %+v, want herald.disconnect shutdown", ev)
	}
	if ev := sse.next(); ev != nil {
		t.Errorf("SSE stream goes on after the disconnect event: %+v", ev)
	}

	n2 := n.restart(nodeOptions{})
	n2.publishN("orders.eu", 6, 3)
	ws2 := n2.dialWS("reader", "")
	ws2.subscribe(map[string]any{"id": "s", "topic": "orders.eu", "since": wsGot[len(wsGot)-1]})
	sse2 := n2.openSSE("orders.eu", "reader", "since=0", http.Header{"Last-Event-ID": {sseGot[len(sseGot)-1].ID}})
	n2.publishN("orders.eu", 9, 2)
	wsGot = append(wsGot, seqsOf(ws2.events(5))...)
	sseGot = append(sseGot, sse2.events(5)...)
	if fmt.Sprint(wsGot) != fmt.Sprint(span(1, 10)) {
		t.Errorf("WebSocket across the restart: %v", wsGot)
	}
	if got := ids(sseGot); got != "1,2,3,4,5,6,7,8,9,10" {
		t.Errorf("SSE across the restart: %s", got)
	}
}

// A resume whose position has passed retention is told what it missed.
func TestRetentionGapIsReported(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.createTopic("orders.eu", time.Minute)
	old := time.Now().Add(-2 * time.Hour).UTC()
	for i := range 5 {
		n.publish(pub{topic: "orders.eu", payload: fmt.Sprintf(`{"old":%d}`, i), at: old})
	}
	if _, err := n.store.Prune(t.Context(), time.Now(), 1000); err != nil {
		t.Fatal(err)
	}
	n.publishN("orders.eu", 6, 2)

	ws := n.dialWS("reader", "")
	ack := ws.subscribe(map[string]any{"id": "s", "topic": "orders.eu", "since": 2})
	if ack.Recovered == nil || *ack.Recovered || ack.FirstSeq != 6 {
		t.Errorf("ack = recovered %v first_seq %d; want false, 6", ack.Recovered, ack.FirstSeq)
	}
	g := ws.next()
	if g.Op != "gap" || g.Sub != "s" || g.Topic != "orders.eu" || g.MissedFrom != 3 || g.MissedTo != 5 || g.FirstSeq != 6 {
		t.Errorf("gap frame = %+v", g)
	}
	if got := seqsOf(ws.events(2)); fmt.Sprint(got) != "[6 7]" {
		t.Errorf("events after the gap: %v", got)
	}
	// Within retention: recovered.
	ws2 := n.dialWS("reader", "")
	if ack := ws2.subscribe(map[string]any{"id": "s", "topic": "orders.eu", "since": 6}); !*ack.Recovered {
		t.Errorf("since 6: %+v", ack)
	}

	sse := n.openSSE("orders.eu", "reader", "since=0", nil)
	ev := sse.next()
	if ev.Event != "herald.gap" || ev.Data != `{"topic":"orders.eu","missed_from":1,"missed_to":5,"first_seq":6}` {
		t.Errorf("SSE gap event = %+v", ev)
	}
	if got := ids(sse.events(2)); got != "6,7" {
		t.Errorf("SSE after the gap: %s", got)
	}
}

// A client that does not read is cut off once its queue is full, with
// the documented reason, while a reading client gets every event and
// publishing never waits for either.
func TestSlowConsumerIsCutOffAndOthersAreNot(t *testing.T) {
	// No pings: a client that does not read answers no ping either, and on a
	// loaded machine the pong timeout could close it before its queue fills.
	n := startNode(t, nodeOptions{cfg: stream.Config{QueueSize: 8, WriteTimeout: time.Minute, PingInterval: time.Hour}})
	n.createTopic("orders.eu", 0)
	slow := smallWindowClient(t)
	slowWS, _, err := n.dialWSWith(slow, "reader", "")
	if err != nil {
		t.Fatal(err)
	}
	slowWS.subscribe(map[string]any{"id": "s", "topic": "orders.eu"})
	slowSSE, _ := n.getSSEWith(slow, "orders.eu", "admin", "", nil)
	if slowSSE == nil {
		t.Fatal("SSE refused")
	}
	fast := n.dialWS("admin", "")
	fast.subscribe(map[string]any{"id": "f", "topic": "orders.eu"})

	// Enough data to fill the socket buffers of the clients that do not
	// read, published one commit at a time. The reading client keeps up
	// (it gets each event before the next is published); the others fall
	// behind, and publishing never waits for them.
	payload := `{"pad":"` + strings.Repeat("x", 60<<10) + `"}`
	// It stops once both are cut off: the server gives a cut-off client a
	// few seconds to read its backlog and the close frame behind it
	// before it drops the connection, so the slow ones read right after.
	cut := func(transport string) float64 {
		return n.metric("herald_stream_slow_consumer_disconnects_total", "transport", transport)
	}
	const total = 200
	for i := range int64(total) {
		n.publish(pub{topic: "orders.eu", payload: payload})
		if f := fast.next(); f.Op != "event" || f.Seq != i+1 {
			t.Fatalf("the reading client got %+v, want event %d", f, i+1)
		}
		if cut("websocket") == 1 && cut("sse") == 1 {
			break
		}
	}
	// The cut-offs happen as the queues fill, during the loop above; the
	// wait bounds a hang, and says what it saw if it ends.
	for deadline := time.Now().Add(2 * time.Minute); cut("websocket") != 1 || cut("sse") != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 2 minutes, slow-consumer disconnects: websocket %v, sse %v; want 1 each (connections: websocket %v, sse %v)",
				cut("websocket"), cut("sse"), n.metric("herald_stream_connections", "transport", "websocket"),
				n.metric("herald_stream_connections", "transport", "sse"))
		}
	}
	// Now the slow ones read: what was sent, then the reason.
	code, reason := slowWS.closeStatus()
	if code != stream.CloseSlowConsumer || reason != stream.ReasonSlowConsumer {
		t.Errorf("slow WebSocket closed with %v %q", code, reason)
	}
	var last *sseEvent
	for ev := slowSSE.next(); ev != nil; ev = slowSSE.next() {
		last = ev
	}
	if last == nil || last.Event != "herald.disconnect" || !strings.Contains(last.Data, `"code":"slow-consumer"`) {
		t.Errorf("slow SSE stream ended with %+v", last)
	}
	waitFor(t, "the slow connections to be gone", func() bool {
		return n.metric("herald_stream_connections", "transport", "websocket") == 1 &&
			n.metric("herald_stream_connections", "transport", "sse") == 0
	})
}

// Events committed by another node reach clients through Notify, in
// order, without duplicates of those this node committed.
func TestNotifyDeliversEventsCommittedElsewhere(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.createTopic("orders.eu", 0)
	ws := n.dialWS("reader", "")
	ws.subscribe(map[string]any{"id": "s", "topic": "orders.eu"})
	n.publishN("orders.eu", 1, 2)
	if got := seqsOf(ws.events(2)); fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("local events: %v", got)
	}

	// A second node: its own store handle on the same file, its own
	// committer, no hub.
	other, err := sqlite.Open(t.Context(), n.path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	oc := engine.NewCommitter(other, engine.CommitterConfig{}, nil, nil)
	if err := oc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer oc.Stop(context.Background())
	publishElsewhere := func(count int) (head int64) {
		for i := range count {
			res, err := oc.Append(t.Context(), []*herald.Event{{ID: herald.NewID(time.Now()), Topic: "orders.eu",
				ContentType: "application/json", Payload: []byte(`{"other":` + strconv.Itoa(i) + `}`), Time: time.Now().UTC()}})
			if err != nil || res[0].Err != nil {
				t.Fatal(err, res)
			}
			head = res[0].Seq
		}
		return head
	}

	// Notified: the other node's events come, once.
	head := publishElsewhere(2)
	n.hub.Notify("orders.eu", head)
	n.hub.Notify("orders.eu", head)
	if got := seqsOf(ws.events(2)); fmt.Sprint(got) != "[3 4]" {
		t.Errorf("after Notify: %v, want [3 4]", got)
	}
	// Not yet notified, then a local commit: the hub reads the missing
	// ones first, so the order holds; the late notification adds nothing.
	head = publishElsewhere(2)
	n.publishN("orders.eu", 7, 1)
	n.hub.Notify("orders.eu", head)
	if got := seqsOf(ws.events(3)); fmt.Sprint(got) != "[5 6 7]" {
		t.Errorf("after a local commit past unseen ones: %v, want [5 6 7]", got)
	}
	n.publishN("orders.eu", 8, 1)
	if got := seqsOf(ws.events(1)); got[0] != 8 {
		t.Errorf("next: %v, want [8]", got)
	}
}

// Stop returns once every stream handler has, before and after Start.
func TestStopLifecycle(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "h.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := stream.NewHub(stream.Config{}, stream.Deps{Store: st})
	if err := h.Stop(t.Context()); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	if err := h.Start(t.Context()); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
	n := startNode(t, nodeOptions{})
	n.createTopic("orders.eu", 0)
	var wg sync.WaitGroup
	for range 5 {
		ws := n.dialWS("reader", "")
		ws.subscribe(map[string]any{"topic": "orders.eu"})
		wg.Go(func() { ws.closeStatus() })
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := n.hub.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := n.hub.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	wg.Wait()
	if _, resp, err := n.tryDialWS("reader", ""); err == nil || resp.StatusCode != 503 {
		t.Errorf("dial after Stop: %v", err)
	}
}

// A topic deleted and created again starts over at seq 1: subscriptions
// to it end with not-found, patterns stream the new topic from its start.
func TestDeletedTopicStartsOver(t *testing.T) {
	for _, explicit := range []bool{false, true} {
		t.Run(fmt.Sprintf("Forget called %v", explicit), func(t *testing.T) {
			n := startNode(t, nodeOptions{})
			n.createTopic("orders.eu", 0)
			ws := n.dialWS("reader", "")
			ws.subscribe(map[string]any{"id": "one", "topic": "orders.eu"})
			ws.subscribe(map[string]any{"id": "all", "topic": "orders.*"})
			sse := n.openSSE("orders.eu", "reader", "", nil)
			n.publishN("orders.eu", 1, 3)
			ws.events(6)
			sse.events(3)

			if err := n.store.DeleteTopic(t.Context(), "orders.eu"); err != nil {
				t.Fatal(err)
			}
			if explicit {
				n.hub.Forget("orders.eu")
			}
			n.createTopic("orders.eu", 0)
			n.publishN("orders.eu", 1, 2)
			var gotErr bool
			var seqsAll []int64
			for len(seqsAll) < 2 || !gotErr {
				f := ws.next()
				switch {
				case f.Op == "error" && f.ID == "one" && f.Error.Status == 404:
					gotErr = true
				case f.Op == "event" && f.Sub == "all":
					seqsAll = append(seqsAll, f.Seq)
				default:
					t.Fatalf("unexpected frame %+v", f)
				}
			}
			if fmt.Sprint(seqsAll) != "[1 2]" {
				t.Errorf("pattern after the topic started over: %v", seqsAll)
			}
			if ev := sse.next(); ev == nil || ev.Event != "herald.disconnect" || !strings.Contains(ev.Data, "not-found") {
				t.Errorf("SSE on the deleted topic: %+v", ev)
			}
		})
	}
}

// A deleted topic ends the streams of it instead of leaving them silent:
// a WebSocket subscription gets an error (404, the connection and its
// other subscriptions go on), an SSE stream a herald.disconnect event of
// code not-found, after which its reconnect gets 404. Patterns just stop
// receiving the topic.
func TestDeletedTopicEndsItsStreams(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.createTopic("orders.eu", 0)
	n.createTopic("orders.us", 0)
	ws := n.dialWS("reader", "")
	ws.subscribe(map[string]any{"id": "one", "topic": "orders.eu"})
	ws.subscribe(map[string]any{"id": "all", "topic": "orders.*"})
	sse := n.openSSE("orders.eu", "reader", "", nil)
	ssePattern := n.openSSE("orders.*", "reader", "", nil)
	n.publishN("orders.eu", 1, 1)
	ws.events(2)
	sse.events(1)
	ssePattern.events(1)

	if err := n.store.DeleteTopic(t.Context(), "orders.eu"); err != nil {
		t.Fatal(err)
	}
	n.hub.Forget("orders.eu")

	if f := ws.next(); f.Op != "error" || f.ID != "one" || f.Error == nil || f.Error.Status != 404 ||
		f.Error.Type != "https://herald.dev/problems/not-found" {
		t.Errorf("WebSocket subscription of the deleted topic: %+v, want an error frame with a not-found problem", f)
	}
	ev := sse.next()
	var d struct{ Code, Reason string }
	if ev == nil || ev.Event != "herald.disconnect" || json.Unmarshal([]byte(ev.Data), &d) != nil || d.Code != "not-found" {
		t.Errorf("SSE of the deleted topic: %+v, want herald.disconnect not-found", ev)
	}
	if ev := sse.next(); ev != nil {
		t.Errorf("SSE goes on after its topic was deleted: %+v", ev)
	}
	// What EventSource does next: reconnect, get 404, give up.
	if c, resp := n.getSSE("orders.eu", "reader", "", http.Header{"Last-Event-ID": {sse.lastID}}); c != nil || resp.StatusCode != 404 {
		t.Errorf("reconnect to the deleted topic: status %d, want 404", resp.StatusCode)
	} else {
		resp.Body.Close()
	}
	waitFor(t, "the ended subscriptions to be unregistered", func() bool {
		return n.metric("herald_stream_subscriptions") == 2 && n.metric("herald_stream_connections", "transport", "sse") == 1
	})

	// The pattern subscriptions go on with the other topics.
	n.publishN("orders.us", 1, 1)
	if f := ws.next(); f.Op != "event" || f.Sub != "all" || f.Topic != "orders.us" {
		t.Errorf("WebSocket pattern after the deletion: %+v", f)
	}
	if ev := ssePattern.events(1)[0]; ev.Data != `{"n":1}` || !strings.Contains(ev.ID, "orders.us=1") || strings.Contains(ev.ID, "orders.eu") {
		t.Errorf("SSE pattern after the deletion: %+v", ev)
	}
}
