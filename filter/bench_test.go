package filter

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

const benchFilter = `{
  "types": ["order.*", "payment.captured"],
  "payload": {
    "status": ["paid", "shipped"],
    "total": [{"numeric": [">", 100, "<=", 10000]}],
    "customer": {"tier": [{"equals-ignore-case": "gold"}], "country": [{"anything-but": ["XX", "YY"]}]},
    "items": {"sku": [{"prefix": "SKU-"}]}
  }
}`

// benchPayload is an order of about 1 KiB with the matching fields spread
// through it, and n filler line items after them.
func benchPayload(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"id":"ord_01J9Z6Y3K8ZQ","status":"paid","currency":"EUR","total":249.90,`)
	b.WriteString(`"customer":{"id":"cus_42","name":"Ada Lovelace","email":"ada@example.com","tier":"Gold","country":"GB",`)
	b.WriteString(`"address":{"line1":"12 St James's Square","city":"London","postcode":"SW1Y 4JH"}},`)
	b.WriteString(`"notes":"leave with the concierge \"please\"","created_at":"2025-03-01T12:00:00Z","items":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"sku":"SKU-%05d","name":"Widget number %d","qty":%d,"price":%d.99,"tags":["a","b"]}`, i, i, i%5+1, i%90+10)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func BenchmarkMatch(b *testing.B) {
	f := mustParse(b, benchFilter)
	for _, bc := range []struct {
		name    string
		payload []byte
	}{
		{"1KiB", benchPayload(6)},
		{"64KiB", benchPayload(700)},
	} {
		if !f.Match("order.created", "application/json", bc.payload) {
			b.Fatalf("%s: the benchmark payload does not match", bc.name)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.payload)))
			b.ReportAllocs()
			for b.Loop() {
				f.Match("order.created", "application/json", bc.payload)
			}
		})
	}
	b.Run("TypesOnly", func(b *testing.B) {
		f := mustParse(b, `{"types":["order.*","payment.captured","invoice.*.failed"]}`)
		b.ReportAllocs()
		for b.Loop() {
			f.Match("invoice.card.failed", "application/json", nil)
		}
	})
	b.Run("WrongType", func(b *testing.B) {
		p := benchPayload(6)
		b.ReportAllocs()
		for b.Loop() {
			f.Match("user.created", "application/json", p)
		}
	})
}

// BenchmarkDecodeMap is the cost Match avoids: decoding the same payload
// into map[string]any, before evaluating anything.
func BenchmarkDecodeMap(b *testing.B) {
	for _, bc := range []struct {
		name    string
		payload []byte
	}{
		{"1KiB", benchPayload(6)},
		{"64KiB", benchPayload(700)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.payload)))
			b.ReportAllocs()
			for b.Loop() {
				var m map[string]any
				if err := json.Unmarshal(bc.payload, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	raw := []byte(benchFilter)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(raw); err != nil {
			b.Fatal(err)
		}
	}
}
