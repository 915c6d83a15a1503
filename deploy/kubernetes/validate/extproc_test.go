package validate

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
)

// TestEnvoyExtProcConfig reads deploy/envoy/ext-proc.yaml into Envoy's v3
// bootstrap protos (unknown fields and types refused), runs their
// validation rules, and checks what streamguard's ext_proc service needs:
// the filter first and the router last, on every listener and route
// (extProcCoverage), in the modes the service is written for (request body
// BUFFERED, response headers sent, response body STREAMED), failing
// closed, mode overrides allowed, a message timeout well above the
// binary's chunk wait, paths normalised before routing; and a gRPC cluster
// over HTTP/2 on the port the comment's serve command opens, with one host
// per pod (the headless Service, given that port by components/ext-proc),
// health-checked on /readyz, its circuit breakers above Envoy's defaults.
func TestEnvoyExtProcConfig(t *testing.T) {
	bs, text := envoyBootstrap(t, "ext-proc.yaml")
	// The filter on every listener, route and cluster (extProcCoverage).
	eps, problems := extProcCoverage(bs)
	for _, p := range problems {
		t.Error(p)
	}
	var hcm hcmv3.HttpConnectionManager
	if err := bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	if err := hcm.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	filters := hcm.GetHttpFilters()
	if len(filters) < 2 || filters[len(filters)-1].GetName() != "envoy.filters.http.router" {
		t.Fatalf("http filters %v: want the router last", filters)
	}
	if len(eps) == 0 {
		t.Fatal("no ext_proc filter")
	}
	wait := serveDefault(t, "ext-proc-chunk-wait")
	budget := serveDefault(t, "kv-budget-wait")
	var ep *extprocv3.ExternalProcessor
	for _, ep = range eps {
		if err := ep.ValidateAll(); err != nil {
			t.Fatal(err)
		}
		// The modes streamguard judges every answer in: with
		// response_body_mode NONE (Envoy's default) or BUFFERED_PARTIAL, or
		// a header mode SKIP, it refuses the answers instead.
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
		if mt := ep.GetMessageTimeout().AsDuration(); mt < time.Second || mt < 10*wait {
			t.Errorf("message_timeout %v: too short for a prompt's judgment (and streamguard's chunk wait is %v)", mt, wait)
		}
		// A stream that meets a full KV budget waits up to --kv-budget-wait
		// before its answer (429): Envoy must not give up on the message first.
		if mt := ep.GetMessageTimeout().AsDuration(); mt <= budget+time.Second {
			t.Errorf("message_timeout %v: not above streamguard's --kv-budget-wait %v plus a judgment", mt, budget)
		}
		if ep.GetGrpcService().GetEnvoyGrpc().GetClusterName() != eps[0].GetGrpcService().GetEnvoyGrpc().GetClusterName() {
			t.Errorf("ext_proc filters call clusters %s and %s", eps[0].GetGrpcService().GetEnvoyGrpc().GetClusterName(), ep.GetGrpcService().GetEnvoyGrpc().GetClusterName())
		}
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
	lbe := grpcCluster.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint()
	sa := lbe.GetAddress().GetSocketAddress()
	port := sa.GetPortValue()
	m := regexp.MustCompile(`--ext-proc-addr \S+:(\d+)`).FindStringSubmatch(text)
	if m == nil || m[1] != itoa(port) {
		t.Errorf("the cluster's port %d is not the one the serve command in the comment opens (%v)", port, m)
	}

	// One host per pod: the headless Service (with the ext-proc component),
	// on its port for the container's ext_proc port. Over the ClusterIP
	// Service Envoy would see one host and keep its long-lived HTTP/2
	// connections on whichever pods kube-proxy first picked.
	if grpcCluster.GetType() != clusterv3.Cluster_STRICT_DNS {
		t.Errorf("cluster %s type %v: want STRICT_DNS (one host per pod record)", name, grpcCluster.GetType())
	}
	for _, ov := range withExtProc {
		o := render(t, ov)
		svc := o.svc[sa.GetAddress()]
		if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("%s: ext_proc cluster %s -> %s:%d: not the headless Service", ov, name, sa.GetAddress(), port)
			continue
		}
		var sp *corev1.ServicePort
		for i := range svc.Spec.Ports {
			if uint32(svc.Spec.Ports[i].Port) == port {
				sp = &svc.Spec.Ports[i]
			}
		}
		sg := o.container(t, "streamguard", false)
		if sp == nil || sp.TargetPort.String() != "ext-proc" {
			t.Errorf("%s: Service %s has no port %d to the container port ext-proc (%+v)", ov, svc.Name, port, svc.Spec.Ports)
		}
		// Health: /readyz on the pods' HTTP port (503 while draining).
		hc := grpcCluster.GetHealthChecks()
		var httpPort int32
		for _, p := range sg.Ports {
			if p.Name == "http" {
				httpPort = p.ContainerPort
			}
		}
		if len(hc) != 1 || hc[0].GetHttpHealthCheck().GetPath() != "/readyz" || hc[0].GetHttpHealthCheck().GetCodecClientType() != typev3.CodecClientType_HTTP1 {
			t.Errorf("ext_proc cluster health checks %v: want GET /readyz over HTTP/1.1 (draining pods must get no new exchanges)", hc)
		}
		if hc := lbe.GetHealthCheckConfig().GetPortValue(); hc != uint32(httpPort) {
			t.Errorf("ext_proc endpoint health_check_config port %d, want the pods' HTTP port %d (the gRPC port has no /readyz)", hc, httpPort)
		}
	}
	// Every completion in flight holds one request of this cluster: Envoy's
	// default circuit breakers (1024 requests, 1024 pending) would fail the
	// next one, closed.
	var th *clusterv3.CircuitBreakers_Thresholds
	for _, x := range grpcCluster.GetCircuitBreakers().GetThresholds() {
		if x.GetPriority() == corev3.RoutingPriority_DEFAULT {
			th = x
		}
	}
	if th.GetMaxRequests().GetValue() <= 1024 || th.GetMaxPendingRequests().GetValue() <= 1024 {
		t.Errorf("ext_proc cluster circuit breakers %v: want max_requests and max_pending_requests above Envoy's defaults (1024)", th)
	}

	// Routes for every OpenAI text path (the filter decides on each, it is
	// on all of them: extProcCoverage).
	routes := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()
	for _, p := range []string{"/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions", "/v1/responses", "/responses", "/v1/models"} {
		if firstMatch(routes, p) == nil {
			t.Errorf("no route for %s", p)
		}
	}
	for _, p := range []string{"/v1/chat/completions", "/v1/responses"} {
		if r := firstMatch(routes, p); r != nil && r.GetRoute().GetTimeout().AsDuration() != 0 {
			t.Errorf("%s route timeout %v: a streamed answer lasts as long as the model writes", p, r.GetRoute().GetTimeout().AsDuration())
		}
	}
}

