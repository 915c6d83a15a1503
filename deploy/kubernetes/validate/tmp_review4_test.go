package validate

// Review reproductions (deployment review 4). Each test states a property
// the shipped configuration should have and currently lacks; they fail on
// the checkout as reviewed. Nothing here changes the configuration.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// No NetworkPolicy: every pod in the cluster reaches the API, /metrics and,
// once --ext-proc-addr 0.0.0.0:9090 is added as DEPLOY.md says, the
// unauthenticated ext_proc gRPC port (whose header mutation returns the
// tenant's upstream_key to the caller).
func TestReview4NetworkPolicy(t *testing.T) {
	for _, name := range overlays {
		m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(k8sDir, "overlays", name))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range m.Resources() {
			if r.GetKind() == "NetworkPolicy" {
				n++
			}
		}
		if n == 0 {
			t.Errorf("%s: no NetworkPolicy restricts ingress to the streamguard pods (8080 API+/metrics, 9090 ext_proc)", name)
		}
	}
}

// /metrics (tenant names, per-tenant traffic) and the playground are
// unauthenticated and the public Envoy listener routes them to the pods.
func TestReview4MetricsNotPublic(t *testing.T) {
	bs, _ := envoyBootstrap(t, "envoy.yaml")
	var hcm hcmv3.HttpConnectionManager
	if err := bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	routes := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()
	for _, p := range []string{"/metrics"} {
		if r := firstMatch(routes, p); r != nil && r.GetRoute().GetCluster() != "" {
			t.Errorf("envoy.yaml: public listener %s routes %s to cluster %s", hcm.GetStatPrefix(), p, r.GetRoute().GetCluster())
		}
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "haproxy", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "/metrics") {
		t.Error("haproxy.cfg: no rule keeps /metrics off the public frontend")
	}
}

// The ext_proc gRPC cluster points at the ClusterIP Service "streamguard":
// Envoy sees one host and multiplexes every exchange on a few long-lived
// HTTP/2 connections that kube-proxy pins to whichever pods they first
// reached (new pods from the HPA get none), with no health check on the
// draining pods. It should be the headless Service (one host per pod), on
// a port that Service actually has.
func TestReview4ExtProcClusterPerPod(t *testing.T) {
	bs, _ := envoyBootstrap(t, "ext-proc.yaml")
	var hcm hcmv3.HttpConnectionManager
	if err := bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	var ep extprocv3.ExternalProcessor
	if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&ep); err != nil {
		t.Fatal(err)
	}
	var c *clusterv3.Cluster
	for _, cl := range bs.GetStaticResources().GetClusters() {
		if cl.GetName() == ep.GetGrpcService().GetEnvoyGrpc().GetClusterName() {
			c = cl
		}
	}
	sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	o := render(t, "cpu")
	svc := o.svc[sa.GetAddress()]
	if svc == nil || svc.Spec.ClusterIP != "None" {
		t.Errorf("ext_proc cluster %s -> %s:%d: not the headless Service (gRPC over a ClusterIP is balanced per connection, not per exchange)", c.GetName(), sa.GetAddress(), sa.GetPortValue())
	}
	hasPort := false
	if svc != nil {
		for _, p := range svc.Spec.Ports {
			hasPort = hasPort || uint32(p.Port) == sa.GetPortValue()
		}
	}
	if !hasPort {
		t.Errorf("Service %s has no port %d", sa.GetAddress(), sa.GetPortValue())
	}
	if len(c.GetHealthChecks()) == 0 {
		t.Errorf("ext_proc cluster %s: no health check (draining pods keep getting exchanges)", c.GetName())
	}
}

// Two replicas (minReplicas) with no anti-affinity or spread can share a
// node: one node loss takes every stream and the whole guard down (the
// PDB only covers voluntary disruptions).
func TestReview4Spread(t *testing.T) {
	for _, name := range overlays {
		pod := render(t, name).dep.Spec.Template.Spec
		if len(pod.TopologySpreadConstraints) == 0 && (pod.Affinity == nil || pod.Affinity.PodAntiAffinity == nil) {
			t.Errorf("%s: no topologySpreadConstraints or podAntiAffinity", name)
		}
	}
}

// spec.replicas in a Deployment the HPA scales: every `kubectl apply -k`
// (a new tenant file, an image bump) resets it to 2, then the HPA scales
// back up; each step moves stream ids (stream_lost for their clients).
func TestReview4ReplicasLeftToHPA(t *testing.T) {
	for _, name := range overlays {
		o := render(t, name)
		if o.hpa != nil && o.dep.Spec.Replicas != nil {
			t.Errorf("%s: Deployment sets replicas: %d while HPA %s scales it", name, *o.dep.Spec.Replicas, o.hpa.Name)
		}
	}
}
