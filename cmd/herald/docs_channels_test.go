package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/heraldhq/herald/channel/kafka"
	"github.com/heraldhq/herald/channel/redis"
	"github.com/heraldhq/herald/client"
)

// The curl examples of docs/channels.md run from the page itself, against
// a real server and kfake (Kafka) or the test Redis: their broker
// addresses are the only thing the test changes.

const channelsDoc = "../../docs/channels.md"

// runDocScript runs a shell example with HERALD_URL and HERALD_KEY set
// and returns its standard output.
func runDocScript(t *testing.T, m *Main, script string) string {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	cmd := exec.CommandContext(t.Context(), "sh", "-e", "-c", script)
	cmd.Env = append(os.Environ(), "HERALD_URL="+m.URL(), "HERALD_KEY="+testAdminKey)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the example failed: %v\n%s\noutput: %s", err, script, out)
	}
	return string(out)
}

// runDocCLI runs the herald command lines of a CLI example through the
// CLI against m, each argument passed through fix, and returns their
// output.
func runDocCLI(t *testing.T, m *Main, block string, fix *strings.Replacer) string {
	t.Helper()
	env := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}
	var all strings.Builder
	for line := range strings.Lines(block) {
		words := shellWords(t, strings.TrimSpace(line))
		if len(words) < 2 || words[0] != "herald" {
			t.Fatalf("%q is not a herald command", line)
		}
		args := words[1:]
		for i := range args {
			args[i] = fix.Replace(args[i])
		}
		var out, errOut bytes.Buffer
		if code := run(t.Context(), args, strings.NewReader(""), &out, &errOut, func(k string) string { return env[k] }); code != exitOK {
			t.Fatalf("%s: exit %d\n%s%s", line, code, out.String(), errOut.String())
		}
		all.WriteString(out.String())
	}
	return all.String()
}

