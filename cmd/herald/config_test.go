package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// env returns a getenv that reads the map.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "herald.conf")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// samples holds, for every setting, three valid values for the file, the
// environment and the flag, such that the file's differs from the default
// and each of the others from the one before, so every step of the
// precedence shows. A new setting needs a row here, or the test below
// fails.
var samples = map[string][3]string{
	"addr":                             {"127.0.0.1:9001", "127.0.0.1:9002", ":0"},
	"data-dir":                         {"/var/lib/herald-file", "/var/lib/herald-env", "/tmp/herald-flag"},
	"archive-dir":                      {"/srv/archive-file", "/srv/archive-env", "/tmp/archive-flag"},
	"node-id":                          {"node-file", "node.env", "node_flag-1"},
	"database-url":                     {"postgres://u:file@db/herald", "postgres://u:env@db/herald", "sqlite:/tmp/flag.db"},
	"admin-key":                        {"file-admin-key-0123456789", "env-admin-key-0123456789", "flag-admin-key-0123456789"},
	"log-level":                        {"debug", "warn", "error"},
	"log-format":                       {"json", "text", "json"},
	"insecure-no-auth":                 {"true", "false", "true"},
	"auto-create-topics":               {"true", "false", "true"},
	"allow-private-destinations":       {"true", "false", "true"},
	"shutdown-timeout":                 {"5s", "1m", "2h"},
	"retention-check-interval":         {"10s", "5m", "1d"},
	"webhook.disable-after":            {"1h", "2d", "10m"},
	"webhook.max-concurrency":          {"16", "512", "64"},
	"attempt-retention":                {"2h", "3d", "30d"},
	"success-sample":                   {"10", "0", "500"},
	"stream.token-secret":              {"file-secret-0123456789abcdef0123456789", "env-secret-0123456789abcdef0123456789", "flag-secret-0123456789abcdef0123456789"},
	"stream.allowed-origins":           {"a.example.com", "b.example.com,c.example.com", "*.example.org"},
	"stream.queue-size":                {"64", "4096", "128"},
	"stream.max-conns-per-key":         {"10", "20", "30"},
	"stream.max-subscriptions":         {"5", "50", "500"},
	"debug-addr":                       {"127.0.0.1:6060", "localhost:6061", ""},
	"sources-file":                     {"/etc/herald/sources.json", "sources.json", ""},
	"shutdown-drain-delay":             {"0s", "10s", "1m"},
	"http.read-timeout":                {"30s", "5m", "1h"},
	"http.idle-timeout":                {"1m", "30s", "10m"},
	"http.max-conns":                   {"100", "20000", "512"},
	"http.max-conns-per-addr":          {"16", "4096", "64"},
	"public-url":                       {"https://herald.example.com", "https://h.example.org", "http://127.0.0.1:8480"},
	"email.smtp-host":                  {"smtp.example.com", "mail.example.org", ""},
	"email.smtp-port":                  {"587", "465", "2525"},
	"email.smtp-tls":                   {"tls", "none", "starttls"},
	"email.smtp-auth":                  {"login", "plain", "login"},
	"email.smtp-username":              {"file-user", "env-user", "flag-user"},
	"email.smtp-password":              {"file-password", "env-password", "flag-password"},
	"email.smtp-ca-file":               {"/etc/herald/ca.pem", "ca.pem", ""},
	"email.from":                       {"Herald <a@example.com>", "b@example.com", "c@example.org"},
	"email.max-conns":                  {"2", "16", "4"},
	"email.rate-limit":                 {"10", "100", "0"},
	"sms.provider":                     {"twilio", "http", ""},
	"sms.from":                         {"+15550001111", "Herald", "+15550002222"},
	"sms.twilio-url":                   {"https://twilio.example.com", "http://127.0.0.1:9000", "https://api.example.org"},
	"sms.twilio-account-sid":           {"AC-file", "AC-env", "AC-flag"},
	"sms.twilio-auth-token":            {"token-file", "token-env", "token-flag"},
	"sms.twilio-messaging-service-sid": {"MG-file", "MG-env", ""},
	"sms.http-url":                     {"https://sms.example.com/send", "http://127.0.0.1:9001/sms", ""},
	"sms.http-method":                  {"PUT", "POST", "PUT"},
	"sms.http-header":                  {"Authorization: Bearer file", "X-Key: env", ""},
	"sms.http-body":                    {"{{.Text}}", "{{json .Text}}", ""},
	"sms.http-content-type":            {"text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-8"},
	"push.vapid-private-key":           {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", ""},
	"push.vapid-subject":               {"mailto:ops@example.com", "https://example.com/contact", ""},
	"push.fcm-credentials-file":        {"/etc/herald/fcm.json", "fcm.json", ""},
	"push.fcm-url":                     {"https://fcm.example.com", "http://127.0.0.1:9002", "https://fcm.googleapis.com"},
	"push.apns-key-file":               {"/etc/herald/apns.p8", "apns.p8", ""},
	"push.apns-key-id":                 {"KEYFILE001", "KEYENV0002", "KEYFLAG003"},
	"push.apns-team-id":                {"TEAMFILE01", "TEAMENV002", "TEAMFLAG03"},
	"push.apns-topic":                  {"com.example.file", "com.example.env", "com.example.flag"},
	"push.apns-url":                    {"https://api.sandbox.push.apple.com", "http://127.0.0.1:9003", "https://api.push.apple.com"},
	"audit.retention":                  {"2h", "30d", "365d"},
	"audit.publish":                    {"false", "true", "false"},
	"console.frame-ancestors":          {"https://app.example.com", "https://*.example.org http://localhost:3000", ""},
	"console.oidc.issuer":              {"https://id.example.com", "https://login.example.org/realms/ops", ""},
	"console.oidc.name":                {"Acme SSO", "Keycloak", ""},
	"console.oidc.client-id":           {"herald-console", "0oa1b2c3", ""},
	"console.oidc.client-secret":       {"s3cret-value", "another secret", ""},
	"console.oidc.redirect-url":        {"https://herald.example.com/console/oidc/callback", "http://localhost:8480/console/oidc/callback", ""},
	"console.oidc.scopes":              {"openid groups", "openid", "openid profile email"},
	"auth.oidc.issuer":                 {"https://id.example.com", "https://login.example.org/realms/ops", ""},
	"auth.oidc.audience":               {"herald", "herald,herald-staging", ""},
	"auth.oidc.subject-claim":          {"email", "preferred_username", "sub"},
	"auth.oidc.scopes-claim":           {"scope", "herald.scopes", ""},
	"auth.oidc.roles-claim":            {"groups", "realm_access.roles", ""},
	"auth.oidc.role-scopes":            {"ops=admin", "billing=publish:billing.> read:billing.>;ops=admin", ""},
	"auth.oidc.tenant-claim":           {"org_id", "herald_tenant", ""},
	"auth.introspection.url":           {"https://id.example.com/oauth2/introspect", "http://127.0.0.1:9000/introspect", ""},
	"auth.introspection.client-id":     {"herald", "herald-2", ""},
	"auth.introspection.client-secret": {"s3cret-file", "s3cret-env", ""},
	"auth.introspection.audience":      {"herald", "herald,api", ""},
	"auth.introspection.cache-ttl":     {"30s", "5m", "1h"},
	"auth.introspection.subject-claim": {"client_id", "username", "sub"},
	"auth.introspection.scopes-claim":  {"scope", "ext.scopes", ""},
	"auth.introspection.roles-claim":   {"groups", "ext.roles", ""},
	"auth.introspection.role-scopes":   {"ops=admin", "billing=publish:billing.>", ""},
	"auth.introspection.tenant-claim":  {"org_id", "ext.tenant", ""},
	"stream.presence-events":           {"true", "false", "true"},
	"usage.flush-interval":             {"1s", "1m", "10m"},
	"metrics.tenant-labels":            {"acme", "acme,globex", ""},
}

// TestEverySettingHasThreeForms checks the table against Config: every
// field is set by exactly one setting, and every setting works as a flag,
// an environment variable and a file key, with flag > env > file > default.
func TestEverySettingHasThreeForms(t *testing.T) {
	table := settings()

	// Every field has exactly one setting, and every setting one field.
	var c Config
	cv := reflect.ValueOf(&c).Elem()
	owner := map[uintptr]string{}
	for _, s := range table {
		p := reflect.ValueOf(s.bind(&c).addr()).Pointer()
		if prev, dup := owner[p]; dup {
			t.Errorf("settings %s and %s set the same field", prev, s.name)
		}
		owner[p] = s.name
	}
	for i := range cv.NumField() {
		if _, ok := owner[cv.Field(i).Addr().Pointer()]; !ok {
			t.Errorf("Config.%s has no setting in the table", cv.Type().Field(i).Name)
		}
	}
	if len(owner) != cv.NumField() {
		t.Errorf("%d settings for %d Config fields", len(owner), cv.NumField())
	}

	for _, s := range table {
		t.Run(s.name, func(t *testing.T) {
			smp, ok := samples[s.name]
			if !ok {
				t.Fatalf("no sample values for setting %s: add a row to samples", s.name)
			}
			// want returns the field's text after setting text.
			want := func(text string) string {
				var c Config
				b := s.bind(&c)
				if err := b.set(text); err != nil {
					t.Fatalf("sample %q does not parse: %v", text, err)
				}
				return b.text()
			}
			def := want(s.def)
			if want(smp[0]) == def || want(smp[1]) == want(smp[0]) || want(smp[2]) == want(smp[1]) {
				t.Fatalf("samples %q: the first must differ from the default %q, and each from the one before", smp, s.def)
			}
			file := writeFile(t, fmt.Sprintf("# test\n%s = %s\n", s.name, smp[0]))
			envVar := envName(s.name)
			flagArg := "-" + s.name + "=" + smp[2]

			tests := []struct {
				name string
				args []string
				env  map[string]string
				want string
			}{
				{"default", nil, nil, def},
				{"file alone", nil, map[string]string{"HERALD_CONFIG": file}, want(smp[0])},
				{"env alone", nil, map[string]string{envVar: smp[0]}, want(smp[0])},
				{"flag alone", []string{"-" + s.name + "=" + smp[0]}, nil, want(smp[0])},
				{"env over file", nil, map[string]string{"HERALD_CONFIG": file, envVar: smp[1]}, want(smp[1])},
				{"flag over env and file", []string{flagArg}, map[string]string{"HERALD_CONFIG": file, envVar: smp[1]}, want(smp[2])},
			}
			for _, tt := range tests {
				cfg, err := ParseConfig(tt.args, env(tt.env), io.Discard)
				if err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				if got := s.bind(&cfg).text(); got != tt.want {
					t.Errorf("%s: %s = %q, want %q", tt.name, s.name, got, tt.want)
				}
			}
		})
	}
}

func TestBoolFlagWithoutValue(t *testing.T) {
	cfg, err := ParseConfig([]string{"-insecure-no-auth", "--auto-create-topics"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.InsecureNoAuth || !cfg.AutoCreateTopics || cfg.AllowPrivateDestinations {
		t.Errorf("got %+v", cfg)
	}
	// An explicit false flag beats a true environment variable.
	cfg, err = ParseConfig([]string{"-insecure-no-auth=false"}, env(map[string]string{"HERALD_INSECURE_NO_AUTH": "true"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.InsecureNoAuth {
		t.Error("-insecure-no-auth=false lost to HERALD_INSECURE_NO_AUTH=true")
	}
}

func TestDefaults(t *testing.T) {
	want := Config{
		Addr:                    ":8480",
		DataDir:                 "./herald-data",
		LogLevel:                slog.LevelInfo,
		LogFormat:               "text",
		ShutdownTimeout:         30 * time.Second,
		RetentionCheckInterval:  time.Minute,
		WebhookDisableAfter:     5 * 24 * time.Hour,
		WebhookMaxConcurrency:   256,
		AttemptRetention:        7 * 24 * time.Hour,
		SuccessSample:           100,
		AuditRetention:          90 * 24 * time.Hour,
		AuditPublish:            true,
		StreamQueueSize:         1024,
		StreamMaxConnsPerKey:    1000,
		StreamMaxSubscriptions:  100,
		ShutdownDrainDelay:      5 * time.Second,
		HTTPReadTimeout:         time.Minute,
		HTTPIdleTimeout:         2 * time.Minute,
		HTTPMaxConns:            4096,
		HTTPMaxConnsPerAddr:     256,
		EmailSMTPTLS:            "starttls",
		EmailSMTPAuth:           "plain",
		EmailMaxConns:           8,
		SMSTwilioURL:            "https://api.twilio.com",
		SMSHTTPMethod:           "POST",
		SMSHTTPContentType:      "application/json",
		PushFCMURL:              "https://fcm.googleapis.com",
		PushAPNsURL:             "https://api.push.apple.com",
		ConsoleOIDCScopes:       "openid profile email",
		OIDCSubjectClaim:        "sub",
		OIDCRolesClaim:          "roles",
		IntrospectionCacheTTL:   time.Minute,
		IntrospectionSubject:    "sub",
		IntrospectionRolesClaim: "roles",
		UsageFlushInterval:      10 * time.Second,
	}
	if got := DefaultConfig(); got != want {
		t.Errorf("DefaultConfig() = %+v\nwant %+v", got, want)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}
	got, err := ParseConfig(nil, env(nil), io.Discard)
	if err != nil || got != want {
		t.Errorf("ParseConfig with nothing set = %+v, %v; want the defaults", got, err)
	}
}

func TestConfigFileFormat(t *testing.T) {
	file := writeFile(t, "\uFEFF# Herald settings\r\n"+
		"\r\n"+
		"   # an indented comment\n"+
		"addr=127.0.0.1:9000\r\n"+
		"  data-dir   =   \"  /srv/herald\\tdata  \"  \n"+
		"admin-key = key#with-hash-0123456789 \n"+
		"database-url = postgres://u:p%23ss@db/herald\n"+
		`log-format = "json"`+"\n"+
		"shutdown-timeout = 1d2h\n")
	cfg, err := ParseConfig([]string{"--config=" + file}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Addr = "127.0.0.1:9000"
	want.DataDir = "  /srv/herald\tdata  "             // quotes keep spaces; Go escapes apply
	want.AdminKey = "key#with-hash-0123456789"         // '#' inside a value is not a comment
	want.DatabaseURL = "postgres://u:p%23ss@db/herald" // nor is a '%'
	want.LogFormat = "json"
	want.ShutdownTimeout = 26 * time.Hour
	if cfg != want {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
		if cfg.AdminKey != want.AdminKey || cfg.DatabaseURL != want.DatabaseURL { // they print redacted
			t.Errorf("secrets differ: admin-key %q, database-url %q", string(cfg.AdminKey), string(cfg.DatabaseURL))
		}
	}

	// Empty values, quoted or not, are allowed.
	file = writeFile(t, "admin-key = \"\"\ndatabase-url =\n")
	if cfg, err := ParseConfig([]string{"-config", file}, env(nil), io.Discard); err != nil || cfg.AdminKey != "" || cfg.DatabaseURL != "" {
		t.Errorf("empty values: %v, %q, %q", err, string(cfg.AdminKey), string(cfg.DatabaseURL))
	}
}

func TestConfigFileErrors(t *testing.T) {
	file := writeFile(t, strings.Join([]string{
		"addr = :9000",       // 1 fine
		"data-dir /srv",      // 2 no '='
		" = value",           // 3 empty key
		"listen = :80",       // 4 unknown
		"addr = :9001",       // 5 repeated
		`log-format = "json`, // 6 half-quoted: kept as is, then invalid
		`data-dir = "a\qb"`,  // 7 bad escape
		"log-level = loud",   // 8 invalid value
	}, "\n"))
	_, err := ParseConfig([]string{"-config", file}, env(nil), io.Discard)
	if _, ok := errors.AsType[*usageError](err); !ok {
		t.Fatalf("err = %T %v, want a usage error", err, err)
	}
	msg := err.Error()
	for _, want := range []string{
		file + `:2: want "key = value", got "data-dir /srv"`,
		file + ":3: the key before '=' is empty",
		file + `:4: unknown setting "listen"; the settings are addr, data-dir,`,
		file + ":5: addr is already set on line 1",
		`log-format = "\"json" (from ` + file + `:6) is not accepted: want text or json`,
		file + ":7: data-dir: malformed quoted value",
		`log-level = "loud" (from ` + file + `:8) is not accepted: want debug, info, warn or error`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q; it is:\n%s", want, msg)
		}
	}
	if n := strings.Count(msg, "\n") + 1; n != 7 {
		t.Errorf("%d problems reported, want 7:\n%s", n, msg)
	}
}

func TestConfigFileNaming(t *testing.T) {
	fromEnv := writeFile(t, "addr = :9001\n")
	fromFlag := writeFile(t, "addr = :9002\n")

	cfg, err := ParseConfig(nil, env(map[string]string{"HERALD_CONFIG": fromEnv}), io.Discard)
	if err != nil || cfg.Addr != ":9001" {
		t.Errorf("HERALD_CONFIG: addr %q, err %v", cfg.Addr, err)
	}
	cfg, err = ParseConfig([]string{"-config", fromFlag}, env(map[string]string{"HERALD_CONFIG": fromEnv}), io.Discard)
	if err != nil || cfg.Addr != ":9002" {
		t.Errorf("-config over HERALD_CONFIG: addr %q, err %v", cfg.Addr, err)
	}

	missing := filepath.Join(t.TempDir(), "nope.conf")
	for _, tt := range []struct {
		args   []string
		env    map[string]string
		source string
	}{
		{[]string{"-config", missing}, nil, "-config"},
		{nil, map[string]string{"HERALD_CONFIG": missing}, "HERALD_CONFIG"},
	} {
		_, err := ParseConfig(tt.args, env(tt.env), io.Discard)
		want := "cannot read the config file named by " + tt.source + ": open " + missing
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("missing file: err = %v, want it to contain %q", err, want)
		}
	}
}

// TestValidationMessages checks that every problem is reported at once and
// that each names the setting, the value, its source and what is accepted.
func TestValidationMessages(t *testing.T) {
	file := writeFile(t, "shutdown-timeout = 0s\n")
	_, err := ParseConfig(
		[]string{"-addr", "localhost", "-log-format=yaml", "-config", file},
		env(map[string]string{
			"HERALD_LOG_LEVEL":                "loud",
			"HERALD_RETENTION_CHECK_INTERVAL": "500ms",
			"HERALD_INSECURE_NO_AUTH":         "maybe",
			"HERALD_ADMIN_KEY":                "hunter2",
			"HERALD_DATABASE_URL":             "mysql://root:pw@db/x",
			"HERALD_DATA_DIR":                 "  ",
			"HERALD_NODE_ID":                  "node 1",
		}),
		io.Discard)
	if _, ok := errors.AsType[*usageError](err); !ok {
		t.Fatalf("err = %T %v, want a usage error", err, err)
	}
	want := []string{
		`addr = "localhost" (from -addr) is not accepted: want host:port, such as ":8480" or "127.0.0.1:8480"`,
		`data-dir = "  " (from HERALD_DATA_DIR) is not accepted: want a non-empty path`,
		`node-id = "node 1" (from HERALD_NODE_ID) is not accepted: want "" or 1 to 64 letters, digits, '.', '_' or '-'`,
		`database-url = [redacted] (20 characters) (from HERALD_DATABASE_URL) is not accepted: want "" (SQLite in data-dir), sqlite:PATH, or a postgres:// or postgresql:// URL`,
		`admin-key = [redacted] (7 characters) (from HERALD_ADMIN_KEY) is not accepted: want "" or at least 16 characters without spaces (make one with: openssl rand -base64 32)`,
		`log-level = "loud" (from HERALD_LOG_LEVEL) is not accepted: want debug, info, warn or error`,
		`log-format = "yaml" (from -log-format) is not accepted: want text or json`,
		`insecure-no-auth = "maybe" (from HERALD_INSECURE_NO_AUTH) is not accepted: want true or false`,
		`shutdown-timeout = "0s" (from ` + file + `:1) is not accepted: want a duration above zero, such as 30s or 2m`,
		`retention-check-interval = "500ms" (from HERALD_RETENTION_CHECK_INTERVAL) is not accepted: want a duration of at least 1s, such as 1m or 1h`,
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, secret := range []string{"hunter2", "root:pw"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows the secret %q", secret)
		}
	}
}

func TestValidateHandBuiltConfig(t *testing.T) {
	c := DefaultConfig()
	c.Addr = "nope"
	c.ShutdownTimeout = 0
	err := c.Validate()
	want := `addr = "nope" is not accepted: want host:port, such as ":8480" or "127.0.0.1:8480"` + "\n" +
		`shutdown-timeout = "0s" is not accepted: want a duration above zero, such as 30s or 2m`
	if err == nil || err.Error() != want {
		t.Errorf("Validate() = %v\nwant %s", err, want)
	}
}

func TestParseConfigArguments(t *testing.T) {
	var stderr bytes.Buffer
	_, err := ParseConfig([]string{"-h"}, env(nil), &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: err = %v, want flag.ErrHelp", err)
	}
	for _, s := range settings() {
		if forms := fmt.Sprintf("-%s, %s, %s ", s.name, envName(s.name), s.name); !strings.Contains(stderr.String(), forms) {
			t.Errorf("usage lacks %q", forms)
		}
	}
	if !strings.Contains(stderr.String(), "-config PATH, HERALD_CONFIG") {
		t.Error("usage does not explain -config")
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-listen", ":80"}, "flag provided but not defined: -listen"},
		{[]string{"-addr"}, "flag needs an argument: -addr"},
		{[]string{"-addr", ":80", "extra"}, `unexpected argument "extra"`},
	} {
		_, err := ParseConfig(tt.args, env(nil), io.Discard)
		if _, ok := errors.AsType[*usageError](err); !ok || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want a usage error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestEnvNames(t *testing.T) {
	for name, want := range map[string]string{
		"addr":            "HERALD_ADDR",
		"data-dir":        "HERALD_DATA_DIR",
		"webhook.timeout": "HERALD_WEBHOOK_TIMEOUT",
	} {
		if got := envName(name); got != want {
			t.Errorf("envName(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestSecretRedaction(t *testing.T) {
	const dsn = "postgres://herald:s3cr3t-pw@db/herald"
	const key = "admin-key-s3cr3t-0123456789"
	c := DefaultConfig()
	c.DatabaseURL = dsn
	c.AdminKey = key

	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v %#v %s %v %q\n", c, c, c, c.AdminKey, c.DatabaseURL, c.AdminKey)
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "config", c, "admin_key", c.AdminKey)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "config", c, "database_url", c.DatabaseURL)
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)

	for _, secret := range []string{"s3cr3t"} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("a secret leaked:\n%s", out.String())
		}
	}
	if !strings.Contains(out.String(), "[redacted]") {
		t.Errorf("no redaction marker in:\n%s", out.String())
	}
	if string(c.AdminKey) != key || string(c.DatabaseURL) != dsn {
		t.Error("string(Secret) does not return the value")
	}
	if Secret("").String() != "" {
		t.Error("an empty secret should print as empty, showing it is unset")
	}
}

// TestREADMEListsEverySetting keeps the README's configuration table in
// step with the settings.
func TestREADMEListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings() {
		def := "`" + s.def + "`"
		if s.def == "" {
			def = "empty"
		}
		if row := "| `" + s.name + "` | " + def + " |"; !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no row starting %q", row)
		}
	}
}
