package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The recipes in deploy/ and the Dockerfile are checked here, against the
// settings table they configure: a renamed setting or a changed default
// shows up as a failure, not as a unit that quietly ignores a variable.

// The systemd unit runs "herald serve" as an unprivileged user, hardened,
// with its data in its state directory, and waits for the graceful
// shutdown before it kills.
func TestDeploySystemdUnit(t *testing.T) {
	t.Parallel()
	unit := readUnit(t, "../../deploy/herald.service")
	svc := unit["Service"]
	one := func(key string) string {
		t.Helper()
		if len(svc[key]) != 1 {
			t.Errorf("[Service] %s: %q, want one value", key, svc[key])
			return ""
		}
		return svc[key][0]
	}
	exe := strings.Fields(one("ExecStart"))
	if len(exe) != 2 || !filepath.IsAbs(exe[0]) || filepath.Base(exe[0]) != "herald" || exe[1] != "serve" {
		t.Errorf("ExecStart=%s, want /path/to/herald serve", one("ExecStart"))
	}
	if user := svc["User"]; one("DynamicUser") != "yes" && (len(user) == 0 || user[0] == "root" || user[0] == "0") {
		t.Errorf("the unit runs as root: DynamicUser=%q User=%q", svc["DynamicUser"], user)
	}
	for key, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "ProtectHome": "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "StateDirectory": "herald",
		"Restart": "on-failure", "CapabilityBoundingSet": "", "EnvironmentFile": "-/etc/herald/herald.env",
	} {
		if got := one(key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}

	env := map[string]string{}
	for _, e := range svc["Environment"] {
		k, v, _ := strings.Cut(e, "=")
		env[k] = v
	}
	if got, want := env["HERALD_DATA_DIR"], "/var/lib/"+one("StateDirectory"); got != want {
		t.Errorf("HERALD_DATA_DIR=%s, want the state directory %s", got, want)
	}
	maps.Copy(env, readEnvFile(t, "../../deploy/herald.env"))
	cfg := checkSettings(t, "the unit and deploy/herald.env", env)

	stop, err := time.ParseDuration(one("TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if stop <= cfg.ShutdownTimeout {
		t.Errorf("TimeoutStopSec=%s: systemd would kill Herald before its shutdown-timeout (%s) has passed", stop, cfg.ShutdownTimeout)
	}

	t.Run("systemd-analyze verify", func(t *testing.T) {
		bin, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze is not installed: the unit's syntax is not checked by systemd")
		}
		// verify wants ExecStart's program to exist: any executable does,
		// such as this test's own binary.
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		text, err := os.ReadFile("../../deploy/herald.service")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "herald.service")
		text = bytes.Replace(text, []byte("ExecStart="+exe[0]), []byte("ExecStart="+self), 1)
		if err := os.WriteFile(path, text, 0o644); err != nil {
			t.Fatal(err)
		}
		// It exits 0 on unknown keys and bad values, and only says so.
		out, err := exec.CommandContext(t.Context(), bin, "verify", path).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}

// The Dockerfile builds the pure-Go static binary and runs "herald serve"
// on a minimal base as a non-root user, with its data in the /data volume
// and the listener on the exposed port.
func TestDeployDockerfile(t *testing.T) {
	t.Parallel()
	stages := readDockerfile(t, "../../Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a run stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if base := final.from; !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		t.Errorf("the image is based on %s, want distroless/static or scratch", base)
	}
	if !slices.ContainsFunc(build.all("RUN"), func(run string) bool {
		return strings.Contains(run, "CGO_ENABLED=0 go build") && strings.Contains(run, "./cmd/herald")
	}) {
		t.Errorf("the build stage has no CGO_ENABLED=0 go build of ./cmd/herald: %q", build.all("RUN"))
	}
	if user := final.last("USER"); user == "" || user == "root" || strings.HasPrefix(user, "0:") || user == "0" {
		t.Errorf("USER %q: the image must not run as root", user)
	}
	var cmd []string
	for _, instr := range []string{"ENTRYPOINT", "CMD"} {
		var part []string
		if err := json.Unmarshal([]byte(final.last(instr)), &part); err != nil {
			t.Fatalf("%s %s: want the exec (JSON) form: %v", instr, final.last(instr), err)
		}
		cmd = append(cmd, part...)
	}
	if len(cmd) != 2 || filepath.Base(cmd[0]) != "herald" || cmd[1] != "serve" {
		t.Errorf("the container runs %q, want herald serve", cmd)
	}

	env := map[string]string{}
	for _, e := range final.all("ENV") {
		for _, kv := range strings.Fields(e) {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	}
	cfg := checkSettings(t, "the Dockerfile", env)
	if cfg.DataDir != "/data" || final.last("VOLUME") != "/data" {
		t.Errorf("data directory %s, VOLUME %s: want both /data", cfg.DataDir, final.last("VOLUME"))
	}
	if _, port, _ := net.SplitHostPort(cfg.Addr); port != final.last("EXPOSE") {
		t.Errorf("Herald listens on %s but the image exposes %s", cfg.Addr, final.last("EXPOSE"))
	}

	t.Run("docker build", func(t *testing.T) {
		docker, err := exec.LookPath("docker")
		if err != nil {
			t.Skip("docker is not installed: the image is not built")
		}
		if out, err := exec.CommandContext(t.Context(), docker, "info").CombinedOutput(); err != nil {
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			t.Skipf("no Docker daemon answers, so the image is not built: docker info: %v: %s", err, lines[len(lines)-1])
		}
		var b [4]byte
		_, _ = rand.Read(b[:])
		tag := "herald-test:" + hex.EncodeToString(b[:])
		if out, err := exec.CommandContext(t.Context(), docker, "build", "-t", tag, "../..").CombinedOutput(); err != nil {
			t.Fatalf("docker build: %v\n%s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command(docker, "rmi", "-f", tag).Run() })
		out, err := exec.CommandContext(t.Context(), docker, "run", "--rm", tag, "version").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "herald ") {
			t.Fatalf("docker run %s version: %v\n%s", tag, err, out)
		}
	})
}

// The build the Dockerfile makes, CGO_ENABLED=0, compiles to a static
// binary that runs. It builds without the Dockerfile's -trimpath and
// -ldflags, which change nothing that could fail but would miss the build
// cache that .ci/run's CGO_ENABLED=0 store tests have filled.
func TestPureGoStaticBuild(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on the PATH: the CGO_ENABLED=0 build is not checked")
	}
	bin := filepath.Join(t.TempDir(), "herald")
	build := exec.CommandContext(t.Context(), goBin, "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	t.Logf("CGO_ENABLED=0 go build took %s", time.Since(start).Round(time.Millisecond))
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary asks for a dynamic loader: it would not run on distroless/static")
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "herald ") {
		t.Fatalf("herald version: %v\n%s", err, out)
	}
}

// checkSettings checks that every HERALD_* variable names a setting, and
// returns the configuration they make.
func checkSettings(t *testing.T, where string, env map[string]string) Config {
	t.Helper()
	known := map[string]bool{}
	for _, s := range settings() {
		known[envName(s.name)] = true
	}
	for k := range env {
		if strings.HasPrefix(k, "HERALD_") && !known[k] {
			t.Errorf("%s sets %s, which is no setting", where, k)
		}
	}
	var stderr bytes.Buffer
	cfg, err := ParseConfig(nil, func(k string) string { return env[k] }, &stderr)
	if err != nil {
		t.Fatalf("%s: the settings are refused: %v\n%s", where, err, stderr.String())
	}
	return cfg
}

// readUnit parses a systemd unit file: values by key by section, in order.
func readUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string]map[string][]string{}
	var section string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
			unit[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: not a key=value line in a section: %q", path, line)
			}
			unit[section][k] = append(unit[section][k], v)
		}
	}
	return unit
}

