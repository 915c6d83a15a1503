package validate

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// streamHeader is the header the server and the balancers agree on.
const streamHeader = "X-Streamguard-Stream"

// TestEnvoyConfig reads deploy/envoy/envoy.yaml into Envoy's v3 bootstrap
// protos (unknown fields and types refused), runs their validation rules,
// and checks the routing: stream routes hash the header (or the path's id)
// on a consistent ring, the duplex route and the rest do not hash, and the
// replicas are the headless Service's pods, probed on /readyz.
func TestEnvoyConfig(t *testing.T) {
	bs, _ := envoyBootstrap(t, "envoy.yaml")
	listeners := bs.GetStaticResources().GetListeners()
	if len(listeners) != 1 {
		t.Fatalf("%d listeners", len(listeners))
	}
	var hcm hcmv3.HttpConnectionManager
	if err := listeners[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	if err := hcm.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	routes := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()
	find := func(path string) *routev3.Route {
		for _, r := range routes { // first match wins, as in Envoy
			m := r.GetMatch()
			if m.GetPath() == path || m.GetPath() == "" && m.GetPrefix() != "" && strings.HasPrefix(path, m.GetPrefix()) {
				return r
			}
		}
		t.Fatalf("no route for %s", path)
		return nil
	}
	header := strings.ToLower(streamHeader)
	for _, p := range []string{"/v1/streams/connect", "/v1/moderations", "/v1/chat/completions"} {
		if hp := find(p).GetRoute().GetHashPolicy(); len(hp) != 0 {
			t.Errorf("%s is hashed (%v): it needs no affinity", p, hp)
		}
	}
	if hp := find("/v1/streams").GetRoute().GetHashPolicy(); len(hp) != 1 || hp[0].GetHeader().GetHeaderName() != header {
		t.Errorf("POST /v1/streams hash policy %v: want the %s header alone", hp, header)
	}
	for _, p := range []string{"/v1/streams/abc", "/v1/streams/abc/append", "/v1/streams/abc/flush"} {
		hp := find(p).GetRoute().GetHashPolicy()
		if len(hp) != 2 || hp[0].GetHeader().GetHeaderName() != header || !hp[0].GetTerminal() || hp[1].GetHeader().GetHeaderName() != ":path" {
			t.Fatalf("%s hash policy %v: want the header (terminal), then the path", p, hp)
		}
		// The path's rewrite yields the id, as the header would carry it.
		rw := hp[1].GetHeader().GetRegexRewrite()
		re := regexp.MustCompile(rw.GetPattern().GetRegex())
		sub := strings.ReplaceAll(rw.GetSubstitution(), `\1`, "${1}")
		for path, id := range map[string]string{"/v1/streams/conv-1_A": "conv-1_A", "/v1/streams/conv-1_A/append": "conv-1_A", "/v1/streams/0f8a/prompt?x=1": "0f8a"} {
			if got := re.ReplaceAllString(path, sub); got != id {
				t.Errorf("path %s hashes as %q, want the id %q", path, got, id)
			}
		}
	}
	// /metrics (unauthenticated: tenant names, their traffic) is answered
	// at the edge; Prometheus scrapes the pods. Paths are normalised first,
	// so that no other spelling of it (%6detrics, which serve reads as
	// /metrics) routes to a replica.
	if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() {
		t.Errorf("normalize_path %v, merge_slashes %v: want both, so that /metrics has one spelling", hcm.GetNormalizePath().GetValue(), hcm.GetMergeSlashes())
	}
	if r := find("/metrics"); r.GetMatch().GetPath() != "/metrics" || r.GetDirectResponse().GetStatus() != 404 {
		t.Errorf("/metrics: route %v, want a direct response 404 on the exact path", r)
	}
	// A non-streamed completion through the proxy (serve --upstream) is
	// silent while serve waits for the LLM's headers.
	if it, wait := find("/v1/chat/completions").GetRoute().GetIdleTimeout().AsDuration(), serveDefault(t, "upstream-header-timeout"); it <= wait {
		t.Errorf("/v1/chat/completions idle_timeout %v: not above serve's --upstream-header-timeout %v", it, wait)
	}
	clusters := bs.GetStaticResources().GetClusters()
	if len(clusters) != 1 {
		t.Fatalf("%d clusters", len(clusters))
	}
	c := clusters[0]
	if p := c.GetLbPolicy(); p != clusterv3.Cluster_RING_HASH && p != clusterv3.Cluster_MAGLEV {
		t.Errorf("lb_policy %v: want a consistent hash (RING_HASH or MAGLEV)", p)
	}
	if c.GetType() != clusterv3.Cluster_STRICT_DNS {
		t.Errorf("cluster type %v: want STRICT_DNS (one host per pod record)", c.GetType())
	}
	sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	o := render(t, "cpu")
	svc := o.svc[sa.GetAddress()]
	if svc == nil || svc.Spec.ClusterIP != "None" || uint32(svc.Spec.Ports[0].Port) != sa.GetPortValue() {
		t.Errorf("endpoints %s:%d: want the headless Service of deploy/kubernetes and its port", sa.GetAddress(), sa.GetPortValue())
	}
	hc := c.GetHealthChecks()
	if len(hc) != 1 || hc[0].GetHttpHealthCheck().GetPath() != "/readyz" {
		t.Errorf("health checks %v: want GET /readyz", hc)
	}
}

// TestHAProxyConfig checks deploy/haproxy/haproxy.cfg's routing lines and,
// where haproxy is installed, lets haproxy check the whole file.
func TestHAProxyConfig(t *testing.T) {
	cfg := filepath.Join(repoRoot, "deploy", "haproxy", "haproxy.cfg")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Each section's lines, comments and blank lines left out.
	sections := map[string][]string{}
	var lines []string
	section := ""
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		l = strings.Join(strings.Fields(l), " ")
		if f := strings.Fields(l); slices.Contains([]string{"global", "defaults", "frontend", "backend", "listen", "resolvers"}, f[0]) {
			section = l
			continue
		}
		sections[section] = append(sections[section], l)
		lines = append(lines, l)
	}
	has := func(lines []string, prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		return ""
	}
	front := sections["frontend streamguard"]
	hashed := sections["backend streamguard"]
	for _, want := range []string{"balance hdr(" + streamHeader + ")", "hash-type consistent", "http-check send meth GET uri /readyz", "option redispatch"} {
		if has(lines, want) == "" {
			t.Errorf("haproxy.cfg has no line %q", want)
		}
	}
	if has(hashed, "balance hdr("+streamHeader+")") == "" {
		t.Errorf("backend streamguard does not hash %s", streamHeader)
	}
	if has(lines, "hash-balance-factor") != "" {
		t.Error("hash-balance-factor moves requests off their stream's server")
	}
	// Only the stream routes are hashed (as in envoy.yaml): the rest goes to
	// a backend that does not hash, whatever header it carries.
	use := has(front, "use_backend streamguard ")
	_, cond, ok := strings.Cut(use, " if ")
	for _, a := range strings.Fields(cond) {
		if a = strings.TrimPrefix(a, "!"); a == "||" || a == "or" {
			continue
		}
		if def := has(front, "acl "+a+" "); !strings.Contains(def, "/v1/streams") {
			t.Errorf("frontend: %q: acl %s is %q, not a stream route", use, a, def)
		}
	}
	if !ok {
		t.Errorf("frontend: %q: want the hashing backend for the stream routes only", use)
	}
	def := strings.TrimPrefix(has(front, "default_backend "), "default_backend ")
	if def == "" || def == "streamguard" || strings.Contains(has(sections["backend "+def], "balance "), "hdr(") || has(sections["backend "+def], "default-server check") == "" {
		t.Errorf("default_backend %q: want a checked backend that does not hash", def)
	}
	// /metrics is answered at the edge, as serve reads the path.
	if l := has(front, "http-request return status 404"); !strings.Contains(l, "{ path,url_dec /metrics }") {
		t.Errorf("frontend: no 404 for /metrics (percent-decoded): %q", l)
	}
	// A non-streamed completion through the proxy is silent while serve
	// waits for the LLM's headers.
	wait := serveDefault(t, "upstream-header-timeout")
	for _, k := range []string{"timeout client ", "timeout server "} {
		v := strings.TrimPrefix(has(sections["defaults"], k), k)
		if d, err := time.ParseDuration(v); err != nil || d <= wait {
			t.Errorf("%s%s: want a duration above serve's --upstream-header-timeout %v", k, v, wait)
		}
	}
	hp, err := exec.LookPath("haproxy")
	if err != nil {
		t.Log("haproxy not installed: its own check of the file skipped")
		return
	}
	if out, err := exec.Command(hp, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
}

// TestHAProxyRouting runs haproxy.cfg (where haproxy is installed) in
// front of three stand-in replicas that answer their name: a stream's
// requests, with the header or only the id in the path, reach one replica;
// other routes are spread whatever X-Streamguard-Stream they carry; and
// /metrics, in any spelling serve would read as /metrics, is answered 404
// by HAProxy. (scripts/haproxy-check.sh runs real replicas.)
func TestHAProxyRouting(t *testing.T) {
	hp, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed")
	}
	env := os.Environ()
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("r%d", i)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Streamguard-Replica", name)
		}))
		defer srv.Close()
		env = append(env, fmt.Sprintf("SG_REPLICA_%d=%s", i, srv.Listener.Addr()))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bind := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(hp, "-db", "-f", filepath.Join(repoRoot, "deploy", "haproxy", "haproxy.cfg"))
	cmd.Env = append(env, "SG_BIND="+bind)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	do := func(method, path, stream string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+bind+path, nil)
		if stream != "" {
			req.Header.Set(streamHeader, stream)
		}
		var resp *http.Response
		for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
			if resp, err = http.DefaultClient.Do(req); err == nil || time.Since(start) > 5*time.Second {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s %s: %v\nhaproxy: %s", method, path, err, out.String())
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Streamguard-Replica")
	}
	for _, p := range []string{"/metrics", "/%6detrics", "/metrics?x=1"} {
		if code, replica := do("GET", p, ""); code != 404 || replica != "" {
			t.Errorf("GET %s: %d from %q, want 404 from HAProxy", p, code, replica)
		}
	}
	seen := func(method, path, stream string) map[string]bool {
		m := map[string]bool{}
		for i := 0; i < 9; i++ {
			_, replica := do(method, path, stream)
			m[replica] = true
		}
		return m
	}
	for _, id := range []string{"conv-1", "conv-2", "conv-3"} {
		all := map[string]bool{}
		for _, r := range []struct{ method, path, stream string }{
			{"POST", "/v1/streams", id}, {"POST", "/v1/streams/" + id + "/append", id},
			{"POST", "/v1/streams/" + id + "/append", ""}, {"GET", "/v1/streams/" + id, ""},
		} {
			for k := range seen(r.method, r.path, r.stream) {
				all[k] = true
			}
		}
		if len(all) != 1 {
			t.Errorf("stream %s answered by %v, want one replica", id, keys(all))
		}
	}
	for _, r := range []struct{ method, path string }{{"POST", "/v1/moderations"}, {"POST", "/v1/streams/connect"}, {"POST", "/v1/chat/completions"}} {
		if m := seen(r.method, r.path, "conv-1"); len(m) < 2 {
			t.Errorf("%s %s with %s: all on %v, want them spread", r.method, r.path, streamHeader, keys(m))
		}
	}
}

// envoyBootstrap reads deploy/envoy/NAME into Envoy's own bootstrap type
// (YAML decoded strictly, then protojson: unknown fields fail) and runs
// Envoy's validation rules on it; it also returns the file's text.
func envoyBootstrap(t *testing.T, name string) (*bootstrapv3.Bootstrap, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "envoy", name))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("%s is not a v3 bootstrap: %v", name, err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &bs, string(b)
}