func TestDocsChannelsKafkaCLI(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	broker := kc.ListenAddrs()[0]
	m, _ := testServer(t, t.TempDir(), nil)
	if _, _, err := adminClient(m).PutTopic(t.Context(), "deposits", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	out := runDocCLI(t, m, docExamples(t, channelsDoc)["kafka-cli"], strings.NewReplacer("localhost:9092", broker))
	if !strings.Contains(out, "channel:") || !strings.Contains(out, "kafka") || !strings.Contains(out, "active") {
		t.Fatalf("the CLI example printed %s", out)
	}
	kt := consumeKafka(t, broker, "herald.deposits")
	eventually(t, "the record of the CLI example", func() bool {
		got := kt.byKey()["wallet-7"]
		return len(got) == 1 && got[0] == `{"wallet":"wallet-7","amount":250}`
	})
}

func TestDocsChannelsRedisCLI(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		t.Skip("HERALD_TEST_REDIS is not set")
	}
	rc := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	defer rc.Close()
	if err := rc.Ping(t.Context()).Err(); err != nil {
		t.Skipf("HERALD_TEST_REDIS=%s: %v", addr, err)
	}
	m, _ := testServer(t, t.TempDir(), nil)
	if _, _, err := adminClient(m).PutTopic(t.Context(), "deposits", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("herald-doc-cli-%d", time.Now().UnixNano())
	t.Cleanup(func() { rc.Del(context.Background(), prefix+":deposits") })
	runDocCLI(t, m, docExamples(t, channelsDoc)["redis-cli"], strings.NewReplacer("localhost:6379", addr, "herald:{topic}", prefix+":{topic}"))
	eventually(t, "the entry of the CLI example", func() bool {
		msgs, err := rc.XRange(t.Context(), prefix+":deposits", "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(msgs) == 1 && msgs[0].Values[redis.FieldKey] == "wallet-7"
	})
}

// TestCLIChannelUsage checks the CLI's refusals of a channel subscription
// it can see are wrong before asking the server.
func TestCLIChannelUsage(t *testing.T) {
	t.Parallel()
	env := func(string) string { return "" }
	for _, args := range [][]string{
		{"subscriptions", "create", "deposits", "--channel", "kafka"},
		{"subscriptions", "create", "deposits", "https://example.com/hook", "--channel", "kafka", "--config", `{"brokers":["k:9092"]}`},
		{"subscriptions", "create", "deposits", "--channel", "kafka", "--config", `["k:9092"]`},
		{"subscriptions", "create", "deposits"},
	} {
		var out, errOut bytes.Buffer
		if code := run(t.Context(), args, strings.NewReader(""), &out, &errOut, env); code != exitUsage {
			t.Errorf("%q: exit %d, want %d (usage)\n%s", args, code, exitUsage, errOut.String())
		}
	}
}

func TestDocsChannelsKafkaExample(t *testing.T) {
	t.Parallel()
	ex := docExamples(t, channelsDoc)
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	broker := kc.ListenAddrs()[0]
	m, _ := testServer(t, t.TempDir(), nil)
	if _, _, err := adminClient(m).PutTopic(t.Context(), "deposits", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	sub := ex["kafka-subscribe"]
	if !strings.Contains(sub, "localhost:9092") {
		t.Fatal("the kafka example no longer names localhost:9092")
	}
	out := runDocScript(t, m, strings.ReplaceAll(sub, "localhost:9092", broker))
	if !strings.Contains(out, `"state":"active"`) || !strings.Contains(out, `"channel":"kafka"`) {
		t.Fatalf("the subscribe example answered %s", out)
	}
	runDocScript(t, m, ex["kafka-publish"])
	kt := consumeKafka(t, broker, "herald.deposits")
	eventually(t, "the record of the example", func() bool {
		got := kt.byKey()["wallet-7"]
		return len(got) == 1 && got[0] == `{"wallet":"wallet-7","amount":250}`
	})
}

func TestDocsChannelsRedisExample(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		t.Skip("HERALD_TEST_REDIS is not set")
	}
	rc := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	defer rc.Close()
	if err := rc.Ping(t.Context()).Err(); err != nil {
		t.Skipf("HERALD_TEST_REDIS=%s: %v", addr, err)
	}
	ex := docExamples(t, channelsDoc)
	m, _ := testServer(t, t.TempDir(), nil)
	if _, _, err := adminClient(m).PutTopic(t.Context(), "deposits", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("herald-doc-%d", time.Now().UnixNano()) // the Redis is shared
	t.Cleanup(func() { rc.Del(context.Background(), prefix+":deposits") })
	sub := ex["redis-subscribe"]
	if !strings.Contains(sub, "localhost:6379") || !strings.Contains(sub, `"herald:{topic}"`) {
		t.Fatal("the redis example no longer names localhost:6379 and herald:{topic}")
	}
	out := runDocScript(t, m, strings.NewReplacer("localhost:6379", addr, `"herald:{topic}"`, `"`+prefix+`:{topic}"`).Replace(sub))
	if !strings.Contains(out, `"state":"active"`) || !strings.Contains(out, `"maxlen":1000000`) {
		t.Fatalf("the subscribe example answered %s", out)
	}
	runDocScript(t, m, ex["kafka-publish"]) // the page publishes once for both
	eventually(t, "the entry of the example", func() bool {
		msgs, err := rc.XRange(t.Context(), prefix+":deposits", "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(msgs) == 1 && msgs[0].Values[redis.FieldPayload] == `{"wallet":"wallet-7","amount":250}` && msgs[0].Values[redis.FieldKey] == "wallet-7"
	})
}

// TestOpenAPIChannelConfigs checks that the OpenAPI schema of each
// channel's config lists exactly the members the channel reads.
func TestOpenAPIChannelConfigs(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for name, typ := range map[string]reflect.Type{"KafkaConfig": reflect.TypeFor[kafka.Config](), "RedisConfig": reflect.TypeFor[redis.Config]()} {
		want := jsonMembers(typ)
		var got []string
		for p := range doc.Components.Schemas[name].Properties {
			got = append(got, p)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s documents %v; the channel reads %v", name, got, want)
		}
	}
}

// jsonMembers returns the JSON member names of a struct, embedded
// structs flattened, sorted.
func jsonMembers(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			out = append(out, jsonMembers(f.Type)...)
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