const (
	hcmType     = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	extProcType = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
)

// extProcCoverage walks every way a request can pass through the Envoy
// configuration and says where the ext_proc filter could be switched off
// or bypassed: every listener and filter chain (the default one included)
// must be an HTTP connection manager whose first HTTP filter is ext_proc,
// neither disabled nor optional nor configured elsewhere (ECDS), with paths
// normalised; upgrades may not bring their own filter list; routes must be
// in the file (no RDS, scoped routes or VHDS), and no route configuration,
// virtual host, route or weighted cluster may carry a per-filter config of
// it (ExtProcPerRoute can disable it or change its modes, and Envoy does
// not tell streamguard). It returns the ext_proc configurations it found,
// for the caller to check their modes.
func extProcCoverage(bs *bootstrapv3.Bootstrap) (eps []*extprocv3.ExternalProcessor, problems []string) {
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	if bs.GetDynamicResources() != nil {
		bad("dynamic_resources: listeners and routes from xDS are not in this file and cannot be checked")
	}
	listeners := bs.GetStaticResources().GetListeners()
	if len(listeners) == 0 {
		bad("no listener")
	}
	for _, l := range listeners {
		chains := l.GetFilterChains()
		if dc := l.GetDefaultFilterChain(); dc != nil {
			chains = append(slices.Clone(chains), dc)
		}
		if len(chains) == 0 {
			bad("listener %s: no filter chain", l.GetName())
		}
		for i, fc := range chains {
			where := fmt.Sprintf("listener %s filter chain %d %q", l.GetName(), i, fc.GetName())
			hcms := 0
			for _, f := range fc.GetFilters() {
				if f.GetTypedConfig().GetTypeUrl() != hcmType {
					// tcp_proxy and the like carry bytes past every HTTP filter.
					bad("%s: network filter %s (%s): only the HTTP connection manager, with ext_proc, may carry traffic", where, f.GetName(), f.GetTypedConfig().GetTypeUrl())
					continue
				}
				hcms++
				var hcm hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					bad("%s: %v", where, err)
					continue
				}
				eps = append(eps, checkHCM(where, &hcm, bad)...)
			}
			if hcms == 0 {
				bad("%s: no HTTP connection manager", where)
			}
		}
	}
	return eps, problems
}

