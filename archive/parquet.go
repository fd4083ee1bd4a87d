package archive

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// parquetRow is one archived event as a row of a Parquet file. Topics have
// no schema in Herald yet, so the payload is a column of JSON text ("data",
// when the payload is JSON) or of base64 ("data_base64", otherwise) beside
// the event's metadata columns; headers are a JSON object as text. The
// partition keys are not columns: readers take them from the folder names
// (hive_partitioning).
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

func encodeParquet(recs []Record) ([]byte, error) {
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
	if err := parquet.Write(&buf, rows, parquet.Compression(&zstd.Codec{})); err != nil {
		return nil, fmt.Errorf("write parquet: %w", err)
	}
	return buf.Bytes(), nil
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
