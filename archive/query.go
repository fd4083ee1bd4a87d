package archive

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/filter"
)

// Query limits.
const (
	// MaxQueryRange bounds the time range of one query (it is walked hour
	// by hour).
	MaxQueryRange = 366 * 24 * time.Hour
	DefaultLimit  = 100
	MaxLimit      = 10_000
)

// Query selects archived events: From <= time < To, in the partitions
// whose keys have the given values (others: every value), passing Filter.
// Events come in (time, topic, seq) order after the cursor.
type Query struct {
	From, To  time.Time
	Partition map[string]string
	Topic     string // a topic name or pattern; "" for every topic
	Filter    *filter.Filter
	Cursor    string // from a previous page's Page.Next; "" for the first
	Limit     int
}

// Hit is one archived event with its partition's values.
type Hit struct {
	Event     *herald.Event
	Partition map[string]string
}

// Page is what Run returns besides the hits it emitted: Next is the
// cursor of the next page, "" when the range is exhausted. Files and
// Partitions count what the query read (for logs and the benchmark).
type Page struct {
	Next       string
	Files      int
	Partitions int
}

// position is where a page ended: the last event emitted.
type position struct {
	Time  int64  `json:"t"`
	Topic string `json:"p"`
	Seq   int64  `json:"s"`
}

func (p position) before(r *Record) bool {
	return cmp.Or(cmp.Compare(p.Time, r.Time.UnixNano()), strings.Compare(p.Topic, r.Topic), cmp.Compare(p.Seq, r.Seq)) < 0
}

// CheckQuery validates the query against the archive's config; errors name
// the query parameter at fault.
func CheckQuery(config json.RawMessage, q *Query) error {
	c, err := parseConfig(config)
	if err != nil {
		return err
	}
	if q.To.IsZero() {
		q.To = time.Now()
	}
	if q.From.IsZero() {
		q.From = q.To.Add(-24 * time.Hour)
	}
	if !q.From.Before(q.To) {
		return herald.FieldErrorf("from", "from must be before to")
	}
	if q.To.Sub(q.From) > MaxQueryRange {
		return herald.FieldErrorf("to", "a query spans at most %s", herald.FormatDuration(MaxQueryRange))
	}
	for k := range q.Partition {
		if !slices.ContainsFunc(c.Partition, func(p PartitionKey) bool { return p.Key == k }) {
			return herald.FieldErrorf("partition."+k, "the archive has no partition key %q", k)
		}
	}
	if q.Topic != "" {
		if err := herald.ValidatePattern(q.Topic); err != nil {
			return &herald.Error{Code: herald.CodeInvalid, Field: "topic", Message: err.Error()}
		}
	}
	if q.Limit == 0 {
		q.Limit = DefaultLimit
	}
	if q.Limit < 1 || q.Limit > MaxLimit {
		return herald.FieldErrorf("limit", "limit is between 1 and %d", MaxLimit)
	}
	if q.Cursor != "" {
		if _, err := decodeCursor(q.Cursor); err != nil {
			return err
		}
	}
	return nil
}

func decodeCursor(s string) (position, error) {
	var p position
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &p) != nil || p.Topic == "" {
		return p, herald.FieldErrorf("cursor", "the cursor is not one this archive's query returned")
	}
	return p, nil
}