// checkHCM is extProcCoverage's check of one HTTP connection manager.
func checkHCM(where string, hcm *hcmv3.HttpConnectionManager, bad func(string, ...any)) []*extprocv3.ExternalProcessor {
	// Routing reads the path as the upstream will: RFC 3986 normalised,
	// slashes merged.
	if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() {
		bad("%s: normalize_path %v, merge_slashes %v: want both, so that routes match the path the upstream reads", where, hcm.GetNormalizePath().GetValue(), hcm.GetMergeSlashes())
	}
	name, ep := extProcFirst(where, hcm.GetHttpFilters(), bad)
	for _, u := range hcm.GetUpgradeConfigs() {
		if len(u.GetFilters()) > 0 { // replaces the filter chain for upgraded requests
			extProcFirst(fmt.Sprintf("%s upgrade %s", where, u.GetUpgradeType()), u.GetFilters(), bad)
		}
	}
	if ep == nil {
		return nil
	}
	perFilter := func(what string, m map[string]*anypb.Any) {
		for k, v := range m {
			if k == name || strings.HasSuffix(v.GetTypeUrl(), ".ExtProcPerRoute") {
				bad("%s: %s: a per-filter config of ext_proc (%s: it may disable the filter or change its modes)", where, what, k)
			}
		}
	}
	rc := hcm.GetRouteConfig()
	if rc == nil {
		bad("%s: routes not in this file (RDS or scoped routes): the filter's per-route configs cannot be checked", where)
		return []*extprocv3.ExternalProcessor{ep}
	}
	if rc.GetVhds() != nil {
		bad("%s: route configuration %s takes virtual hosts from VHDS", where, rc.GetName())
	}
	perFilter("route configuration "+rc.GetName(), rc.GetTypedPerFilterConfig())
	for _, vh := range rc.GetVirtualHosts() {
		perFilter("virtual host "+vh.GetName(), vh.GetTypedPerFilterConfig())
		for _, r := range vh.GetRoutes() {
			what := fmt.Sprintf("virtual host %s route %v", vh.GetName(), r.GetMatch())
			perFilter(what, r.GetTypedPerFilterConfig())
			for _, c := range r.GetRoute().GetWeightedClusters().GetClusters() {
				perFilter(what+" weighted cluster "+c.GetName(), c.GetTypedPerFilterConfig())
			}
		}
	}
	return []*extprocv3.ExternalProcessor{ep}
}

