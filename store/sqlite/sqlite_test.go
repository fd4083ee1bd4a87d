package sqlite_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/store/storetest"
)

// openTemp opens a store in a new file under t.TempDir and closes it when
// the test ends.
func openTemp(t testing.TB) *sqlite.Store {
	t.Helper()
	return openTempAt(t, filepath.Join(t.TempDir(), "data", "herald.db"))
}

func openTempAt(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) herald.Store { return openTemp(t) })
}

func TestSubscriptionConformance(t *testing.T) {
	storetest.RunSubscriptions(t, func(t *testing.T) storetest.SubscriptionTestStore { return openTemp(t) })
}

// crashChildEnv names the store file a child process appends to until it is
// killed; see TestAckedAppendsSurviveKill.
const crashChildEnv = "HERALD_SQLITE_CRASH_CHILD"

// Acked means durable: a process killed with SIGKILL in the middle of
// appending loses none of the events whose Append had returned.
func TestAckedAppendsSurviveKill(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		appendUntilKilled(t, path)
		return
	}
	path := filepath.Join(t.TempDir(), "h.db")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestAckedAppendsSurviveKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[int64]string{}
	lines := bufio.NewScanner(out)
	for len(acked) < 500 && lines.Scan() {
		var seq int64
		var id string
		if _, err := fmt.Sscanf(lines.Text(), "ack %d %s", &seq, &id); err == nil {
			acked[seq] = id
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL, mid-append
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(acked) < 500 {
		t.Fatalf("the child acknowledged only %d events before its output ended", len(acked))
	}

	s := openTempAt(t, path)
	tp, err := s.GetTopic(t.Context(), "crash")
	if err != nil {
		t.Fatal(err)
	}
	for seq, id := range acked {
		e, err := s.GetEvent(t.Context(), "crash", id)
		if err != nil || e.Seq != seq {
			t.Fatalf("acknowledged event %s (seq %d) after kill: %+v, %v", id, seq, e.Seq, err)
		}
		if seq > tp.HeadSeq {
			t.Fatalf("acknowledged seq %d is above the head %d after kill", seq, tp.HeadSeq)
		}
	}
	// Whatever was committed is gap-free from 1.
	evs, err := s.ReadEvents(t.Context(), "crash", 0, 100_000)
	if err != nil || int64(len(evs)) != tp.HeadSeq {
		t.Fatalf("read %d events, %v; want HeadSeq %d", len(evs), err, tp.HeadSeq)
	}
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			t.Fatalf("event at position %d has seq %d", i, e.Seq)
		}
	}
}

func appendUntilKilled(t *testing.T, path string) {
	s := openTempAt(t, path)
	if _, _, err := s.PutTopic(t.Context(), herald.Topic{Name: "crash"}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	for {
		now := time.Now()
		evs := make([]*herald.Event, 10)
		for i := range evs {
			evs[i] = &herald.Event{ID: herald.NewID(now), Topic: "crash", Time: now, Payload: []byte("payload")}
		}
		if _, err := s.Append(t.Context(), evs); err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			fmt.Fprintf(os.Stdout, "ack %d %s\n", e.Seq, e.ID)
		}
	}
}

func TestTimeConformance(t *testing.T) {
	storetest.RunTime(t, func(t *testing.T) herald.Store { return openTemp(t) })
}

func TestSourceConformance(t *testing.T) {
	storetest.RunSources(t, func(t *testing.T) herald.SourceStore { return openTemp(t) })
}

func TestUsersConformance(t *testing.T) {
	storetest.RunUsers(t, func(t *testing.T) herald.Store { return openTemp(t) })
}
