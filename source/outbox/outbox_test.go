package outbox

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		config, field string
	}{
		{`{}`, "dsn"},
		{`{"dsn":"user:pw@tcp(h:3306)/db"}`, "driver"},
		{`{"dsn":"postgres://u:pw@h/db","table":"a;drop"}`, "table"},
		{`{"dsn":"postgres://u:pw@h/db","batch_size":0,"poll_interval":"1h"}`, "poll_interval"},
		{`{"dsn":"postgres://u:pw@h/db","batch_size":100000}`, "batch_size"},
		{`{"dsn":"postgres://u:pw@h/db","on_publish":"drop"}`, "on_publish"},
		{`{"dsn":"postgres://u:pw@h/db","notify_channel":"a.b"}`, "notify_channel"},
		{`{"dsn":"mysql://nonsense"}`, "dsn"},
		{`{"dsn":"x","driver":"oracle"}`, "driver"},
		{`{"dsn":"postgres://h/db","nope":1}`, ""},
		{`{"dsn":"postgres://u:pw@10.1.2.3/db"}`, "dsn"},
		{`{"dsn":"postgres://u:pw@db.example.com,localhost/db"}`, "dsn"},
		{`{"dsn":"host=/var/run/postgresql dbname=app","driver":"postgres"}`, "dsn"},
		{`{"dsn":"u:pw@tcp(192.168.1.9:3306)/db","driver":"mysql"}`, "dsn"},
		{`{"dsn":"u:pw@unix(/run/mysqld/mysqld.sock)/db","driver":"mysql"}`, "dsn"},
	} {
		_, err := Kind{}.Validate(json.RawMessage(tc.config), nil)
		if e, ok := err.(*herald.Error); !ok || e.Code != herald.CodeInvalid || e.Field != tc.field {
			t.Errorf("Validate(%s) = %v; want CodeInvalid naming %q", tc.config, err, tc.field)
		}
	}
	got, err := Kind{AllowPrivate: true}.Validate(json.RawMessage(`{"dsn":"mysql://app:pw@tcp(127.0.0.1:3306)/shop"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	_ = json.Unmarshal(got, &c)
	if c.Driver != DriverMySQL || c.Table != "herald_outbox" || c.BatchSize != DefaultBatchSize || c.OnPublish != OnPublishDelete || c.NotifyChannel != "" {
		t.Fatalf("defaults: %+v", c)
	}
	// An update without the DSN keeps it; the public form hides its password.
	upd, err := Kind{AllowPrivate: true}.Validate(json.RawMessage(`{"batch_size":10}`), got)
	if err != nil || !strings.Contains(string(upd), "app:pw@") {
		t.Fatalf("update kept no DSN: %s %v", upd, err)
	}
	for _, dsn := range []string{"postgres://u:s3cret@h:5432/db?sslmode=disable", "u:s3cret@tcp(h:3306)/db", "mysql://u:s3cret@tcp(h)/db"} {
		if r := redact(dsn); strings.Contains(r, "s3cret") || !strings.Contains(r, "u:xxxxx@") {
			t.Errorf("redact(%s) = %s", dsn, r)
		}
	}
	if pub := (Kind{}).Public(got); strings.Contains(string(pub), ":pw@") {
		t.Fatalf("Public leaks the password: %s", pub)
	}
}
