package api

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/heraldhq/herald"
)

// CloudEvents media types (HTTP protocol binding 1.0).
const (
	ceStructuredType = "application/cloudevents+json"
	ceBatchType      = "application/cloudevents-batch+json"
	ceHeaderPrefix   = "Ce-" // canonical form of "ce-"
	// ceSpecVersion is the one CloudEvents version Herald accepts.
	ceSpecVersion = "1.0"
)

// ceStructuredLimit is the body limit of a structured-mode publish: room
// for the payload as base64 plus the envelope's attributes. The decoded
// payload is then held to the topic's own limit.
func ceStructuredLimit(maxEventBytes int) int64 {
	return (int64(maxEventBytes)+2)/3*4 + 64<<10
}

// applyBinaryCloudEvent maps CloudEvents binary-mode headers onto e: ce-id
// to ID, ce-type to Type, ce-subject to Key, and every other ce-* attribute
// to a header named "ce-<attr>". Values are percent-decoded as the HTTP
// binding requires. It reports whether any ce-* header was present: a
// request with one is a CloudEvent, and must then carry the required
// attributes (see checkCloudEvent); errors name the header ("ce-source").
func applyBinaryCloudEvent(h http.Header, e *herald.Event) (bool, error) {
	found := false
	for name, values := range h {
		attr, ok := strings.CutPrefix(name, ceHeaderPrefix)
		if !ok || len(values) == 0 {
			continue
		}
		found = true
		attr = strings.ToLower(attr)
		v, err := url.PathUnescape(strings.Join(values, ","))
		if err != nil {
			return found, &herald.Error{Code: herald.CodeInvalid, Field: "ce-" + attr,
				Message: "header ce-" + attr + " has a malformed percent-encoding", Err: err}
		}
		if err := checkCEHeaderValue("ce-"+attr, v); err != nil {
			return found, err
		}
		switch attr {
		case "id":
			e.ID = v
		case "type":
			e.Type = v
		case "subject":
			e.Key = v
		default:
			setHeader(e, "ce-"+attr, v)
		}
	}
	if !found {
		return false, nil
	}
	return true, checkCloudEvent("ce-", e)
}

// parseStructuredCloudEvent reads a CloudEvents structured-mode JSON body:
// id, type, subject (to Key), data (payload = the value's raw JSON bytes,
// content type datacontenttype or application/json) or data_base64
// (payload = the decoded bytes, content type datacontenttype or
// application/octet-stream). Other attributes become headers "ce-<attr>",
// strings as they are and other values as compact JSON text; null
// attributes are absent. The event must carry the required attributes
// (see checkCloudEvent). Errors are CodeInvalid naming the attribute.
func parseStructuredCloudEvent(body []byte) (*herald.Event, error) {
	var attrs map[string]json.RawMessage
	if err := unmarshalStrict(body, &attrs, ""); err != nil {
		return nil, err
	}
	if attrs == nil {
		return nil, herald.Errorf(herald.CodeInvalid, "a structured CloudEvent must be a JSON object")
	}
	e := &herald.Event{}
	var contentType string
	var data json.RawMessage
	var dataBase64 *string
	for name, raw := range attrs {
		if isJSONNull(raw) {
			continue
		}
		if !validCEAttrName(name) {
			return nil, herald.FieldErrorf(name, "CloudEvents attribute names are lower-case letters and digits, got %q", name)
		}
		switch name {
		case "data":
			data = raw
			continue
		case "data_base64":
			b64, err := ceString(name, raw)
			if err != nil {
				return nil, err
			}
			dataBase64 = &b64
			continue
		}
		v, err := ceAttr(name, raw)
		if err != nil {
			return nil, err
		}
		switch name {
		case "id":
			e.ID = v
		case "type":
			e.Type = v
		case "subject":
			e.Key = v
		case "datacontenttype":
			contentType = v
		default:
			setHeader(e, "ce-"+name, v)
		}
	}
	if err := checkCloudEvent("", e); err != nil {
		return nil, err
	}
	switch {
	case data != nil && dataBase64 != nil:
		return nil, herald.FieldErrorf("data", "data and data_base64 are mutually exclusive")
	case data != nil:
		e.Payload = []byte(data)
		e.ContentType = cmp.Or(contentType, "application/json")
	case dataBase64 != nil:
		b, err := decodeBase64(*dataBase64)
		if err != nil {
			return nil, &herald.Error{Code: herald.CodeInvalid, Field: "data_base64", Message: "data_base64 is not valid base64", Err: err}
		}
		e.Payload = b
		e.ContentType = cmp.Or(contentType, "application/octet-stream")
	default:
		e.Payload = []byte{}
		e.ContentType = cmp.Or(contentType, "application/octet-stream")
	}
	return e, nil
}

