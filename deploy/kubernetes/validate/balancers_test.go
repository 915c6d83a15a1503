package validate

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	has := func(prefix string) bool {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return true
			}
		}
		return false
	}
	for _, want := range []string{"balance hdr(" + streamHeader + ")", "hash-type consistent", "http-check send meth GET uri /readyz", "option redispatch"} {
		if !has(want) {
			t.Errorf("haproxy.cfg has no line %q", want)
		}
	}
	if has("hash-balance-factor") {
		t.Error("hash-balance-factor moves requests off their stream's server")
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