func encodeCursor(p position) string {
	b, _ := json.Marshal(p)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Run reads the archive of the config and calls emit for each event the
// query selects, up to its limit. Partition folders are pruned by the
// query's keys and hours: only the folders of the hours in range, with
// the given key values, are read, each through its manifest. Duplicates
// (a batch written twice around a crash) are dropped by topic and seq.
// q must have passed CheckQuery.
func (ch *Channel) Run(ctx context.Context, config json.RawMessage, q Query, emit func(Hit) error) (Page, error) {
	c, err := parseConfig(config)
	if err != nil {
		return Page{}, err
	}
	objs, err := ch.objects(c)
	if err != nil {
		return Page{}, err
	}
	return run(ctx, c, objs, q, emit)
}

func run(ctx context.Context, c Config, objs objects, q Query, emit func(Hit) error) (Page, error) {
	var page Page
	var after *position
	if q.Cursor != "" {
		p, err := decodeCursor(q.Cursor)
		if err != nil {
			return page, err
		}
		after = &p
	}
	from := q.From.UTC()
	if after != nil {
		if at := time.Unix(0, after.Time).UTC(); at.After(from) {
			from = at
		}
	}
	emitted := 0
	for hour := from.Truncate(time.Hour); hour.Before(q.To); hour = hour.Add(time.Hour) {
		hourDir := fmt.Sprintf("year=%04d/month=%02d/day=%02d/hour=%02d/", hour.Year(), int(hour.Month()), hour.Day(), hour.Hour())
		dirs, err := keyDirs(ctx, c, objs, q.Partition, 0, "")
		if err != nil {
			return page, err
		}
		// The hour's files that overlap the query, by their first event's
		// time: they are read one at a time, and an event is emitted once
		// no unread file can hold an earlier one (or a copy of it), so a
		// first page reads the files it needs, not the whole hour.
		type hourFile struct {
			dir  string
			f    manifestFile
			part map[string]string
		}
		var files []hourFile
		for _, kd := range dirs {
			dir := kd.prefix + hourDir
			m, err := readManifest(ctx, objs, dir)
			if err != nil {
				return page, err
			}
			if len(m.Files) > 0 {
				page.Partitions++
			}
			for _, f := range m.Files {
				if f.MaxTime.Before(q.From) || !f.MinTime.Before(q.To) || q.Topic != "" && !herald.MatchTopic(q.Topic, f.Topic) {
					continue
				}
				files = append(files, hourFile{dir: dir, f: f, part: kd.values})
			}
		}
		slices.SortStableFunc(files, func(a, b hourFile) int { return a.f.MinTime.Compare(b.f.MinTime) })
		type hit struct {
			rec  Record
			part map[string]string
		}
		var pending []hit // read, not emitted yet, in (time, topic, seq) order
		var prevTopic string
		var prevSeq int64
		for next := 0; ; {
			for next < len(files) && (len(pending) == 0 || !pending[0].rec.Time.Before(files[next].f.MinTime)) {
				hf := files[next]
				next++
				data, err := objs.Get(ctx, hf.dir+hf.f.Name)
				if err != nil {
					return page, fmt.Errorf("read %s%s: %w", hf.dir, hf.f.Name, err)
				}
				recs, err := decode(hf.f.Name, data)
				if err != nil {
					return page, err
				}
				page.Files++
				for _, r := range recs {
					if r.Time.Before(q.From) || !r.Time.Before(q.To) || after != nil && !after.before(&r) {
						continue
					}
					if q.Topic != "" && !herald.MatchTopic(q.Topic, r.Topic) {
						continue
					}
					pending = append(pending, hit{rec: r, part: hf.part})
				}
				slices.SortFunc(pending, func(a, b hit) int {
					return cmp.Or(a.rec.Time.Compare(b.rec.Time), strings.Compare(a.rec.Topic, b.rec.Topic), cmp.Compare(a.rec.Seq, b.rec.Seq))
				})
			}
			if len(pending) == 0 {
				break // the hour is done
			}
			h := pending[0]
			pending = pending[1:]
			r := &h.rec
			if r.Topic == prevTopic && r.Seq == prevSeq {
				continue // the same event written twice
			}
			prevTopic, prevSeq = r.Topic, r.Seq
			ev, err := r.Event()
			if err != nil {
				return page, err
			}
			if !q.Filter.Match(ev.Type, ev.ContentType, ev.Payload) {
				continue
			}
			if emitted == q.Limit {
				return page, nil // there is more: Next is after the last one emitted
			}
			if err := emit(Hit{Event: ev, Partition: h.part}); err != nil {
				return page, err
			}
			emitted++
			page.Next = encodeCursor(position{Time: r.Time.UnixNano(), Topic: r.Topic, Seq: r.Seq})
		}
	}
	page.Next = ""
	return page, nil
}

// keyDir is a partition folder prefix for the keys (before the hour
// folders) and the values it stands for.
type keyDir struct {
	prefix string
	values map[string]string
}

// keyDirs returns the folders of the partition keys from the i-th on,
// under prefix: a given value is taken as it is (no listing), a missing
// one is listed.
func keyDirs(ctx context.Context, c Config, objs objects, want map[string]string, i int, prefix string) ([]keyDir, error) {
	if i == len(c.Partition) {
		return []keyDir{{prefix: prefix, values: map[string]string{}}}, nil
	}
	k := c.Partition[i]
	var names []string
	if v, ok := want[k.Key]; ok {
		names = []string{k.Key + "=" + escapeValue(v)}
	} else {
		dirs, err := objs.Dirs(ctx, prefix)
		if err != nil {
			return nil, fmt.Errorf("list %s%s: %w", objs.Where(), prefix, err)
		}
		for _, d := range dirs {
			if strings.HasPrefix(d, k.Key+"=") {
				names = append(names, d)
			}
		}
		slices.Sort(names)
	}
	var out []keyDir
	for _, name := range names {
		sub, err := keyDirs(ctx, c, objs, want, i+1, prefix+name+"/")
		if err != nil {
			return nil, err
		}
		v := unescapeValue(strings.TrimPrefix(name, k.Key+"="))
		for _, s := range sub {
			s.values[k.Key] = v
			out = append(out, s)
		}
	}
	return out, nil
}

// unescapeValue undoes escapeValue.
func unescapeValue(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+3], "%02X", &c); err == nil {
				b.WriteByte(c)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
