package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

func TestStreamsConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		name           string
		in             StreamsConfig
		events         int
		duration       time.Duration
		clients, batch int
	}{
		{"zero", StreamsConfig{}, 300, 30 * time.Second, 100, 1},
		{"duration gives events", StreamsConfig{Rate: 200, Duration: 5 * time.Second}, 1000, 5 * time.Second, 100, 1},
		{"events give duration", StreamsConfig{Rate: 100, Events: 500, Clients: 7, Batch: 10}, 500, 6 * time.Second, 7, 10},
		{"both given", StreamsConfig{Rate: 10, Events: 5, Duration: time.Minute}, 5, time.Minute, 100, 1},
		{"at least one event", StreamsConfig{Rate: 0.01, Duration: time.Second}, 1, time.Second, 100, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.in.withDefaults()
			if c.Events != tc.events || c.Duration != tc.duration || c.Clients != tc.clients || c.Batch != tc.batch {
				t.Errorf("events %d, duration %s, clients %d, batch %d; want %d, %s, %d, %d",
					c.Events, c.Duration, c.Clients, c.Batch, tc.events, tc.duration, tc.clients, tc.batch)
			}
			if c.Proto != ProtoWS || c.Idle != 5*time.Second || c.Dialers != 64 || c.Timeout != 30*time.Second || c.Size != 200 || c.Workers != 16 {
				t.Errorf("defaults: %+v", c)
			}
		})
	}
	if c := (StreamsConfig{Idle: -1}).withDefaults(); c.Idle >= 0 {
		t.Errorf("a negative Idle (no hold) became %s", c.Idle)
	}
}

func TestStreamsConfigErrorsNameTheFlag(t *testing.T) {
	ctx := t.Context()
	ok := StreamsConfig{Server: "http://127.0.0.1:9"}.withDefaults()
	if err := ok.validate(ctx); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		field string
		set   func(*StreamsConfig)
	}{
		{"clients", func(c *StreamsConfig) { c.Clients = MaxStreamClients + 1 }},
		{"proto", func(c *StreamsConfig) { c.Proto = "tcp" }},
		{"rate", func(c *StreamsConfig) { c.Rate = -1 }},
		{"events", func(c *StreamsConfig) { c.Events = -5 }},
		{"events", func(c *StreamsConfig) { c.Clients, c.Events = 100_000, 20_000 }}, // 2e9 deliveries to track
		{"batch", func(c *StreamsConfig) { c.Batch = MaxBatch + 1 }},
		{"workers", func(c *StreamsConfig) { c.Workers = -1 }},
		{"size", func(c *StreamsConfig) { c.Size = 10 }},
		{"dialers", func(c *StreamsConfig) { c.Dialers = -1 }},
		{"timeout", func(c *StreamsConfig) { c.Timeout = -time.Second }},
		{"pid", func(c *StreamsConfig) { c.PID = -2 }},
		{"server", func(c *StreamsConfig) { c.Server = "http://192.0.2.1:8480" }},
	} {
		c := ok
		tc.set(&c)
		err := c.validate(ctx)
		var fields []string
		for _, e := range streamsJoined(err) {
			he, isHerald := errors.AsType[*herald.Error](e)
			if !isHerald || he.Code != herald.CodeInvalid || !strings.HasPrefix(he.Message, "--"+he.Field+" ") {
				t.Errorf("%s: error %v is not a CodeInvalid error naming its flag", tc.field, e)
				continue
			}
			fields = append(fields, he.Field)
		}
		if !slices.Equal(fields, []string{tc.field}) {
			t.Errorf("%s: errors for %v (%v)", tc.field, fields, err)
		}
	}
	remote := ok
	remote.Server, remote.AllowRemote = "http://192.0.2.1:8480", true
	if err := remote.validate(ctx); err != nil {
		t.Errorf("--allow-remote: %v", err)
	}
}

