package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
)

// dockerInstr is one Dockerfile instruction, continuation lines joined.
type dockerInstr struct {
	op, args string
}

func readDockerfile(t *testing.T, path string) []dockerInstr {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []dockerInstr
	cur := ""
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur += s + " "
			continue
		}
		cur += trimmed
		op, args, _ := strings.Cut(cur, " ")
		out = append(out, dockerInstr{strings.ToUpper(op), strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// execForm decodes an exec-form argument list (a JSON array).
func execForm(t *testing.T, what, s string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil || len(v) == 0 {
		t.Fatalf("%s: %q is not an exec-form JSON array: %v", what, s, err)
	}
	return v
}

// TestDockerfile checks the image the Dockerfile describes against this
// binary, without a Docker daemon: a static, trimmed build; a non-root
// user; the health check runs a subcommand that exists, with flags it
// takes, on the port the default command listens on and the image exposes.
func TestDockerfile(t *testing.T) {
	instrs := readDockerfile(t, "../../Dockerfile")
	var final []dockerInstr // the last stage
	var build string
	globals := map[string]string{} // ARG defaults before the first FROM
	stages := 0
	for _, in := range instrs {
		if in.op == "ARG" && stages == 0 {
			k, v, _ := strings.Cut(in.args, "=")
			globals[k] = v
		}
		if in.op == "FROM" {
			stages++
			final = nil
			in.args = os.Expand(in.args, func(k string) string { return globals[k] })
		}
		final = append(final, in)
		if in.op == "RUN" && strings.Contains(in.args, "go build") {
			build = in.args
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-tags "${BUILD_TAGS}"`, "./cmd/streamguard"} {
		if !strings.Contains(build, want) {
			t.Errorf("the go build step %q lacks %s", build, want)
		}
	}
	get := func(op string) []string {
		var v []string
		for _, in := range final {
			if in.op == op {
				v = append(v, in.args)
			}
		}
		return v
	}
	if from := get("FROM"); len(from) != 1 || !strings.Contains(from[0], "distroless/static") {
		t.Errorf("final stage FROM %q, want a distroless static base by default", from)
	}
	users := get("USER")
	if len(users) != 1 {
		t.Fatalf("final stage USER %q, want one", users)
	}
	uid, err := strconv.Atoi(strings.Split(users[0], ":")[0])
	if err != nil || uid == 0 {
		t.Errorf("USER %q: want a numeric non-root uid (Kubernetes runAsNonRoot checks it)", users[0])
	}
	var binary string
	for _, c := range get("COPY") {
		if f := strings.Fields(c); strings.Contains(c, "--from=build") && strings.HasSuffix(f[len(f)-1], "/streamguard") {
			binary = f[len(f)-1]
		}
	}
	if ep := get("ENTRYPOINT"); len(ep) != 1 || execForm(t, "ENTRYPOINT", ep[0])[0] != binary || binary == "" {
		t.Errorf("ENTRYPOINT %q, want the copied binary %q", ep, binary)
	}
	// HF_HOME must lie on the volume: the root filesystem is read-only.
	volumes := get("VOLUME")
	hfHome := ""
	for _, e := range get("ENV") {
		if v, ok := strings.CutPrefix(e, "HF_HOME="); ok {
			hfHome = v
		}
	}
	if len(volumes) != 1 || hfHome == "" || !strings.HasPrefix(hfHome, execForm(t, "VOLUME", volumes[0])[0]+"/") {
		t.Errorf("HF_HOME %q is not under the VOLUME %q", hfHome, volumes)
	}

	expose := get("EXPOSE")
	cmd := execForm(t, "CMD", strings.Join(get("CMD"), ""))
	addr := ""
	for i, a := range cmd {
		if a == "--addr" && i+1 < len(cmd) {
			addr = cmd[i+1]
		}
	}
	_, servePort, err := net.SplitHostPort(addr)
	if cmd[0] != "serve" || err != nil || len(expose) != 1 || expose[0] != servePort {
		t.Fatalf("CMD %q listens on %q; EXPOSE %q: want serve on the exposed port", cmd, addr, expose)
	}

	hc := get("HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("HEALTHCHECK %q, want one", hc)
	}
	_, form, ok := strings.Cut(hc[0], "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %q has no CMD", hc[0])
	}
	args := execForm(t, "HEALTHCHECK", form)
	if args[0] != binary || len(args) < 2 || args[1] != "healthcheck" {
		t.Fatalf("HEALTHCHECK runs %q, want %s healthcheck ...", args, binary)
	}
	// Run the health check's own arguments, its URL pointed at a test
	// server standing for the container's port.
	var probeURL *url.URL
	for i, a := range args {
		if a == "--url" && i+1 < len(args) {
			if probeURL, err = url.Parse(args[i+1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if probeURL == nil || probeURL.Port() != servePort || probeURL.Path != "/healthz" || probeURL.Hostname() != "127.0.0.1" {
		t.Fatalf("HEALTHCHECK --url %v: want http://127.0.0.1:%s/healthz", probeURL, servePort)
	}
	status := http.StatusOK
	var paths []string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		w.WriteHeader(status)
	}))
	defer ts.Close()
	local := append([]string(nil), args[1:]...)
	for i := range local {
		if local[i] == probeURL.String() {
			local[i] = ts.URL + probeURL.Path
		}
	}
	var out, errb bytes.Buffer
	if code := mainWithArgs(local, &out, &errb); code != 0 {
		t.Fatalf("HEALTHCHECK %q against a healthy server: exit %d: %s", local, code, errb.String())
	}
	status = http.StatusServiceUnavailable
	if code := mainWithArgs(local, &out, &errb); code != 1 {
		t.Fatalf("HEALTHCHECK %q against a failing server: exit %d, want 1", local, code)
	}
	if len(paths) != 2 || paths[0] != "/healthz" {
		t.Errorf("the health check asked for %q", paths)
	}
}
