package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/heraldhq/herald/channel"
)

// s3Objects keeps files in a bucket of an S3-compatible object store. A
// PUT of a whole object (or the completion of a multipart upload, which
// minio-go uses above its part size) is atomic: readers see the whole
// object or none, so no temporary name is needed.
type s3Objects struct {
	cl     *minio.Client
	bucket string
	prefix string // "" or ending in "/"
	where  string
}

// newS3Objects makes a client for the destination. Connections go through
// the SSRF guard unless private addresses are allowed.
// dial, when not nil, replaces the guarded dialer (tests resolve a
// virtual-host bucket's name with it).
func newS3Objects(d Destination, allowPrivate bool, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*s3Objects, error) {
	host, secure := "s3.amazonaws.com", true
	if d.Endpoint != "" {
		u, err := url.Parse(d.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("archive: endpoint %q: %w", d.Endpoint, err)
		}
		host, secure = u.Host, u.Scheme == "https"
	}
	lookup := minio.BucketLookupAuto
	if d.PathStyle {
		lookup = minio.BucketLookupPath
	} else if d.Endpoint != "" {
		lookup = minio.BucketLookupDNS
	}
	var creds *credentials.Credentials
	if d.AccessKeyID != "" {
		creds = credentials.NewStaticV4(d.AccessKeyID, d.SecretAccessKey, d.SessionToken)
	} else {
		creds = credentials.NewStatic("", "", "", credentials.SignatureAnonymous)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, ControlContext: channel.DialControl(allowPrivate)}
	dialContext := dialer.DialContext
	if dial != nil {
		dialContext = dial
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialContext,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		ForceAttemptHTTP2:     true,
	}
	cl, err := minio.New(host, &minio.Options{
		Creds: creds, Secure: secure, Region: d.Region, BucketLookup: lookup, Transport: transport,
	})
	if err != nil {
		return nil, fmt.Errorf("archive: s3 client for %s: %w", host, err)
	}
	prefix := trimSlash(d.Path)
	if prefix != "" {
		prefix += "/"
	}
	return &s3Objects{cl: cl, bucket: d.Bucket, prefix: prefix, where: "s3://" + d.Bucket + "/" + prefix}, nil
}

func (s *s3Objects) Put(ctx context.Context, key string, data []byte) error {
	ct := "application/octet-stream"
	if strings.HasSuffix(key, ".json") {
		ct = "application/json"
	}
	_, err := s.cl.PutObject(ctx, s.bucket, s.prefix+key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{ContentType: ct})
	return err
}

func (s *s3Objects) Get(ctx context.Context, key string) ([]byte, error) {
	obj, err := s.cl.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s3Err(err)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		return nil, s3Err(err)
	}
	return data, nil
}

func (s *s3Objects) Dirs(ctx context.Context, prefix string) ([]string, error) {
	full := s.prefix + prefix
	var out []string
	for o := range s.cl.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: full, Recursive: false}) {
		if o.Err != nil {
			return nil, s3Err(o.Err)
		}
		if name, ok := strings.CutSuffix(strings.TrimPrefix(o.Key, full), "/"); ok && name != "" && !strings.Contains(name, "/") {
			out = append(out, name)
		}
	}
	return out, nil
}

func (s *s3Objects) Where() string { return s.where }

// s3Err turns a missing key into fs.ErrNotExist.
func s3Err(err error) error {
	if r := minio.ToErrorResponse(err); r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound && r.Code != "NoSuchBucket" {
		return fmt.Errorf("%w: %s", fs.ErrNotExist, err)
	}
	return err
}

// isNotExist reports whether err says an object does not exist.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
