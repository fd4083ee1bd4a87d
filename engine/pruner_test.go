package engine_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
)

// TestPrunerRemovesExpiredEventsOnly publishes events with old and new
// times into topics with different retentions and checks one pass removes
// exactly the expired ones, in batches, while later publishes still work.
func TestPrunerRemovesExpiredEventsOnly(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "h.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	for _, tp := range []herald.Topic{
		{Name: "short", Retention: time.Hour},
		{Name: "long", Retention: 30 * 24 * time.Hour},
	} {
		tp.CreatedAt, tp.UpdatedAt = now, now
		if _, _, err := st.PutTopic(ctx, tp.WithDefaults()); err != nil {
			t.Fatal(err)
		}
	}
	var evs []*herald.Event
	add := func(topic string, age time.Duration, n int) {
		for range n {
			at := now.Add(-age)
			evs = append(evs, &herald.Event{ID: herald.NewID(at), Topic: topic, Time: at, ContentType: "text/plain", Payload: []byte("x")})
		}
	}
	add("short", 2*time.Hour, 250) // expired
	add("short", time.Minute, 10)  // kept
	add("long", 2*time.Hour, 40)   // kept: 30-day retention
	if _, err := st.Append(ctx, evs); err != nil {
		t.Fatal(err)
	}
	p := engine.NewPruner(st, engine.PrunerConfig{BatchSize: 100, Now: func() time.Time { return now }}, nil, nil)
	n, err := p.Pass(ctx)
	if err != nil || n != 250 {
		t.Fatalf("Pass = %d, %v; want the 250 expired events", n, err)
	}
	short, _ := st.GetTopic(ctx, "short")
	long, _ := st.GetTopic(ctx, "long")
	if short.EventCount() != 10 || short.FirstSeq != 251 || long.EventCount() != 40 {
		t.Fatalf("after pruning: short %d events from seq %d, long %d events", short.EventCount(), short.FirstSeq, long.EventCount())
	}
	if n, err := p.Pass(ctx); err != nil || n != 0 {
		t.Fatalf("a second pass deleted %d, %v", n, err)
	}
	// Seqs keep going after pruning.
	res, err := st.Append(ctx, []*herald.Event{{ID: herald.NewID(now), Topic: "short", Time: now, Payload: []byte("y")}})
	if err != nil || res[0].Seq != 261 {
		t.Fatalf("append after prune = %+v, %v", res, err)
	}
}