// extProcFirst checks that the first of filters is ext_proc, switched on,
// and returns its name and configuration.
func extProcFirst(where string, filters []*hcmv3.HttpFilter, bad func(string, ...any)) (string, *extprocv3.ExternalProcessor) {
	if len(filters) == 0 || filters[0].GetTypedConfig().GetTypeUrl() != extProcType {
		names := make([]string, len(filters))
		for i, f := range filters {
			names[i] = f.GetName()
		}
		bad("%s: http filters %v: want ext_proc first (a filter before it acts on what it has not judged)", where, names)
		return "", nil
	}
	f := filters[0]
	if f.GetDisabled() {
		bad("%s: ext_proc filter %s is disabled (disabled: true)", where, f.GetName())
	}
	if f.GetIsOptional() {
		bad("%s: ext_proc filter %s is optional (is_optional: true)", where, f.GetName())
	}
	var ep extprocv3.ExternalProcessor
	if err := f.GetTypedConfig().UnmarshalTo(&ep); err != nil {
		bad("%s: %v", where, err)
		return "", nil
	}
	return f.GetName(), &ep
}

// TestExtProcCoverage: each way to switch the filter off or go around it,
// applied to the shipped ext-proc.yaml, is reported by extProcCoverage.
func TestExtProcCoverage(t *testing.T) {
	shipped, _ := envoyBootstrap(t, "ext-proc.yaml")
	if _, problems := extProcCoverage(shipped); len(problems) > 0 {
		t.Fatalf("shipped ext-proc.yaml: %v", problems)
	}
	off, err := anypb.New(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Disabled{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := anypb.New(&routev3.FilterConfig{Config: off, Disabled: true})
	if err != nil {
		t.Fatal(err)
	}
	const name = "envoy.filters.http.ext_proc"
	router := func(h *hcmv3.HttpConnectionManager) *hcmv3.HttpFilter {
		return h.GetHttpFilters()[len(h.GetHttpFilters())-1]
	}
	withHCM := func(bs *bootstrapv3.Bootstrap, l int, edit func(*hcmv3.HttpConnectionManager)) {
		f := bs.GetStaticResources().GetListeners()[l].GetFilterChains()[0].GetFilters()[0]
		var h hcmv3.HttpConnectionManager
		if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		edit(&h)
		a, err := anypb.New(&h)
		if err != nil {
			t.Fatal(err)
		}
		f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	}
	for what, edit := range map[string]func(*bootstrapv3.Bootstrap){
		"filter disabled": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) { h.HttpFilters[0].Disabled = true })
		},
		"filter optional": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) { h.HttpFilters[0].IsOptional = true })
		},
		"filter removed": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = h.HttpFilters[1:] })
		},
		"paths not normalised": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) { h.MergeSlashes = false })
		},
		"route configuration per-filter config": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) {
				h.GetRouteConfig().TypedPerFilterConfig = map[string]*anypb.Any{name: off}
			})
		},
		"virtual host per-filter config": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) {
				h.GetRouteConfig().GetVirtualHosts()[0].TypedPerFilterConfig = map[string]*anypb.Any{name: wrapped}
			})
		},
		"route per-filter config": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) {
				h.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[1].TypedPerFilterConfig = map[string]*anypb.Any{name: off}
			})
		},
		"per-route config under another key": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) {
				h.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].TypedPerFilterConfig = map[string]*anypb.Any{"other": off}
			})
		},
		"weighted cluster per-filter config": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) {
				r := h.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute()
				r.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
					{Name: r.GetCluster(), Weight: wrapperspb.UInt32(99)},
					{Name: r.GetCluster(), Weight: wrapperspb.UInt32(1), TypedPerFilterConfig: map[string]*anypb.Any{name: off}},
				}}}
			})
		},
		"another virtual host": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) {
				vh := proto.Clone(h.GetRouteConfig().GetVirtualHosts()[0]).(*routev3.VirtualHost)
				vh.Name, vh.Domains = "direct", []string{"llm.internal"}
				vh.GetRoutes()[0].TypedPerFilterConfig = map[string]*anypb.Any{name: off}
				h.GetRouteConfig().VirtualHosts = append([]*routev3.VirtualHost{vh}, h.GetRouteConfig().GetVirtualHosts()...)
			})
		},
		"another listener without the filter": func(bs *bootstrapv3.Bootstrap) {
			l := proto.Clone(bs.GetStaticResources().GetListeners()[0]).(*listenerv3.Listener)
			l.Name = "side-door"
			bs.GetStaticResources().Listeners = append(bs.GetStaticResources().GetListeners(), l)
			withHCM(bs, 1, func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = []*hcmv3.HttpFilter{router(h)} })
		},
		"a default filter chain without the filter": func(bs *bootstrapv3.Bootstrap) {
			l := bs.GetStaticResources().GetListeners()[0]
			l.DefaultFilterChain = proto.Clone(l.GetFilterChains()[0]).(*listenerv3.FilterChain)
			l.DefaultFilterChain.Filters = []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{
				TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"}}}}
		},
		"routes from RDS": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) {
				h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "llm"}}
			})
		},
		"an upgrade with its own filters": func(bs *bootstrapv3.Bootstrap) {
			withHCM(bs, 0, func(h *hcmv3.HttpConnectionManager) {
				h.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket", Filters: []*hcmv3.HttpFilter{router(h)}}}
			})
		},
		"dynamic listeners": func(bs *bootstrapv3.Bootstrap) {
			bs.DynamicResources = &bootstrapv3.Bootstrap_DynamicResources{}
		},
	} {
		bs := proto.Clone(shipped).(*bootstrapv3.Bootstrap)
		edit(bs)
		if _, problems := extProcCoverage(bs); len(problems) == 0 {
			t.Errorf("%s: not reported", what)
		} else {
			t.Logf("%s: %s", what, problems[0])
		}
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
	// Help that was asked for is on stdout.
	out, err := exec.Command(streamguard(t), "serve", "-h").Output()
	if err != nil {
		t.Fatalf("serve -h: %v", err)
	}
	m := regexp.MustCompile(`(?s)-` + regexp.QuoteMeta(name) + ` duration.*?\(default ([0-9a-zµ.]+)\)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("serve -h shows no --%s default:\n%s", name, out)
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

// TestUpstreamTLSVerified: every cluster of the shipped Envoy
// configurations that speaks TLS checks the peer's certificate against
// trusted CAs and its name. Without a validation context Envoy checks
// nothing, and the prompts and the key streamguard sets as Authorization
// would go to whoever answers on the upstream's address.
func TestUpstreamTLSVerified(t *testing.T) {
	for _, file := range []string{"ext-proc.yaml", "envoy.yaml"} {
		bs, _ := envoyBootstrap(t, file)
		for _, c := range bs.GetStaticResources().GetClusters() {
			ts := c.GetTransportSocket()
			if ts == nil {
				continue
			}
			var tls tlsv3.UpstreamTlsContext
			if err := ts.GetTypedConfig().UnmarshalTo(&tls); err != nil {
				t.Errorf("%s: cluster %s: transport socket %s: %v", file, c.GetName(), ts.GetName(), err)
				continue
			}
			vc := tls.GetCommonTlsContext().GetValidationContext()
			if vc.GetTrustedCa() == nil || len(vc.GetMatchTypedSubjectAltNames()) == 0 {
				t.Errorf("%s: cluster %s speaks TLS without checking the peer (validation_context with trusted_ca and match_typed_subject_alt_names)", file, c.GetName())
			}
			if sni := tls.GetSni(); sni != "" && !slices.ContainsFunc(vc.GetMatchTypedSubjectAltNames(), func(m *tlsv3.SubjectAltNameMatcher) bool {
				return m.GetSanType() == tlsv3.SubjectAltNameMatcher_DNS && m.GetMatcher().GetExact() == sni
			}) {
				t.Errorf("%s: cluster %s: SNI %s is not among the names its certificate must hold", file, c.GetName(), sni)
			}
		}
	}
}