// readEnvFile returns the variables an environment file sets, and the
// ones it shows commented out ("# HERALD_X=..."), which must name
// settings as much as the others.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	commented := regexp.MustCompile(`^#\s*(HERALD_[A-Z0-9_]+)=`)
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if m := commented.FindStringSubmatch(line); m != nil {
			env[m[1]] = "" // "" is every setting's default or a valid value
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a NAME=value line: %q", path, line)
		}
		env[k] = v
	}
	return env
}

// stage is one FROM section of a Dockerfile.
type stage struct {
	from   string
	instrs [][2]string // instruction, arguments
}

func (s stage) all(instr string) []string {
	var out []string
	for _, in := range s.instrs {
		if in[0] == instr {
			out = append(out, in[1])
		}
	}
	return out
}

func (s stage) last(instr string) string {
	all := s.all(instr)
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1]
}

// readDockerfile splits a Dockerfile into stages of instructions, with
// continued lines joined and comments dropped.
func readDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var cont strings.Builder
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			cont.WriteString(body + " ")
			continue
		}
		cont.WriteString(line)
		full := cont.String()
		cont.Reset()
		instr, args, _ := strings.Cut(full, " ")
		instr, args = strings.ToUpper(instr), strings.TrimSpace(args)
		switch {
		case instr == "FROM":
			from, _, _ := strings.Cut(args, " ")
			stages = append(stages, stage{from: from})
		case len(stages) > 0:
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, [2]string{instr, args})
		}
	}
	return stages
}
