package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The README's CLI example runs as written, and the key it creates can do
// what a reader expects of it: publish to the topic the example just
// created and read it back.
func TestReadmeCLIExample(t *testing.T) {
	t.Parallel()
	cmds := readmeBlock(t, "The same with the CLI")
	m, _ := testServer(t, t.TempDir(), nil)
	cli := func(key string, c readmeCommand) string {
		t.Helper()
		env := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": key}
		var out, errOut bytes.Buffer
		if code := run(t.Context(), c.args, strings.NewReader(c.stdin), &out, &errOut, func(k string) string { return env[k] }); code != exitOK {
			t.Fatalf("%s\nwith key %.9s...: exit %d\n%s%s", c.line, key, code, out.String(), errOut.String())
		}
		return out.String()
	}
	var created string // the secret of the key the example creates
	var publish, list *readmeCommand
	for i, c := range cmds {
		out := cli(testAdminKey, c)
		switch c.args[0] {
		case "keys":
			created = regexp.MustCompile(`hrld_[A-Za-z0-9_-]+`).FindString(out)
		case "publish":
			publish = &cmds[i]
		case "events":
			list = &cmds[i]
		}
	}
	if created == "" || publish == nil || list == nil {
		t.Fatalf("the README's CLI example no longer creates a key (%q), publishes and lists events", created)
	}
	cli(created, *publish)
	if out := cli(created, *list); strings.Count(out, "payment.captured") != 2 {
		t.Errorf("the created key lists:\n%s\nwant the two events published", out)
	}
}

// readmeCommand is one herald command of a README example.
type readmeCommand struct {
	line  string
	args  []string // after "go run ./cmd/herald"
	stdin string   // what an "echo '...' |" in front of it pipes in
}

// readmeBlock returns the herald commands of the first ```sh block after
// the line of the README that contains marker. It understands what the
// README's examples use: single quotes, and "echo '...' |" for stdin.
func readmeBlock(t *testing.T, marker string) []readmeCommand {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), marker)
	if !ok {
		t.Fatalf("the README has no %q", marker)
	}
	_, rest, _ = strings.Cut(rest, "```sh\n")
	block, _, _ := strings.Cut(rest, "```")
	var cmds []readmeCommand
	for line := range strings.Lines(block) {
		line = strings.TrimSpace(line)
		c := readmeCommand{line: line}
		if echo, tail, ok := strings.Cut(line, " | "); ok {
			words := shellWords(t, echo)
			if len(words) != 2 || words[0] != "echo" {
				t.Fatalf("README line %q: only \"echo '...' |\" is understood in front of a command", line)
			}
			c.stdin, line = words[1]+"\n", tail
		}
		words := shellWords(t, line)
		if len(words) < 4 || strings.Join(words[:3], " ") != "go run ./cmd/herald" {
			t.Fatalf("README line %q is not a herald command", c.line)
		}
		c.args = words[3:]
		cmds = append(cmds, c)
	}
	return cmds
}

// shellWords splits a command line at spaces outside single quotes.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
			}
			inWord = false
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %q", line)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}
