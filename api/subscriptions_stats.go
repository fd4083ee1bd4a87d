package api

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/heraldhq/herald"
)

// Successful deliveries are not logged one row each (ADR 0009): the
// attempt log holds every failure, and each subscription's delivery stats
// hold its totals, a latency histogram and a sample of its newest
// successes. The attempts endpoint shows the log and the sample as one
// list, newest first.

// attemptCursor is where a page of the attempts list ends: before the log
// row with id Log and before the sample's attempt at (Time, Seq). A zero
// bound is no bound: nothing was taken from that source yet.
type attemptCursor struct {
	Log  int64
	Time int64 // Unix nanoseconds
	Seq  int64
}

func (c attemptCursor) encode() string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d.%d.%d", c.Log, c.Time, c.Seq))
}

// parseAttemptCursor reads a cursor encode made; a bare log id is the
// form of earlier versions.
func parseAttemptCursor(s string) (attemptCursor, error) {
	bad := herald.FieldErrorf("cursor", "cursor is not one this server issued")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return attemptCursor{}, bad
	}
	parts := strings.Split(string(b), ".")
	if len(parts) != 1 && len(parts) != 3 {
		return attemptCursor{}, bad
	}
	var n [3]int64
	for i, p := range parts {
		if n[i], err = strconv.ParseInt(p, 10, 64); err != nil || n[i] < 0 {
			return attemptCursor{}, bad
		}
	}
	c := attemptCursor{Log: n[0], Time: n[1], Seq: n[2]}
	if c == (attemptCursor{}) {
		return c, bad
	}
	return c, nil
}

// before reports whether a sampled attempt comes after the cursor's place
// in the sample, newest first.
func (c attemptCursor) before(a *herald.Attempt) bool {
	if c.Time == 0 {
		return true
	}
	t := a.Time.UnixNano()
	return t < c.Time || t == c.Time && a.Seq < c.Seq
}

// newestFirst orders attempts newest first; the log's own order (by id)
// breaks ties, and a logged attempt comes before a sampled one of the
// same time.
func newestFirst(a, b herald.Attempt) int {
	if c := b.Time.Compare(a.Time); c != 0 {
		return c
	}
	if c := cmp.Compare(b.ID, a.ID); c != 0 {
		return c
	}
	return cmp.Compare(b.Seq, a.Seq)
}

// attemptsPage returns up to limit attempts of the subscription after
// the cursor, newest first, from the log and the sample, and the cursor
// of the next page ("" when there is none).
func (s *Server) attemptsPage(ctx context.Context, id string, f herald.AttemptFilter, cur attemptCursor, limit int) ([]herald.Attempt, string, error) {
	f.BeforeID, f.Limit = cur.Log, limit+1
	logged, err := s.subs.ListAttempts(ctx, id, f)
	if err != nil {
		return nil, "", err
	}
	var sampled []herald.Attempt
	if f.Outcome != herald.OutcomeFailure {
		stats, err := s.subs.DeliveryStats(ctx, id)
		if err != nil {
			return nil, "", err
		}
		for i := len(stats.Sample) - 1; i >= 0; i-- {
			a := &stats.Sample[i]
			if cur.before(a) && (f.EventID == "" || a.EventID == f.EventID) {
				sampled = append(sampled, *a)
			}
		}
	}
	all := append(logged, sampled...)
	slices.SortStableFunc(all, newestFirst)
	if len(all) <= limit {
		return all, "", nil
	}
	all = all[:limit]
	next := cur
	for _, a := range all {
		if a.ID > 0 {
			next.Log = a.ID // the log's rows come in id order: the last one taken wins
		} else {
			next.Time, next.Seq = a.Time.UnixNano(), a.Seq
		}
	}
	return all, next.encode(), nil
}

// newestAttempt is the newest attempt of the event at the subscription,
// logged or sampled; ok is false when there is none.
func (s *Server) newestAttempt(ctx context.Context, id, eventID, topic string) (herald.Attempt, bool, error) {
	page, _, err := s.attemptsPage(ctx, id, herald.AttemptFilter{EventID: eventID}, attemptCursor{}, 1)
	if err != nil || len(page) == 0 || page[0].Topic != topic {
		return herald.Attempt{}, false, err
	}
	return page[0], true, nil
}

// toAttemptJSON is an attempt on the wire; detail says whether the raw
// cause behind a failure's reason is shown.
func toAttemptJSON(a *herald.Attempt, detail bool) attemptJSON {
	reason, errDetail := splitReason(a.Error, detail)
	return attemptJSON{
		ID: a.ID, Topic: a.Topic, Seq: a.Seq, EventID: a.EventID, Attempt: a.Attempt,
		Time: formatTime(a.Time), Outcome: string(a.Outcome), StatusCode: a.StatusCode,
		LatencyMS: millis(a.Latency), Error: reason, ErrorDetail: errDetail, Response: a.Response,
		Sampled: a.ID == 0,
	}
}

// latencyJSON estimates quantiles of the latency of a subscription's
// successful deliveries, from its histogram (herald.LatencyHistogram):
// within a bucket, deliveries are taken as spread evenly.
type latencyJSON struct {
	P50MS float64 `json:"p50_ms"`
	P90MS float64 `json:"p90_ms"`
	P99MS float64 `json:"p99_ms"`
}

// addDeliveryStats adds the subscription's delivery totals and latency to
// its stats.
func (s *Server) addDeliveryStats(ctx context.Context, id string, out *statsJSON) error {
	st, err := s.subs.DeliveryStats(ctx, id)
	if err != nil {
		return err
	}
	out.Delivered, out.Failed = st.Delivered, st.Failed
	out.LatencyMS = latencyJSON{P50MS: millis(st.Latency.Quantile(0.5)), P90MS: millis(st.Latency.Quantile(0.9)),
		P99MS: millis(st.Latency.Quantile(0.99))}
	return nil
}