// ceStringAttrs are the context attributes whose JSON value must be a
// string; any other attribute may be any JSON value.
var ceStringAttrs = map[string]bool{"specversion": true, "id": true, "source": true, "type": true, "subject": true, "datacontenttype": true}

// checkCloudEvent enforces the context attributes CloudEvents 1.0 requires
// of every event, once e holds what the request gave: specversion "1.0",
// and non-empty id, source (a URI-reference) and type. Herald assigns none
// of them, not even the id: the spec makes the producer responsible for
// it (source and id together identify the event, and a consumer drops
// repeats by them), which only the producer can keep stable across its
// retries. prefix is "ce-" in binary mode and "" in structured mode, so
// the error names the attribute as the request spelled it.
func checkCloudEvent(prefix string, e *herald.Event) error {
	missing := func(attr string) error {
		return herald.FieldErrorf(prefix+attr, "the CloudEvent has no %s%s: CloudEvents 1.0 requires specversion, id, source and type", prefix, attr)
	}
	specversion, source := e.Headers["ce-specversion"], e.Headers["ce-source"]
	switch {
	case specversion == "":
		return missing("specversion")
	case specversion != ceSpecVersion:
		return herald.FieldErrorf(prefix+"specversion", "%sspecversion is %q; Herald accepts CloudEvents %q only", prefix, specversion, ceSpecVersion)
	case e.ID == "":
		return missing("id")
	case source == "":
		return missing("source")
	case e.Type == "":
		return missing("type")
	}
	if _, err := url.Parse(source); err != nil {
		return &herald.Error{Code: herald.CodeInvalid, Field: prefix + "source",
			Message: prefix + "source must be a URI-reference, such as /orders or https://shop.example/orders", Err: err}
	}
	return nil
}

// ceAttr returns the text of a structured-mode attribute, checked to be
// something a delivery can carry in a request header.
func ceAttr(name string, raw json.RawMessage) (string, error) {
	var v string
	var err error
	if ceStringAttrs[name] {
		v, err = ceString(name, raw)
	} else {
		v, err = ceText(name, raw)
	}
	if err != nil {
		return "", err
	}
	return v, checkCEHeaderValue(name, v)
}

// checkCEHeaderValue refuses an attribute value that deliveries could not
// carry: each attribute ends up in a request header (the subject as
// Herald-Event-Key, datacontenttype as Content-Type, the others as
// ce-<attr>). field is the attribute as the request named it.
func checkCEHeaderValue(field, v string) error {
	if !herald.ValidHeaderValue(v) {
		return herald.FieldErrorf(field, "%s must be valid UTF-8 without control characters: deliveries carry it in a request header", field)
	}
	return nil
}

// ceText returns a string attribute's value, or another JSON value as its
// compact JSON text.
func ceText(name string, raw json.RawMessage) (string, error) {
	if len(raw) > 0 && raw[0] == '"' {
		return ceString(name, raw)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", &herald.Error{Code: herald.CodeInvalid, Field: name, Message: "attribute " + name + " is not valid JSON", Err: err}
	}
	return buf.String(), nil
}

func ceString(name string, raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", &herald.Error{Code: herald.CodeInvalid, Field: name, Message: "attribute " + name + " must be a string", Err: err}
	}
	return s, nil
}

func isJSONNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// validCEAttrName accepts CloudEvents attribute names: lower-case letters
// and digits, plus the JSON format's data_base64.
func validCEAttrName(name string) bool {
	if name == "data_base64" {
		return true
	}
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// decodeBase64 accepts standard base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	if strings.HasSuffix(s, "=") || len(s)%4 == 0 {
		return base64.StdEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

func setHeader(e *herald.Event, name, value string) {
	if e.Headers == nil {
		e.Headers = make(map[string]string)
	}
	e.Headers[name] = value
}
