package herald

import (
	"net/http"
	"slices"
	"testing"
)

// The problem of each code is part of the API: clients switch on the type
// URI and status, so a change here breaks them.
func TestProblemFor(t *testing.T) {
	want := []Problem{
		{CodeInvalid, http.StatusBadRequest, "https://herald.dev/problems/invalid", "Invalid request"},
		{CodeUnauthorized, http.StatusUnauthorized, "https://herald.dev/problems/unauthorized", "Unauthorized"},
		{CodeForbidden, http.StatusForbidden, "https://herald.dev/problems/forbidden", "Forbidden"},
		{CodeNotFound, http.StatusNotFound, "https://herald.dev/problems/not-found", "Not found"},
		{CodeConflict, http.StatusConflict, "https://herald.dev/problems/conflict", "Conflict"},
		{CodeTooLarge, http.StatusRequestEntityTooLarge, "https://herald.dev/problems/too-large", "Content too large"},
		{CodeRateLimited, http.StatusTooManyRequests, "https://herald.dev/problems/rate-limited", "Too many requests"},
		{CodeUnavailable, http.StatusServiceUnavailable, "https://herald.dev/problems/unavailable", "Service unavailable"},
		{CodeInternal, http.StatusInternalServerError, "https://herald.dev/problems/internal", "Internal error"},
		{CodeUnsupported, http.StatusUnsupportedMediaType, "https://herald.dev/problems/unsupported", "Unsupported media type"},
		{CodeGone, http.StatusGone, "https://herald.dev/problems/gone", "Gone"},
		{CodeTimeout, http.StatusGatewayTimeout, "https://herald.dev/problems/timeout", "Timeout"},
	}
	var codes []Code
	for _, w := range want {
		if got := ProblemFor(w.Code); got != w {
			t.Errorf("ProblemFor(%q) = %+v, want %+v", w.Code, got, w)
		}
		codes = append(codes, w.Code)
	}
	if got := Codes(); !slices.Equal(got, codes) {
		t.Errorf("Codes() = %q, want %q", got, codes)
	}

	// Callers may not change the table through the slice they get.
	Codes()[0] = "changed"
	if Codes()[0] != CodeInvalid {
		t.Error("Codes() shares its slice")
	}
}

func TestProblemForUnknownCode(t *testing.T) {
	internal := ProblemFor(CodeInternal)
	for _, code := range []Code{"made-up", "", "method-not-allowed"} {
		if got := ProblemFor(code); got != internal {
			t.Errorf("ProblemFor(%q) = %+v, want the internal problem %+v", code, got, internal)
		}
	}
}
