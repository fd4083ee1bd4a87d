package archive

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// parquetRow is one archived event as a row of a Parquet file: the
// event's metadata columns and the payload as a column of JSON text
// ("data", when the payload is JSON) or of base64 ("data_base64",
// otherwise); headers are a JSON object as text. Files of a topic with a
// schema have one more column, "payload" (PayloadColumn), the payload's
// fields typed as the schema says; the raw columns stay, so Herald reads
// every file the same way. The partition keys are not columns: readers
// take them from the folder names (hive_partitioning).
type parquetRow struct {
	ID             string    `parquet:"id"`
	Topic          string    `parquet:"topic"`
	Seq            int64     `parquet:"seq"`
	Time           time.Time `parquet:"time,timestamp(nanosecond)"`
	Type           string    `parquet:"type"`
	Key            string    `parquet:"key"`
	IdempotencyKey string    `parquet:"idempotency_key"`
	ContentType    string    `parquet:"content_type"`
	Headers        string    `parquet:"headers"`
	Data           string    `parquet:"data"`
	DataBase64     string    `parquet:"data_base64"`
}

// encodeParquet writes the records as one Parquet file; with pt (the
// topic's schema gives fields), payloads[i] is the payload column's value
// of recs[i].
func encodeParquet(recs []Record, pt *colType, payloads []any) ([]byte, error) {
	rows := make([]parquetRow, len(recs))
	for i := range recs {
		r := &recs[i]
		row := parquetRow{
			ID: r.ID, Topic: r.Topic, Seq: r.Seq, Time: r.Time.UTC(), Type: r.Type, Key: r.Key,
			IdempotencyKey: r.IdempotencyKey, ContentType: r.ContentType, Data: string(r.Data),
		}
		if r.DataBase64 != nil {
			row.DataBase64 = *r.DataBase64
		}
		if len(r.Headers) > 0 {
			h, err := json.Marshal(r.Headers)
			if err != nil {
				return nil, err
			}
			row.Headers = string(h)
		}
		rows[i] = row
	}
	var buf bytes.Buffer
	if pt == nil {
		if err := parquet.Write(&buf, rows, parquet.Compression(parquetZstd)); err != nil {
			return nil, fmt.Errorf("write parquet: %w", err)
		}
		return buf.Bytes(), nil
	}
	// With payload columns the rows are maps over a schema built from the
	// event columns and the topic's.
	sch := parquetSchema(pt)
	mrows := make([]map[string]any, len(rows))
	for i := range rows {
		r := &rows[i]
		mrows[i] = map[string]any{
			"id": r.ID, "topic": r.Topic, "seq": r.Seq, "time": r.Time, "type": r.Type, "key": r.Key,
			"idempotency_key": r.IdempotencyKey, "content_type": r.ContentType, "headers": r.Headers,
			"data": r.Data, "data_base64": r.DataBase64, PayloadColumn: payloads[i],
		}
	}
	w := parquet.NewGenericWriter[map[string]any](&buf, sch, parquet.Compression(parquetZstd))
	if _, err := w.Write(mrows); err != nil {
		return nil, fmt.Errorf("write parquet: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("write parquet: %w", err)
	}
	return buf.Bytes(), nil
}

// parquetZstd compresses the pages of every file: one codec keeps one
// pool of encoders, where a codec per file made a new encoder (megabytes
// of tables allocated and cleared) for each file.
var parquetZstd = &zstd.Codec{}

// eventColumns are the event's columns, in parquetRow's order.
var eventColumns = parquet.SchemaOf(parquetRow{}).Fields()

// parquetSchema is the schema of a file with payload columns: the event
// columns, then "payload".
func parquetSchema(pt *colType) *parquet.Schema {
	g := make(orderedGroup, 0, len(eventColumns)+1)
	for _, f := range eventColumns {
		g = append(g, parquet.Group{f.Name(): f}.Fields()[0])
	}
	g = append(g, parquet.Group{PayloadColumn: pt.node()}.Fields()[0])
	return parquet.NewSchema("archive", g)
}

func decodeParquet(data []byte) ([]Record, error) {
	rows, err := parquet.Read[parquetRow](bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("read parquet: %w", err)
	}
	out := make([]Record, len(rows))
	for i, row := range rows {
		r := Record{
			ID: row.ID, Topic: row.Topic, Seq: row.Seq, Time: row.Time.UTC(), Type: row.Type, Key: row.Key,
			IdempotencyKey: row.IdempotencyKey, ContentType: row.ContentType,
		}
		if row.Data != "" {
			r.Data = json.RawMessage(row.Data)
		} else {
			r.DataBase64 = new(row.DataBase64)
		}
		if row.Headers != "" {
			if err := json.Unmarshal([]byte(row.Headers), &r.Headers); err != nil {
				return nil, fmt.Errorf("read parquet: headers of %s/%d: %w", row.Topic, row.Seq, err)
			}
		}
		out[i] = r
	}
	return out, nil
}
