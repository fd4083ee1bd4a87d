package archive

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"

	"github.com/heraldhq/herald"
)

// fakeS3 runs an S3-compatible server in-process with the bucket "logs".
// With hostBucket, buckets are addressed by host name (virtual-host style:
// bucket.host).
func fakeS3(t *testing.T, hostBucket bool) (*httptest.Server, *s3mem.Backend) {
	t.Helper()
	be := s3mem.New()
	if err := be.CreateBucket("logs"); err != nil {
		t.Fatal(err)
	}
	opts := []gofakes3.Option{gofakes3.WithTimeSkewLimit(0)}
	if hostBucket {
		opts = append(opts, gofakes3.WithHostBucket(true)) // the bucket is the first label of the Host
	}
	srv := httptest.NewServer(gofakes3.New(be, opts...).Server())
	t.Cleanup(srv.Close)
	return srv, be
}

func TestS3PathStyle(t *testing.T) {
	t.Parallel()
	srv, _ := fakeS3(t, false)
	ch := New(ChannelConfig{AllowPrivate: true}, nil, nil)
	config := validConfig(t, ch, fmt.Sprintf(`{"format":"parquet","partition":[{"key":"org"}],"destination":{"type":"s3","bucket":"logs","path":"prod/","endpoint":%q,"region":"us-east-1","path_style":true,"access_key_id":"AKIAFAKE","secret_access_key":"fake-secret"}}`, srv.URL))
	testS3(t, ch, config)
}

func TestS3VirtualHost(t *testing.T) {
	t.Parallel()
	srv, _ := fakeS3(t, true)
	ch := New(ChannelConfig{AllowPrivate: true}, nil, nil)
	// The bucket is addressed as logs.s3.herald.test: resolve every name
	// to the fake server, and check that the bucket came in the host.
	var mu sync.Mutex
	var hosts []string
	ch.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		hosts = append(hosts, addr)
		mu.Unlock()
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	config := validConfig(t, ch, fmt.Sprintf(`{"partition":[{"key":"org"}],"destination":{"type":"s3","bucket":"logs","endpoint":"http://s3.herald.test:%s","region":"us-east-1","access_key_id":"AKIAFAKE","secret_access_key":"fake-secret"}}`, port))
	testS3(t, ch, config)
	mu.Lock()
	defer mu.Unlock()
	if len(hosts) == 0 || !strings.HasPrefix(hosts[0], "logs.s3.herald.test:") {
		t.Fatalf("dialed %v, want the bucket in the host name", hosts)
	}
}

func testS3(t *testing.T, ch *Channel, config json.RawMessage) {
	s := open(t, ch, config)
	allDelivered(t, deliver(t, s,
		ev("logs.app", 1, t0, `{"org":"acme"}`),
		ev("logs.app", 2, t0.Add(time.Hour), `{"org":"globex"}`),
	))
	hits, page := query(t, ch, config, Query{From: t0.Add(-time.Hour), To: t0.Add(2 * time.Hour)})
	if got := seqs(hits); got != "logs.app/1 logs.app/2" || page.Files != 2 {
		t.Fatalf("query: %s from %d files", got, page.Files)
	}
	hits, page = query(t, ch, config, Query{From: t0.Add(-time.Hour), To: t0.Add(2 * time.Hour), Partition: map[string]string{"org": "globex"}})
	if got := seqs(hits); got != "logs.app/2" || page.Files != 1 {
		t.Fatalf("pruned query: %s from %d files", got, page.Files)
	}
	// The objects are where a reader expects them.
	objs := s.objs.(*s3Objects)
	var keys []string
	for o := range objs.cl.ListObjects(t.Context(), "logs", minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	joined := strings.Join(keys, "\n")
	for _, want := range []string{
		"org=acme/year=2026/month=12/day=07/hour=15/_manifest.json",
		"org=globex/year=2026/month=12/day=07/hour=16/logs.app-00000000000000000002-00000000000000000002",
	} {
		if !strings.Contains(joined, want) {
			t.Fatalf("objects:\n%s\nwant one containing %s", joined, want)
		}
	}
}

func TestS3Unreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	ch := New(ChannelConfig{AllowPrivate: true}, nil, nil)
	config := validConfig(t, ch, fmt.Sprintf(`{"destination":{"type":"s3","bucket":"logs","endpoint":"http://%s","path_style":true}}`, addr))
	s := open(t, ch, config)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	batch := deliverCtx(ctx, s, ev("a", 1, t0, `{}`))
	if batch[0].Outcome != herald.Failed {
		t.Fatalf("delivery to a dead S3 endpoint: %+v, want Failed", batch[0])
	}
}