func streamsJoined(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// newStreamsTestClient returns a client of a fleet with room for events
// event numbers, for tests that feed it bytes.
func newStreamsTestClient(events int, r io.Reader) *streamsClient {
	cfg := StreamsConfig{Clients: 1, Events: events}.withDefaults()
	f := newStreamsFleet(cfg, &url.URL{Scheme: "http", Host: "127.0.0.1:9"}, "bench-streams.t", time.Now())
	c := &streamsClient{f: f, ws: true, shard: f.shards[0], got: newBitset(int64(events)), sseID: -1}
	c.br = bufio.NewReaderSize(r, streamsReadBuffer)
	f.clients = append(f.clients, c)
	return c
}

func TestStreamsWebSocketMessages(t *testing.T) {
	c := newStreamsTestClient(10, nil)
	event := func(seq, n int64) []byte {
		return fmt.Appendf(nil, `{"op":"event","sub":"b","topic":"bench-streams.t","seq":%d,"id":"0190a1","type":"x","key":"k","time":"2026-11-23T10:02:03.120Z","content_type":"application/json","data":%s}`,
			seq, appendPayload(nil, n, 1000, 200))
	}
	for _, m := range [][]byte{event(4, 3), event(5, 4), event(6, 3)} {
		if acked, err := c.wsMessage(m); acked || err != nil {
			t.Fatalf("event: acked %v, err %v", acked, err)
		}
	}
	if acked, err := c.wsMessage([]byte(`{"op":"subscribed","id":"b","topic":"bench-streams.t","recovered":true,"after_seq":0,"time":"2026-11-23T10:02:03.004Z"}`)); !acked || err != nil {
		t.Errorf("subscribed: acked %v, err %v", acked, err)
	}
	_, err := c.wsMessage([]byte(`{"op":"error","id":"b","error":{"type":"https://herald.dev/problems/not-found","title":"Not found","status":404,"detail":"topic \"x\" not found"}}`))
	if p, ok := errors.AsType[*client.Problem](err); !ok || p.Status != 404 || !strings.Contains(err.Error(), `topic "x" not found`) {
		t.Errorf("error frame: %v", err)
	}
	for _, m := range []string{
		`{"op":"gap","sub":"b","topic":"bench-streams.t","missed_from":1,"missed_to":2,"first_seq":3}`,
		`{"op":"event","sub":"b","topic":"t","seq":7,"data_base64":"AAEC"}`,  // not a benchmark payload
		`{"op":"event","sub":"b","topic":"t","seq":8,"data":{"n":99,"t":1}}`, // beyond the events published
		`{"op":"pong"}`,
	} {
		if _, err := c.wsMessage([]byte(m)); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
	st := c.f.stats()
	if st.unique != 2 || st.duplicates != 1 || st.malformed != 2 || st.gaps != 1 || st.e2e.Count != 2 {
		t.Errorf("stats %+v: want 2 unique, 1 duplicate, 2 malformed, 1 gap", st)
	}
	if !c.got.has(3) || !c.got.has(4) || c.got.count() != 2 {
		t.Errorf("events received: %d", c.got.count())
	}
	if c.lastSeq != 8 {
		t.Errorf("last seq %d, want 8", c.lastSeq)
	}
}

// wsServerFrame is a frame as a server writes it: final unless !fin,
// unmasked.
func wsServerFrame(op byte, fin bool, p []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(p); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, p...)
}

// wsReadClientFrame reads one frame a client wrote and unmasks it.
func wsReadClientFrame(r io.Reader) (op byte, p []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 == 0 || h[0]&0x80 == 0 {
		return 0, nil, errors.New("client frame not masked or not final")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var x [2]byte
		_, err = io.ReadFull(r, x[:])
		n = uint64(binary.BigEndian.Uint16(x[:]))
	case 127:
		var x [8]byte
		_, err = io.ReadFull(r, x[:])
		n = binary.BigEndian.Uint64(x[:])
	}
	if err != nil {
		return 0, nil, err
	}
	var key [4]byte
	if _, err := io.ReadFull(r, key[:]); err != nil {
		return 0, nil, err
	}
	p = make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	for i := range p {
		p[i] ^= key[i&3]
	}
	return h[0] & 0x0f, p, nil
}

func TestStreamsClientFramesAreMasked(t *testing.T) {
	for _, n := range []int{0, 5, 125, 126, 0xffff, 0x10000} {
		p := bytes.Repeat([]byte("abcdefg"), n/7+1)[:n]
		b := appendClientFrame(nil, wsText, p)
		op, got, err := wsReadClientFrame(bytes.NewReader(b))
		if err != nil || op != wsText || !bytes.Equal(got, p) {
			t.Errorf("%d bytes: op %d, err %v, payload round trip %v", n, op, err, bytes.Equal(got, p))
		}
		if n > 0 && bytes.Contains(b, p) {
			t.Errorf("%d bytes: payload sent unmasked", n)
		}
	}
}

func TestStreamsReadsWebSocketFrames(t *testing.T) {
	cliEnd, srvEnd := net.Pipe()
	defer cliEnd.Close()
	defer srvEnd.Close()
	big := appendPayload(nil, 1, 5, 6000) // larger than the read buffer
	msg := appendPayload(nil, 2, 5, 200)
	var stream []byte
	stream = append(stream, wsServerFrame(wsText, true, []byte(`{"op":"pong"}`))...)
	stream = append(stream, wsServerFrame(wsText, true, big)...)
	stream = append(stream, wsServerFrame(wsText, false, msg[:50])...)
	stream = append(stream, wsServerFrame(wsPing, true, []byte("p1"))...)
	stream = append(stream, wsServerFrame(wsContinuation, false, msg[50:120])...)
	stream = append(stream, wsServerFrame(wsContinuation, true, msg[120:])...)
	stream = append(stream, wsServerFrame(wsClose, true, append([]byte{0x03, 0xf5}, "slow consumer: reconnect"...))...) // 1013
	go func() { _, _ = srvEnd.Write(stream) }()
	replies := make(chan []byte, 4)
	go func() {
		for {
			op, p, err := wsReadClientFrame(srvEnd)
			if err != nil {
				close(replies)
				return
			}
			replies <- append([]byte{op}, p...)
		}
	}()

	c := newStreamsTestClient(10, cliEnd)
	var got [][]byte
	for {
		m, err := c.nextMessage(cliEnd)
		if err != nil {
			if !errors.Is(err, errStreamsServerClosed) {
				t.Fatalf("nextMessage: %v", err)
			}
			break
		}
		got = append(got, bytes.Clone(m))
	}
	if len(got) != 3 || string(got[0]) != `{"op":"pong"}` || !bytes.Equal(got[1], big) || !bytes.Equal(got[2], msg) {
		t.Errorf("messages: %q", got)
	}
	if r := c.endReason(io.EOF); r != "close 1013: slow consumer: reconnect" {
		t.Errorf("end reason %q", r)
	}
	cliEnd.Close()
	var rs [][]byte
	for r := range replies {
		rs = append(rs, r)
	}
	if len(rs) != 2 || !bytes.Equal(rs[0], []byte{wsPong, 'p', '1'}) || !bytes.Equal(rs[1], []byte{wsClose, 0x03, 0xf5}) {
		t.Errorf("client replies %q: want a pong with the ping's payload, then the close code echoed", rs)
	}
}

func TestStreamsReadsSSE(t *testing.T) {
	p := func(n int64, size int) string { return string(appendPayload(nil, n, 7, size)) }
	in := "retry: 2000\n\n" +
		"id: 1\nevent: message\ndata: " + p(0, 200) + "\n\n" +
		":\n\n" +
		"id: 2\r\nevent: order.created\r\ndata: " + p(1, 9000) + "\r\n\r\n" + // longer than the read buffer
		"id: 3\nevent: message\ndata: " + p(1, 200) + "\n\n" + // a duplicate
		"event: herald.gap\ndata: {\"topic\":\"t\",\"missed_from\":1,\"missed_to\":1,\"first_seq\":2}\n\n" +
		"event: herald.disconnect\ndata: {\"code\":\"slow-consumer\",\"reason\":\"slow consumer: reconnect and resume from your last seq\"}\n\n"
	c := newStreamsTestClient(4, strings.NewReader(in))
	c.ws = false
	reason := c.readSSE()
	if reason != "herald.disconnect slow-consumer: slow consumer: reconnect and resume from your last seq" {
		t.Errorf("reason %q", reason)
	}
	st := c.f.stats()
	if st.unique != 2 || st.duplicates != 1 || st.gaps != 1 || st.malformed != 0 {
		t.Errorf("stats %+v: want 2 unique, 1 duplicate, 1 gap", st)
	}
	if c.lastSeq != 3 {
		t.Errorf("last seq %d, want 3", c.lastSeq)
	}
	c = newStreamsTestClient(4, strings.NewReader("id: 1\ndata: "+p(0, 100)+"\n\n"))
	c.ws = false
	if r := c.readSSE(); r != "connection closed by the server without a reason" {
		t.Errorf("plain end: %q", r)
	}
}

// TestStreamsReconnectsFromLastSeq runs a connection against a WebSocket
// server of the library Herald uses, which acknowledges, pings, sends two
// events and closes as a slow consumer: the client answers the ping,
// reports the close and resubscribes after the last seq it got.
func TestStreamsReconnectsFromLastSeq(t *testing.T) {
	var conns atomic.Int32
	subs := make(chan string, 4)
	fail := make(chan error, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/stream" || r.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := r.Context()
		_, sub, err := ws.Read(ctx)
		if err != nil {
			fail <- err
			return
		}
		subs <- string(sub)
		send := func(s string) {
			if err := ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
				fail <- err
			}
		}
		event := func(seq, n int64) string {
			return fmt.Sprintf(`{"op":"event","sub":"b","topic":"t","seq":%d,"id":"x","time":"2026-11-23T10:02:03.120Z","content_type":"application/json","data":%s}`, seq, appendPayload(nil, n, 1, 100))
		}
		send(`{"op":"subscribed","id":"b","topic":"t","recovered":true,"after_seq":0,"time":"2026-11-23T10:02:03.004Z"}`)
		readCtx := ws.CloseRead(ctx) // handles the pong
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := ws.Ping(pctx); err != nil {
			fail <- fmt.Errorf("ping: %w", err)
		}
		if conns.Add(1) == 1 {
			send(event(11, 0))
			send(event(12, 1))
			_ = ws.Close(websocket.StatusTryAgainLater, "slow consumer: reconnect and resume from your last seq")
			return
		}
		send(event(13, 2))
		<-readCtx.Done()
	}))
	defer srv.Close()

	base, _ := url.Parse(srv.URL)
	cfg := StreamsConfig{Server: srv.URL, Key: "k", Clients: 1, Events: 3}.withDefaults()
	f := newStreamsFleet(cfg, base, "t", time.Now())
	defer f.stop()
	res := f.connect(t.Context())
	if res.Opened != 1 || res.Failed != 0 || res.Error != "" {
		t.Fatalf("connect: %+v", res)
	}
	deadline := time.Now().Add(20 * time.Second)
	for f.unique() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("got %d of 3 events; stats %+v", f.unique(), f.stats())
		}
		select {
		case err := <-fail:
			t.Fatal(err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	st := f.stats()
	if st.disconnects != 1 || st.reconnects != 1 || st.reasons["close 1013: slow consumer: reconnect and resume from your last seq"] != 1 {
		t.Errorf("disconnects %d, reconnects %d, reasons %v", st.disconnects, st.reconnects, st.reasons)
	}
	first, second := <-subs, <-subs
	if first != `{"op":"subscribe","id":"b","topic":"t","since":0}` || second != `{"op":"subscribe","id":"b","topic":"t","since":12}` {
		t.Errorf("subscribes %s then %s: want since 0, then since 12 (the last seq received)", first, second)
	}
	if st.duplicates != 0 || st.e2e.Count != 3 {
		t.Errorf("duplicates %d, latencies %d", st.duplicates, st.e2e.Count)
	}
}

func TestStreamsRefusalNamesTheSetting(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"type":"https://herald.dev/problems/rate-limited","title":"Too many requests","status":429,"detail":"too many open streams for this key: the limit is 3"}`)
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	for _, proto := range []string{ProtoWS, ProtoSSE} {
		cfg := StreamsConfig{Server: srv.URL, Key: "k", Clients: 40, Proto: proto, Dialers: 4}.withDefaults()
		f := newStreamsFleet(cfg, base, "t", time.Now())
		res := f.connect(t.Context())
		f.stop()
		if res.Failed < 1 || res.Opened != 0 || !res.LimitRefused {
			t.Errorf("%s: %+v", proto, res)
		}
		for _, want := range []string{"the limit is 3", "status 429", "stream.max-conns-per-key", "at least 40"} {
			if !strings.Contains(res.Error, want) {
				t.Errorf("%s: error %q does not say %q", proto, res.Error, want)
			}
		}
		rep := &StreamsReport{Scenario: StreamsScenario{Clients: 40, Proto: proto}, Connections: res}
		if p := rep.Problems(); len(p) != 1 || !strings.Contains(p[0], "stream.max-conns-per-key") {
			t.Errorf("%s: problems %q", proto, p)
		}
	}
}

func TestStreamsReportText(t *testing.T) {
	rep := &StreamsReport{
		Date:     time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		Machine:  Machine{CPUs: 2, OS: "linux", Arch: "amd64", GoVersion: "go1.26", Load1: 0.5},
		Scenario: StreamsScenario{Clients: 1000, Proto: ProtoWS, Rate: 10, Events: 100, Batch: 1},
		Topic:    "bench-streams.ab12",
		Connections: StreamsConnections{Wanted: 1000, Opened: 1000, WS: 1000, Seconds: 1.5,
			Latency: Latency{Count: 1000, P50: 1, P99: 4, Max: 9}},
		Memory:     &StreamsMemory{PID: 42, BaselineBytes: 30 << 20, IdleBytes: 40 << 20, PerConnBytes: 10 << 10},
		Publishing: Publishing{Published: 100, PublishSeconds: 9.9, PublishRate: 10.1},
		Expected:   100_000, Delivered: 99_990, Lost: 10, DeliveryRate: 10_050, DeliverySeconds: 9.95,
		E2E:         Latency{Count: 99_990, P50: 1.2, P90: 2, P99: 5.5, P999: 9, Max: 20},
		Disconnects: 2, Reconnects: 2, DisconnectReasons: map[string]int64{"close 1013: slow consumer": 2},
		WindowSeconds: 10, Server: &StreamsProc{PID: 42, CPUSeconds: 4.5, CPUCores: 0.45, RSSMaxBytes: 50 << 20},
		Bench: &StreamsProc{PID: 7, CPUSeconds: 3, CPUCores: 0.3, RSSMaxBytes: 80 << 20},
	}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"streams: 1000 ws clients, 100 events at 10.0/s: 99990 of 100000 delivered (lost 10, duplicates 0)",
		"10.0 KiB", "0.45 cores", "0.30 cores", "2 × close 1013: slow consumer", "5.50 ms", "machine: 2 CPUs",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	if p := rep.Problems(); len(p) != 1 || !strings.Contains(p[0], "10 of 100000 deliveries lost") {
		t.Errorf("problems %q", p)
	}
	var j strings.Builder
	if err := rep.WriteJSON(&j); err != nil || !strings.Contains(j.String(), `"per_conn_bytes": 10240`) {
		t.Errorf("JSON (%v):\n%s", err, j.String())
	}
}

// BenchmarkStreamsReadEvent measures what the load client spends on one
// delivery: reading an event frame (WebSocket) or message (SSE) from its
// buffer, finding the payload and recording it.
func BenchmarkStreamsReadEvent(b *testing.B) {
	const events = 1 << 16
	for _, proto := range []string{ProtoWS, ProtoSSE} {
		b.Run(proto, func(b *testing.B) {
			var stream []byte
			for n := range int64(events) {
				p := appendPayload(nil, n, 1, 200)
				if proto == ProtoWS {
					stream = append(stream, wsServerFrame(wsText, true, fmt.Appendf(nil,
						`{"op":"event","sub":"b","topic":"bench-streams.t","seq":%d,"id":"0190a1b2c3d4e5f6","time":"2026-11-23T10:02:03.120Z","content_type":"application/json","data":%s}`, n+1, p))...)
				} else {
					stream = fmt.Appendf(stream, "id: %d\nevent: message\ndata: %s\n\n", n+1, p)
				}
			}
			r := bytes.NewReader(stream)
			c := newStreamsTestClient(events, r)
			c.ws = proto == ProtoWS
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i%events == 0 {
					r.Reset(stream)
					c.br.Reset(r)
					c.got = newBitset(events)
				}
				i++
				if c.ws {
					m, err := c.nextMessage(nil)
					if err != nil {
						b.Fatal(err)
					}
					c.wsEvent(m)
					continue
				}
				for {
					line, err := c.readLine()
					if err != nil {
						b.Fatal(err)
					}
					if len(line) == 0 {
						break
					}
					if bytes.HasPrefix(line, sseData) {
						c.sseDataLine(sseFieldValue(line[len(sseData):]))
					}
				}
			}
			if st := c.f.stats(); st.malformed != 0 || st.unique == 0 {
				b.Fatalf("stats %+v", st)
			}
		})
	}
}
