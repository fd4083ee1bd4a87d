package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLogDurations checks that JSON logs write durations as text, as the
// text logs do, so the same field reads the same in both formats.
func TestLogDurations(t *testing.T) {
	var text, js bytes.Buffer
	log := func(l *slog.Logger) {
		l.Info("shutting down", "timeout", 1500*time.Millisecond, slog.Group("drain", "delay", 5*time.Second), "n", 3)
	}
	log(newLogger(&text, slog.LevelInfo, "text"))
	log(newLogger(&js, slog.LevelInfo, "json"))
	if !strings.Contains(text.String(), "timeout=1.5s drain.delay=5s n=3") {
		t.Fatalf("text log: %s", text.String())
	}
	var line struct {
		Timeout any
		Drain   struct{ Delay any }
		N       any
	}
	if err := json.Unmarshal(js.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line.Timeout != "1.5s" || line.Drain.Delay != "5s" || line.N != 3.0 {
		t.Fatalf("JSON log: %s; want durations as text (\"1.5s\", \"5s\") and numbers as numbers", js.String())
	}
}
