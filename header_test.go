package herald

import "testing"

func TestValidHeader(t *testing.T) {
	t.Parallel()
	values := map[string]bool{
		"":               true,
		"text/plain":     true,
		"a\tb":           true,
		"clé été":        true,
		"a\rb":           false,
		"a\nb":           false,
		"a\x00b":         false,
		"a\x07b":         false,
		"a\x7fb":         false,
		"\xc3\x28":       false, // not UTF-8
		"v\r\nX-Evil: 1": false,
	}
	for v, want := range values {
		if got := ValidHeaderValue(v); got != want {
			t.Errorf("ValidHeaderValue(%q) = %v, want %v", v, got, want)
		}
	}
	names := map[string]bool{
		"X-Trace":           true,
		"ce-source":         true,
		"a!#$%&'*+-.^_`|~z": true,
		"":                  false,
		"X Trace":           false,
		"X:Trace":           false,
		"X\"":               false,
		"é":                 false,
		"X\r\n":             false,
	}
	for n, want := range names {
		if got := ValidHeaderName(n); got != want {
			t.Errorf("ValidHeaderName(%q) = %v, want %v", n, got, want)
		}
	}
}
