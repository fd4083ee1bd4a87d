package herald

// ProblemTypeBase starts every problem type URI; the Code ends it (for
// example https://herald.dev/problems/not-found). It is part of the API.
const ProblemTypeBase = "https://herald.dev/problems/"

// Problem is the fixed part of the RFC 9457 problem
// (application/problem+json) that reports a Code: its HTTP status, stable
// type URI and title. The API's error responses and the stream package's
// HTTP problems and WebSocket error frames all take it from ProblemFor, so
// a code reads the same on every path. The values are part of the API.
type Problem struct {
	Code   Code   // the code reported; CodeInternal for a code Herald does not know
	Status int    // the HTTP status
	Type   string // ProblemTypeBase followed by Code
	Title  string // a short summary, fixed per code whatever the message
}

// problems holds each code's status and title, in the order the codes are
// declared. The statuses are plain numbers because this package imports no
// HTTP code; problem_test.go checks them against net/http's names.
var problems = [...]struct {
	code   Code
	status int
	title  string
}{
	{CodeInvalid, 400, "Invalid request"},
	{CodeUnauthorized, 401, "Unauthorized"},
	{CodeForbidden, 403, "Forbidden"},
	{CodeNotFound, 404, "Not found"},
	{CodeConflict, 409, "Conflict"},
	{CodeTooLarge, 413, "Content too large"},
	{CodeRateLimited, 429, "Too many requests"},
	{CodeUnavailable, 503, "Service unavailable"},
	{CodeInternal, 500, "Internal error"},
	{CodeUnsupported, 415, "Unsupported media type"},
	{CodeGone, 410, "Gone"},
	{CodeTimeout, 504, "Timeout"},
}

// ProblemFor returns the problem that reports code. A code Herald does not
// know gets CodeInternal's problem, with Code set to CodeInternal, so a
// made-up code is answered as a generic 500 and never reaches the wire.
func ProblemFor(code Code) Problem {
	for _, p := range problems {
		if p.code == code {
			return Problem{Code: code, Status: p.status, Type: ProblemTypeBase + string(code), Title: p.title}
		}
	}
	return ProblemFor(CodeInternal)
}

// Codes returns every Code Herald reports, in declaration order. Each call
// returns a new slice.
func Codes() []Code {
	codes := make([]Code, len(problems))
	for i, p := range problems {
		codes[i] = p.code
	}
	return codes
}
