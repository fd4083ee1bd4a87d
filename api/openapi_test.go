package api

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
)

// TestOpenAPICoversRoutes keeps the document and the mux in step: every
// registered route is documented and every documented operation exists.
func TestOpenAPICoversRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	s := New(Config{}, Deps{})

	registered := map[string]bool{}
	for _, r := range s.routes {
		method, path, _ := strings.Cut(r.pattern, " ")
		registered[strings.ToLower(method)+" "+path] = true
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for method := range item {
			if method == "parameters" {
				continue
			}
			documented[method+" "+path] = true
		}
	}
	for r := range registered {
		if !documented[r] {
			t.Errorf("route %q is not in openapi.json", r)
		}
	}
	for d := range documented {
		if !registered[d] {
			t.Errorf("openapi.json documents %q, which is not a route", d)
		}
	}
	if len(registered) == 0 {
		t.Fatal("no routes registered")
	}
}

// TestOpenAPIConsistent checks the document against itself and the API's
// conventions: references resolve, path parameters are declared, errors
// are problems, every response names X-Request-Id, and the access rules
// match the routes'.
func TestOpenAPIConsistent(t *testing.T) {
	doc := loadOpenAPI(t)
	var raw any
	if err := json.Unmarshal(openAPIDocument, &raw); err != nil {
		t.Fatal(err)
	}
	// Every $ref resolves.
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if _, err := resolve(raw, ref); err != nil {
					t.Errorf("$ref %s: %v", ref, err)
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(raw)

	isPublic := map[string]bool{}
	for _, r := range New(Config{}, Deps{}).routes {
		isPublic[r.pattern] = r.access == public
	}

	opIDs := map[string]bool{}
	pathParam := regexp.MustCompile(`\{([^}]+)\}`)
	for path, item := range doc.Paths {
		var shared []any
		if p, ok := item["parameters"]; ok {
			if err := json.Unmarshal(p, &shared); err != nil {
				t.Fatal(err)
			}
		}
		for method, opRaw := range item {
			if method == "parameters" {
				continue
			}
			where := strings.ToUpper(method) + " " + path
			var op struct {
				OperationID string                     `json:"operationId"`
				Parameters  []any                      `json:"parameters"`
				Responses   map[string]json.RawMessage `json:"responses"`
				Security    []map[string]any           `json:"security"`
				Description string                     `json:"description"`
			}
			if err := json.Unmarshal(opRaw, &op); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if op.OperationID == "" || opIDs[op.OperationID] {
				t.Errorf("%s: missing or repeated operationId %q", where, op.OperationID)
			}
			opIDs[op.OperationID] = true
			if op.Description == "" {
				t.Errorf("%s: no description", where)
			}

			declared := map[string]bool{}
			for _, p := range slices.Concat(shared, op.Parameters) {
				pm := deref(t, raw, p)
				if pm["in"] == "path" {
					declared[pm["name"].(string)] = true
				}
			}
			for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
				if !declared[m[1]] {
					t.Errorf("%s: path parameter %s not declared", where, m[1])
				}
			}

			if len(op.Responses) == 0 {
				t.Errorf("%s: no responses", where)
			}
			for status, rr := range op.Responses {
				var r any
				_ = json.Unmarshal(rr, &r)
				resp := deref(t, raw, r)
				headers, _ := resp["headers"].(map[string]any)
				if _, ok := headers["X-Request-Id"]; !ok {
					t.Errorf("%s %s: response does not name X-Request-Id", where, status)
				}
				if status[0] == '4' || status[0] == '5' {
					content, _ := resp["content"].(map[string]any)
					if _, ok := content[problemContentType]; !ok || len(content) != 1 {
						t.Errorf("%s %s: error response is not only %s", where, status, problemContentType)
					}
				}
			}
			if _, ok := op.Responses["500"]; !ok {
				t.Errorf("%s: no 500 response", where)
			}
			if isPublic[where] {
				if op.Security == nil || len(op.Security) != 0 {
					t.Errorf("%s: public route must have security: []", where)
				}
				continue
			}
			if op.Security != nil && len(op.Security) == 0 {
				t.Errorf("%s: needs a key but is documented as public", where)
			}
			if _, ok := op.Responses["401"]; !ok {
				t.Errorf("%s: no 401 response", where)
			}
		}
	}

	// The problem type list names every code the API can answer with.
	problem, err := resolve(raw, "#/components/schemas/Problem")
	if err != nil {
		t.Fatal(err)
	}
	typeDesc := problem.(map[string]any)["properties"].(map[string]any)["type"].(map[string]any)["description"].(string)
	for _, code := range append(herald.Codes(), codeMethodNotAllowed) {
		if !strings.Contains(typeDesc, string(code)) {
			t.Errorf("Problem.type description does not list %q", code)
		}
	}
}

type openAPIDoc struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	return doc
}

// resolve follows a local JSON pointer reference.
func resolve(root any, ref string) (any, error) {
	ptr, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("not a local reference")
	}
	cur := root
	for part := range strings.SplitSeq(ptr, "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s is not an object", part)
		}
		if cur, ok = m[part]; !ok {
			return nil, fmt.Errorf("no %s", part)
		}
	}
	return cur, nil
}

func deref(t *testing.T, root, v any) map[string]any {
	t.Helper()
	m, _ := v.(map[string]any)
	if ref, ok := m["$ref"].(string); ok {
		r, err := resolve(root, ref)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		m, _ = r.(map[string]any)
	}
	return m
}
