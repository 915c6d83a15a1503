package validate

import (
	"bufio"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// TestEnvoyExtProcConfig reads deploy/envoy/ext-proc.yaml into Envoy's v3
// bootstrap protos (unknown fields and types refused), runs their
// validation rules, and checks what streamguard's ext_proc service needs:
// the filter before the router, in the modes the service is written for
// (request body BUFFERED, response headers sent, response body STREAMED),
// failing closed, mode overrides allowed, a message timeout well above the
// binary's chunk wait, a gRPC cluster over HTTP/2 on the port the comment's
// serve command opens, paths normalised before routing, and the filter on
// every route, so that no spelling of a generation path escapes it.
func TestEnvoyExtProcConfig(t *testing.T) {
	bs, text := envoyBootstrap(t, "ext-proc.yaml")
	var hcm hcmv3.HttpConnectionManager
	if err := bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	if err := hcm.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	filters := hcm.GetHttpFilters()
	// Routing reads the path as the upstream will: RFC 3986 normalised,
	// slashes merged.
	if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() {
		t.Errorf("normalize_path %v, merge_slashes %v: want both, so that routes match the path the upstream reads", hcm.GetNormalizePath().GetValue(), hcm.GetMergeSlashes())
	}
	if len(filters) < 2 || filters[0].GetName() != "envoy.filters.http.ext_proc" || filters[len(filters)-1].GetName() != "envoy.filters.http.router" {
		t.Fatalf("http filters %v: want ext_proc first and the router last", filters)
	}
	var ep extprocv3.ExternalProcessor
	if err := filters[0].GetTypedConfig().UnmarshalTo(&ep); err != nil {
		t.Fatal(err)
	}
	if err := ep.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	// The modes streamguard judges every answer in: with response_body_mode
	// NONE (Envoy's default) or BUFFERED_PARTIAL, or a header mode SKIP,
	// it refuses the answers instead.
	pm := ep.GetProcessingMode()
	if pm.GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED || pm.GetResponseBodyMode() != extprocv3.ProcessingMode_STREAMED ||
		pm.GetResponseHeaderMode() != extprocv3.ProcessingMode_SEND || pm.GetRequestHeaderMode() == extprocv3.ProcessingMode_SKIP {
		t.Errorf("processing mode %v: want request headers and body (BUFFERED), response headers (SEND) and body (STREAMED)", pm)
	}
	if ep.GetSendBodyWithoutWaitingForHeaderResponse() {
		t.Error("send_body_without_waiting_for_header_response: Envoy then ignores streamguard's mode overrides")
	}
	if ep.GetFailureModeAllow() {
		t.Error("failure_mode_allow: an unreachable or late streamguard would let text through unjudged")
	}
	if !ep.GetAllowModeOverride() {
		t.Error("allow_mode_override is off: a flagged non-streamed answer cannot become a 400")
	}
	wait := serveDefault(t, "ext-proc-chunk-wait")
	if mt := ep.GetMessageTimeout().AsDuration(); mt < time.Second || mt < 10*wait {
		t.Errorf("message_timeout %v: too short for a prompt's judgment (and streamguard's chunk wait is %v)", mt, wait)
	}
	// A stream that meets a full KV budget waits up to --kv-budget-wait
	// before its answer (429): Envoy must not give up on the message first.
	if budget, mt := serveDefault(t, "kv-budget-wait"), ep.GetMessageTimeout().AsDuration(); mt <= budget+time.Second {
		t.Errorf("message_timeout %v: not above streamguard's --kv-budget-wait %v plus a judgment", mt, budget)
	}

	// The gRPC cluster: HTTP/2, on the port the comment's serve opens.
	name := ep.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	var grpcCluster *clusterv3.Cluster
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			grpcCluster = c
		}
	}
	if grpcCluster == nil {
		t.Fatalf("no cluster %q for the ext_proc service", name)
	}
	var hpo upstreamhttpv3.HttpProtocolOptions
	if err := grpcCluster.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&hpo); err != nil ||
		hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("cluster %s does not speak HTTP/2 (gRPC needs it): %v", name, err)
	}
	port := grpcCluster.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
	m := regexp.MustCompile(`--ext-proc-addr \S+:(\d+)`).FindStringSubmatch(text)
	if m == nil || m[1] != itoa(port) {
		t.Errorf("the cluster's port %d is not the one the serve command in the comment opens (%v)", port, m)
	}

	// The filter runs on every route: upstreams decode the path before
	// routing, so a route without it could be reached by a spelling of the
	// chat path (or of the completions and Responses APIs, which
	// streamguard refuses), and the answer would go out unjudged.
	vh := hcm.GetRouteConfig().GetVirtualHosts()[0]
	if _, off := vh.GetTypedPerFilterConfig()["envoy.filters.http.ext_proc"]; off {
		t.Errorf("virtual host %s: a per-filter config of ext_proc", vh.GetName())
	}
	routes := vh.GetRoutes()
	for _, r := range routes {
		if _, off := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_proc"]; off {
			t.Errorf("route %v: a per-filter config of ext_proc (it may disable the filter or change its modes)", r.GetMatch())
		}
	}
	for _, p := range []string{"/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions", "/v1/responses", "/responses", "/v1/models"} {
		if firstMatch(routes, p) == nil {
			t.Errorf("no route for %s", p)
		}
	}
	if r := firstMatch(routes, "/v1/chat/completions"); r != nil && r.GetRoute().GetTimeout().AsDuration() != 0 {
		t.Errorf("chat route timeout %v: a streamed answer lasts as long as the model writes", r.GetRoute().GetTimeout().AsDuration())
	}
}

func firstMatch(routes []*routev3.Route, path string) *routev3.Route {
	for _, r := range routes {
		if p := r.GetMatch().GetPrefix(); p != "" && strings.HasPrefix(path, p) || r.GetMatch().GetPath() == path {
			return r
		}
	}
	return nil
}

func itoa(n uint32) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// serveDefault is the default of the binary's duration flag `serve --name`.
func serveDefault(t *testing.T, name string) time.Duration {
	t.Helper()
	_, stderr := run(t, streamguard(t), []string{"serve", "-h"}, nil)
	m := regexp.MustCompile(`(?s)-` + regexp.QuoteMeta(name) + ` duration.*?\(default ([0-9a-zµ.]+)\)`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("serve -h shows no --%s default:\n%s", name, stderr)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestServeExtProc starts the binary with --ext-proc-addr on a tiny
// synthetic model: it reports the port it listens on, accepts
// connections there, and shuts down cleanly on SIGTERM.
func TestServeExtProc(t *testing.T) {
	bin := streamguard(t)
	model := filepath.Join(t.TempDir(), "tiny")
	if code, stderr := run(t, bin, []string{"gen-model", "--preset", "tiny", "--out", model}, nil); code != 0 {
		t.Fatalf("gen-model: exit %d: %s", code, stderr)
	}
	cmd := exec.Command(bin, "serve", "--model", model, "--addr", "127.0.0.1:0", "--ext-proc-addr", "127.0.0.1:0", "--json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	rd := bufio.NewReader(out)
	line, err := rd.ReadString('\n')
	go func() {
		_, _ = rd.WriteTo(discard{})
		done <- cmd.Wait()
	}()
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	var ev struct {
		ExtProcAddr string `json:"ext_proc_addr"`
	}
	if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.ExtProcAddr == "" {
		t.Fatalf("serve said %q", line)
	}
	c, err := net.DialTimeout("tcp", ev.ExtProcAddr, 5*time.Second)
	if err != nil {
		t.Fatalf("ext_proc port: %v", err)
	}
	c.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
