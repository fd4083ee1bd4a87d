package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// buildBinary compiles the herald command once per test binary run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "herald-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "herald")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// proc is a herald serve process started from the built binary.
type proc struct {
	cmd  *exec.Cmd
	url  string
	logs *syncBuffer
	done chan struct{}
}

// startProc runs `herald serve` with args and waits until it serves.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "HERALD_ALLOW_PRIVATE_DESTINATIONS=true")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			p.logs.Write(append(line, '\n'))
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "herald serving" {
				select {
				case addr <- rec.Addr:
				default:
				}
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	select {
	case a := <-addr:
		p.url = "http://" + a
	case <-p.done:
		t.Fatalf("herald exited before serving:\n%s", p.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("herald did not start serving within 60s:\n%s", p.logs)
	}
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// acked is what a publisher was told by a 2xx answer.
type acked struct {
	id  string
	seq int64
}

// TestCrashLosesNoAcknowledgedEvent publishes from several goroutines,
// kills the server with SIGKILL at a random moment, restarts it, and checks
// that every acknowledged event is there exactly once with gap-free seqs.
// HERALD_CRASH_KILLS sets how many kills (default 3; the README's crash
// test uses 20).
func TestCrashLosesNoAcknowledgedEvent(t *testing.T) { crashRun(t, false) }

// TestCrashUnderDeliveryLosesNothing does the same with a webhook
// subscription whose endpoint fails a fifth of its requests: at the end,
// every acknowledged event must have reached the endpoint at least once.
// It reports the duplicate rate (redeliveries after kills are allowed).
func TestCrashUnderDeliveryLosesNothing(t *testing.T) { crashRun(t, true) }

func crashRun(t *testing.T, deliver bool) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	kills := 3
	if v := os.Getenv("HERALD_CRASH_KILLS"); v != "" {
		kills, _ = strconv.Atoi(v)
	}
	var ep *endpoint
	if deliver {
		ep = newEndpoint(t)
		ep.failPct = 20
	}
	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--admin-key", testAdminKey}
	const topic = "crash.test"
	const workers = 8

	var mu sync.Mutex
	ack := map[string]acked{}    // idempotency key -> answer
	inDoubt := map[string]bool{} // published, answer lost in the crash
	next := make([]int, workers) // per worker: next message number

	for round := 0; round <= kills; round++ {
		p := startProc(t, args...)
		c := client.New(p.url, client.WithKey(testAdminKey))
		ctx := t.Context()
		if round == 0 {
			if _, _, err := c.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
				t.Fatal(err)
			}
			if deliver {
				sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
					Topic: topic, URL: ep.srv.URL, Verification: herald.VerifyNone, MaxInFlight: 32,
					Retry: herald.RetryPolicy{MaxAttempts: 100, Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
				})
				if err != nil {
					t.Fatal(err)
				}
				ep.mu.Lock()
				ep.secrets = []string{sub.Secret}
				ep.mu.Unlock()
			}
		}
		// Publish again what was in doubt: the idempotency key makes it
		// either a new event or a duplicate of the one that was stored.
		for key := range inDoubt {
			res, err := c.Publish(ctx, topic, []byte(key), client.PublishOptions{IdempotencyKey: key, ContentType: "text/plain"})
			if err != nil {
				t.Fatalf("round %d: re-publish %s: %v", round, key, err)
			}
			ack[key] = acked{res.ID, res.Seq}
			delete(inDoubt, key)
		}
		checkLog(t, c, topic, ack)
		if round == kills {
			if deliver {
				checkDelivered(t, ep, ack)
			}
			break
		}

		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					key := fmt.Sprintf("w%d-%d", w, next[w])
					next[w]++
					mu.Unlock()
					pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					res, err := c.Publish(pctx, topic, []byte(key), client.PublishOptions{IdempotencyKey: key, ContentType: "text/plain"})
					cancel()
					mu.Lock()
					if err != nil {
						inDoubt[key] = true
						mu.Unlock()
						return // the server is gone
					}
					ack[key] = acked{res.ID, res.Seq}
					mu.Unlock()
				}
			})
		}
		// Kill at a random moment once publishing is under way.
		deadline := time.Now().Add(30 * time.Second)
		mu.Lock()
		want := len(ack) + 50 + rand.IntN(400)
		mu.Unlock()
		for {
			mu.Lock()
			n := len(ack)
			mu.Unlock()
			if n >= want || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond) // polling a counter, not waiting for an outcome
		}
		p.kill()
		close(stop)
		wg.Wait()
		t.Logf("round %d: killed with %d events acknowledged, %d in doubt", round, len(ack), len(inDoubt))
	}
	if len(ack) < kills*50 {
		t.Fatalf("only %d events were acknowledged over %d rounds", len(ack), kills)
	}
}

// checkLog reads the whole topic and checks every acknowledged event is
// there once, at its acknowledged seq, and the seqs have no gap.
func checkLog(t *testing.T, c *client.Client, topic string, ack map[string]acked) {
	t.Helper()
	seen := map[string]int64{} // payload (= idempotency key) -> seq
	var after int64
	for {
		page, err := c.ListEvents(t.Context(), topic, after, 1000)
		if err != nil {
			t.Fatalf("list events: %v", err)
		}
		for _, e := range page.Events {
			if e.Seq != after+1 {
				t.Fatalf("gap in seqs: %d follows %d", e.Seq, after)
			}
			after = e.Seq
			key := string(e.Payload)
			if prev, dup := seen[key]; dup {
				t.Fatalf("event %s stored twice, at seqs %d and %d", key, prev, e.Seq)
			}
			seen[key] = e.Seq
		}
		if len(page.Events) < 1000 {
			break
		}
	}
	var lost []string
	for key, a := range ack {
		seq, ok := seen[key]
		switch {
		case !ok:
			lost = append(lost, key)
		case seq != a.seq:
			t.Errorf("event %s acknowledged at seq %d is at seq %d", key, a.seq, seq)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged events lost, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	if errors.Is(t.Context().Err(), context.Canceled) {
		t.Fatal("test context cancelled")
	}
}

// checkDelivered waits until the endpoint has accepted every acknowledged
// event (by webhook-id, which is the event id) and reports duplicates.
func checkDelivered(t *testing.T, ep *endpoint, ack map[string]acked) {
	t.Helper()
	missing := func() int {
		ep.mu.Lock()
		defer ep.mu.Unlock()
		n := 0
		for _, a := range ack {
			if ep.got[a.id] == 0 {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(90 * time.Second)
	for missing() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged events never reached the endpoint", missing(), len(ack))
		}
		time.Sleep(20 * time.Millisecond) // polling a counter under a deadline
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	total := 0
	for _, n := range ep.got {
		total += n
	}
	if ep.badSig > 0 {
		t.Fatalf("%d deliveries failed the signature check", ep.badSig)
	}
	t.Logf("delivery: %d events acknowledged, all delivered; %d accepted deliveries, duplicate rate %.2f%%",
		len(ack), total, 100*float64(total-len(ep.got))/float64(len(ep.got)))
}
