package validate

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The repository root and the folders under test, from this package.
var (
	repoRoot  = filepath.Join("..", "..", "..")
	k8sDir    = ".."
	overlays  = []string{"cpu", "gpu"}
	tmpDir    string
	binOnce   sync.Once
	binPath   string
	binErr    error
	errNoRepo = fmt.Errorf("not run from deploy/kubernetes/validate in a streamguard checkout")
)

func TestMain(m *testing.M) {
	var err error
	if tmpDir, err = os.MkdirTemp("", "sg-validate-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmpDir)
	os.Exit(code)
}

// streamguard builds this checkout's binary once: the manifests' commands
// and flags are checked against it.
func streamguard(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(repoRoot, "cmd", "streamguard")); err != nil {
			binErr = errNoRepo
			return
		}
		binPath = filepath.Join(tmpDir, "streamguard")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/streamguard")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/streamguard: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// overlay is one rendered overlay, indexed.
type overlay struct {
	name    string
	objs    []Object
	dep     *appsv1.Deployment
	svc     map[string]*corev1.Service
	pdb     *policyv1.PodDisruptionBudget
	hpa     *autoscalingv2.HorizontalPodAutoscaler
	secrets map[string]*corev1.Secret
	netpol  map[string]*networkingv1.NetworkPolicy
}

// withExtProc are the overlays with the ext-proc component added, as
// docs/DEPLOY.md tells users to add it.
var withExtProc = []string{"cpu+ext-proc", "gpu+ext-proc"}

// render renders overlays/NAME or, for "NAME+COMPONENT...", that overlay
// with components/COMPONENT... added (a kustomization written to a
// temporary folder, since kustomize refuses absolute paths).
func render(t *testing.T, name string) *overlay {
	t.Helper()
	parts := strings.Split(name, "+")
	dir := filepath.Join(k8sDir, "overlays", parts[0])
	if len(parts) > 1 {
		dir = t.TempDir()
		rel := func(p string) string {
			abs, err := filepath.Abs(p)
			if err != nil {
				t.Fatal(err)
			}
			r, err := filepath.Rel(dir, abs)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - " + rel(filepath.Join(k8sDir, "overlays", parts[0])) + "\ncomponents:\n"
		for _, c := range parts[1:] {
			k += "  - " + rel(filepath.Join(k8sDir, "components", c)) + "\n"
		}
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	o := &overlay{name: name, objs: objs, svc: map[string]*corev1.Service{}, secrets: map[string]*corev1.Secret{}, netpol: map[string]*networkingv1.NetworkPolicy{}}
	kinds := map[string]int{}
	for _, obj := range objs {
		kinds[obj.Kind]++
		switch v := obj.Obj.(type) {
		case *appsv1.Deployment:
			o.dep = v
		case *corev1.Service:
			o.svc[v.Name] = v
		case *policyv1.PodDisruptionBudget:
			o.pdb = v
		case *autoscalingv2.HorizontalPodAutoscaler:
			o.hpa = v
		case *corev1.Secret:
			o.secrets[v.Name] = v
		case *networkingv1.NetworkPolicy:
			o.netpol[v.Name] = v
		}
	}
	want := map[string]int{"ServiceAccount": 1, "Deployment": 1, "Service": 2, "PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1, "Secret": 1, "NetworkPolicy": 1}
	if slices.Contains(parts[1:], "ext-proc") {
		want["NetworkPolicy"]++ // the ext_proc port's
	}
	total := 0
	for k, n := range want {
		if kinds[k] != n {
			t.Fatalf("%s: %d %s objects, want %d (all: %v)", name, kinds[k], k, n, kinds)
		}
		total += n
	}
	if len(objs) != total {
		t.Fatalf("%s: %d objects, want %d: %v", name, len(objs), total, kinds)
	}
	return o
}

func (o *overlay) container(t *testing.T, name string, init bool) *corev1.Container {
	t.Helper()
	list := o.dep.Spec.Template.Spec.Containers
	if init {
		list = o.dep.Spec.Template.Spec.InitContainers
	}
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	t.Fatalf("%s: no container %q", o.name, name)
	return nil
}

// flags reads "SUBCOMMAND --name=value --bool ..." into a map; every
// argument after the subcommand must be a flag, values joined with "=",
// so that nothing is read as a positional argument by mistake.
func flags(t *testing.T, args []string, sub string) map[string]string {
	t.Helper()
	if len(args) == 0 || args[0] != sub {
		t.Fatalf("args %q: want subcommand %s first", args, sub)
	}
	m := map[string]string{}
	for _, a := range args[1:] {
		if !strings.HasPrefix(a, "--") {
			if sub == "pull" && len(m) == 0 && !strings.HasPrefix(a, "-") {
				m[""] = a // pull's ORG/NAME
				continue
			}
			t.Fatalf("args %q: %q is not a --flag", args, a)
		}
		k, v, ok := strings.Cut(a[2:], "=")
		if !ok {
			v = "true"
		}
		if _, dup := m[k]; dup {
			t.Fatalf("args %q: --%s given twice", args, k)
		}
		m[k] = v
	}
	return m
}

func seconds(t *testing.T, what, d string) int64 {
	t.Helper()
	v, err := time.ParseDuration(d)
	if err != nil {
		t.Fatalf("%s %q: %v", what, d, err)
	}
	return int64(v.Seconds())
}

func envOf(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// TestStrictDecoding: the decoder really refuses what a cluster would.
func TestStrictDecoding(t *testing.T) {
	good := "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 80}]\n"
	if o, err := DecodeStrict([]byte(good)); err != nil || o.Obj.(*corev1.Service).Spec.Ports[0].Port != 80 {
		t.Fatalf("valid Service: %v", err)
	}
	for name, y := range map[string]string{
		"unknown field":     "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  portz: [{port: 80}]\n",
		"field in its case": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  Ports: [{port: 80}]\n",
		"duplicate key":     "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 80}]\n  ports: [{port: 81}]\n",
		"nested unknown":    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: [{name: a, image: b, readinessProbe: {httpGet: {path: /readyz, port: 80}, periodSecs: 3}}]\n",
		"wrong type":        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: eighty}]\n",
		"unknown kind":      "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
		"wrong version":     "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: x}\n",
	} {
		if _, err := DecodeStrict([]byte(y)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// TestDeployment checks what each overlay's Deployment promises.
func TestDeployment(t *testing.T) {
	for _, name := range overlays {
		t.Run(name, func(t *testing.T) {
			o := render(t, name)
			pod := &o.dep.Spec.Template.Spec
			sg := o.container(t, "streamguard", false)
			pull := o.container(t, "pull", true)
			serve := flags(t, sg.Args, "serve")

			// The port serve listens on is the container's "http" port,
			// and every probe asks it the right path.
			_, port, err := net.SplitHostPort(serve["addr"])
			if err != nil {
				t.Fatalf("--addr %q: %v", serve["addr"], err)
			}
			if len(sg.Ports) != 1 || sg.Ports[0].Name != "http" || strconv.Itoa(int(sg.Ports[0].ContainerPort)) != port {
				t.Fatalf("container ports %+v, serve --addr %s", sg.Ports, serve["addr"])
			}
			for _, p := range []struct {
				what  string
				probe *corev1.Probe
				path  string
			}{{"readiness", sg.ReadinessProbe, "/readyz"}, {"liveness", sg.LivenessProbe, "/healthz"}, {"startup", sg.StartupProbe, "/healthz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil {
					t.Fatalf("%s probe missing or not HTTP", p.what)
				}
				if g := p.probe.HTTPGet; g.Path != p.path || g.Port.String() != "http" {
					t.Errorf("%s probe GET %s on port %s, want %s on port http", p.what, g.Path, g.Port.String(), p.path)
				}
			}

			// Shutdown fits in the grace period: preStop, then the drain
			// delay, then the requests in progress.
			if sg.Lifecycle == nil || sg.Lifecycle.PreStop == nil || sg.Lifecycle.PreStop.Sleep == nil {
				t.Fatal("no preStop sleep (the image has no shell to run one)")
			}
			preStop := sg.Lifecycle.PreStop.Sleep.Seconds
			drain := seconds(t, "--drain-delay", serve["drain-delay"])
			shutdown := seconds(t, "--shutdown-timeout", serve["shutdown-timeout"])
			grace := pod.TerminationGracePeriodSeconds
			if grace == nil || *grace < preStop+drain+shutdown+5 {
				g := "unset (30)"
				if grace != nil {
					g = strconv.FormatInt(*grace, 10)
				}
				t.Errorf("terminationGracePeriodSeconds %s < preStop %d + --drain-delay %d + --shutdown-timeout %d + 5 s", g, preStop, drain, shutdown)
			}
			// The drain lasts long enough for the readiness probe to see it.
			rp := sg.ReadinessProbe
			if seen := int64(rp.PeriodSeconds * rp.FailureThreshold); drain < seen+2 {
				t.Errorf("--drain-delay %ds: the readiness probe needs %ds to fail (period %d × threshold %d), plus a margin", drain, seen, rp.PeriodSeconds, rp.FailureThreshold)
			}

			// Non-root, read-only root, no privileges, in every container.
			psc := pod.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
				t.Errorf("pod securityContext %+v: want runAsNonRoot and a non-zero runAsUser", psc)
			}
			if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
				t.Error("the service account token is mounted; streamguard calls no Kubernetes API")
			}
			for _, c := range []*corev1.Container{sg, pull} {
				sc := c.SecurityContext
				if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
					sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
					sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
					t.Errorf("container %s securityContext %+v: want readOnlyRootFilesystem, no privilege escalation, capabilities dropped", c.Name, sc)
				}
			}

			// The init container pulls the model serve loads, into the
			// cache serve reads offline and read-only.
			pf := flags(t, pull.Args, "pull")
			if pf[""] == "" || pf[""] != serve["model"] {
				t.Errorf("init container pulls %q, serve loads %q", pf[""], serve["model"])
			}
			for _, c := range []*corev1.Container{sg, pull} {
				if e := envOf(c, "HF_HOME"); e == nil || !strings.HasPrefix(e.Value, mountOf(c, "cache")+"/") {
					t.Errorf("container %s: HF_HOME %v is not on the cache volume (mounted at %q)", c.Name, e, mountOf(c, "cache"))
				}
			}
			if envOf(sg, "HF_HOME").Value != envOf(pull, "HF_HOME").Value {
				t.Error("the init container and serve use different HF_HOME")
			}
			if e := envOf(sg, "HF_HUB_OFFLINE"); e == nil || e.Value != "1" {
				t.Error("serve is not offline: it could download at start")
			}
			if !mountReadOnly(sg, "cache") || mountReadOnly(pull, "cache") {
				t.Error("want the cache read-only for serve and writable for the init container")
			}
			var cache *corev1.Volume
			for i := range pod.Volumes {
				if pod.Volumes[i].Name == "cache" {
					cache = &pod.Volumes[i]
				}
			}
			if cache == nil || cache.EmptyDir == nil && cache.PersistentVolumeClaim == nil {
				t.Error("no cache volume")
			}
			// The scheduler places the pod where its emptyDirs fit: the
			// containers ask for at least their size limits in disk.
			var dirs, disk resource.Quantity
			for _, v := range pod.Volumes {
				if v.EmptyDir != nil {
					if v.EmptyDir.SizeLimit == nil {
						t.Errorf("emptyDir %s has no sizeLimit", v.Name)
						continue
					}
					dirs.Add(*v.EmptyDir.SizeLimit)
				}
			}
			for _, c := range pod.Containers {
				disk.Add(*c.Resources.Requests.StorageEphemeral())
			}
			if disk.Cmp(dirs) < 0 {
				t.Errorf("containers request %v of ephemeral-storage, the emptyDirs may hold %v", &disk, &dirs)
			}

			// --config is the tenant file from the generated Secret.
			cfgDir, cfgFile := path.Split(serve["config"])
			var secretName string
			for _, v := range pod.Volumes {
				if v.Secret != nil && mountOf(sg, v.Name)+"/" == cfgDir {
					secretName = v.Secret.SecretName
				}
			}
			sec := o.secrets[secretName]
			if sec == nil || len(sec.Data[cfgFile]) == 0 {
				t.Fatalf("--config %s: no mounted Secret holds %s (volume names Secret %q; rendered %v)", serve["config"], cfgFile, secretName, keys(o.secrets))
			}

			// Each pod names itself in X-Streamguard-Replica and refuses
			// streams opened without a client-chosen id.
			if serve["replica-id"] != "$(POD_NAME)" || serve["require-stream-id"] != "true" {
				t.Errorf("--replica-id %q, --require-stream-id %q", serve["replica-id"], serve["require-stream-id"])
			}
			if e := envOf(sg, "POD_NAME"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Error("POD_NAME is not the pod's name")
			}

			// No playground on a port the balancers expose.
			if serve["ui"] != "false" {
				t.Errorf("--ui %q: the playground is served (want --ui=false)", serve["ui"])
			}

			// The HPA alone sets the replica count: a replicas field would be
			// re-applied by every `kubectl apply -k`, moving stream ids twice.
			if o.dep.Spec.Replicas != nil {
				t.Errorf("the Deployment sets replicas: %d while HPA %s scales it", *o.dep.Spec.Replicas, o.hpa.Name)
			}

			// The replicas spread over nodes and zones, so that one node
			// failure does not take every pod (the PDB covers voluntary
			// disruptions only).
			spread := map[string]corev1.TopologySpreadConstraint{}
			for _, c := range pod.TopologySpreadConstraints {
				spread[c.TopologyKey] = c
				sel, err := metav1.LabelSelectorAsSelector(c.LabelSelector)
				if err != nil || c.LabelSelector == nil || sel.Empty() || !sel.Matches(labelsSet(o.dep.Spec.Template.Labels)) {
					t.Errorf("topology spread over %s: labelSelector %v does not select the pods (%v)", c.TopologyKey, c.LabelSelector, err)
				}
				if c.MaxSkew != 1 {
					t.Errorf("topology spread over %s: maxSkew %d, want 1", c.TopologyKey, c.MaxSkew)
				}
			}
			if _, ok := spread["kubernetes.io/hostname"]; !ok {
				t.Error("no topologySpreadConstraints over kubernetes.io/hostname")
			}
			if c, ok := spread["topology.kubernetes.io/zone"]; !ok || c.WhenUnsatisfiable != corev1.ScheduleAnyway {
				t.Error("no topologySpreadConstraints over topology.kubernetes.io/zone with ScheduleAnyway (a cluster in one zone must still schedule)")
			}

			// Resources: every overlay sizes the container; gpu asks for one GPU.
			req, lim := sg.Resources.Requests, sg.Resources.Limits
			if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
				t.Errorf("resources %+v: want cpu and memory requests and a memory limit", sg.Resources)
			}
			budget := serve["kv-budget"]
			if q, err := resource.ParseQuantity(strings.TrimSuffix(budget, "B")); err != nil || lim.Memory().Cmp(q) <= 0 {
				t.Errorf("memory limit %v is not above --kv-budget %s", lim.Memory(), budget)
			}
			gpu := corev1.ResourceName("nvidia.com/gpu")
			g, hasGPU := lim[gpu]
			switch name {
			case "gpu":
				if !hasGPU || g.Value() != 1 {
					t.Errorf("gpu overlay: limits %v, want nvidia.com/gpu: 1", lim)
				}
				if pod.NodeSelector["nvidia.com/gpu.present"] != "true" || len(pod.Tolerations) == 0 || pod.Tolerations[0].Key != "nvidia.com/gpu" {
					t.Errorf("gpu overlay: nodeSelector %v, tolerations %+v", pod.NodeSelector, pod.Tolerations)
				}
				// The GPU is used: serve is told to, from the CUDA image.
				if d := serve["device"]; d != "auto" && !strings.HasPrefix(d, "cuda") {
					t.Errorf("gpu overlay: --device %q, want auto or cuda", d)
				}
				if !strings.HasSuffix(sg.Image, "-cuda") {
					t.Errorf("gpu overlay: image %s is not the CUDA build", sg.Image)
				}
				// The overlay's env and mounts add to the base's.
				if envOf(sg, "HF_HUB_OFFLINE") == nil || envOf(sg, "CUDA_CACHE_PATH") == nil || mountOf(sg, "cuda-cache") != envOf(sg, "CUDA_CACHE_PATH").Value {
					t.Errorf("gpu overlay: env %+v, mounts %+v", sg.Env, sg.VolumeMounts)
				}
			default:
				if hasGPU || len(pod.Tolerations) > 0 || serve["device"] != "" && serve["device"] != "cpu" {
					t.Errorf("%s overlay asks for a GPU", name)
				}
			}

			// The Services and the PDB select these pods, on the named port.
			labels := o.dep.Spec.Template.Labels
			for _, s := range o.svc {
				for k, v := range s.Spec.Selector {
					if labels[k] != v {
						t.Errorf("Service %s selects %s=%s; the pods have %v", s.Name, k, v, labels)
					}
				}
				if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].TargetPort.String() != "http" {
					t.Errorf("Service %s ports %+v: want target port http", s.Name, s.Spec.Ports)
				}
			}
			if h := o.svc["streamguard-pods"]; h == nil || h.Spec.ClusterIP != corev1.ClusterIPNone || strconv.Itoa(int(h.Spec.Ports[0].Port)) != port {
				t.Errorf("no headless Service streamguard-pods on port %s for the hashing balancers", port)
			}
			for k, v := range o.pdb.Spec.Selector.MatchLabels {
				if labels[k] != v {
					t.Errorf("PodDisruptionBudget selects %s=%s", k, v)
				}
			}
			if o.pdb.Spec.MaxUnavailable == nil || o.pdb.Spec.MaxUnavailable.IntValue() != 1 {
				t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1", o.pdb.Spec.MaxUnavailable)
			}
			// A pod that is not ready does not hold drains up.
			if p := o.pdb.Spec.UnhealthyPodEvictionPolicy; p == nil || *p != policyv1.AlwaysAllow {
				t.Errorf("PodDisruptionBudget unhealthyPodEvictionPolicy %v, want AlwaysAllow", p)
			}
			if ref := o.hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != o.dep.Name || ref.APIVersion != "apps/v1" {
				t.Errorf("HPA scales %+v", ref)
			}
		})
	}
}

func labelsSet(m map[string]string) labels.Set { return labels.Set(m) }

// The pod labels docs/DEPLOY.md tells users to put on the pods that may
// reach streamguard: balancers and API clients (the HTTP port), and the
// Envoy gateway of the ext_proc filter (the ext_proc port, and the HTTP
// port for its health checks).
const (
	clientLabel  = "streamguard.io/client"
	gatewayLabel = "streamguard.io/gateway"
)

// TestNetworkPolicy: ingress to the pods is refused but for the HTTP port
// from the balancers' and gateway's pods (by label, in the namespace) and
// from Prometheus (pods in a namespace, both named), and, with the ext-proc
// component, the ext_proc port from the gateway's pods alone. No rule lets
// in a whole namespace, the whole cluster, an address block or every port.
func TestNetworkPolicy(t *testing.T) {
	docs, err := os.ReadFile(filepath.Join(repoRoot, "docs", "DEPLOY.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{clientLabel, gatewayLabel} {
		if !strings.Contains(string(docs), l+`: "true"`) {
			t.Errorf("docs/DEPLOY.md does not name the pod label %s: \"true\"", l)
		}
	}
	for _, name := range append(slices.Clone(overlays), withExtProc...) {
		t.Run(name, func(t *testing.T) {
			o := render(t, name)
			sg := o.container(t, "streamguard", false)
			serve := flags(t, sg.Args, "serve")
			ports := map[string]int32{}
			for _, p := range sg.Ports {
				ports[p.Name] = p.ContainerPort
			}
			podLabels := labelsSet(o.dep.Spec.Template.Labels)
			inNS := func(label string) string { return "pods " + label + "=true in the namespace" }
			allowed := map[int32]map[string]bool{} // port -> peers
			others := map[int32]int{}              // port -> peers that name a namespace and pods
			selecting := 0
			for _, np := range o.netpol {
				sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
				if err != nil || !sel.Matches(podLabels) {
					t.Errorf("NetworkPolicy %s does not select the pods (%v)", np.Name, err)
					continue
				}
				selecting++
				if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
					t.Errorf("NetworkPolicy %s: policyTypes %v without Ingress", np.Name, np.Spec.PolicyTypes)
				}
				for i, r := range np.Spec.Ingress {
					if len(r.From) == 0 || len(r.Ports) == 0 {
						t.Errorf("NetworkPolicy %s rule %d: from %v, ports %v: an empty list lets in every source or every port", np.Name, i, r.From, r.Ports)
						continue
					}
					for _, p := range r.Ports {
						if p.Port == nil || p.Port.Type != intstr.Int || p.EndPort != nil || p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
							t.Errorf("NetworkPolicy %s rule %d: port %+v, want one TCP port by number", np.Name, i, p)
							continue
						}
						port := p.Port.IntVal
						if allowed[port] == nil {
							allowed[port] = map[string]bool{}
						}
						for _, f := range r.From {
							switch {
							case f.IPBlock != nil:
								t.Errorf("NetworkPolicy %s rule %d: ipBlock %v (pod addresses change; name the pods)", np.Name, i, f.IPBlock)
							case f.PodSelector == nil || len(f.PodSelector.MatchExpressions) > 0:
								t.Errorf("NetworkPolicy %s rule %d: peer %+v does not name its pods by labels", np.Name, i, f)
							case f.NamespaceSelector == nil && len(f.PodSelector.MatchLabels) == 1:
								for k, v := range f.PodSelector.MatchLabels {
									if v != "true" {
										t.Errorf("NetworkPolicy %s rule %d: %s=%s", np.Name, i, k, v)
									}
									allowed[port][inNS(k)] = true
								}
							case f.NamespaceSelector != nil && len(f.NamespaceSelector.MatchLabels) > 0 && len(f.NamespaceSelector.MatchExpressions) == 0 && len(f.PodSelector.MatchLabels) > 0:
								others[port]++ // Prometheus
							default:
								t.Errorf("NetworkPolicy %s rule %d: peer %+v (want one label in this namespace, or named pods in named namespaces)", np.Name, i, f)
							}
						}
					}
				}
			}
			if selecting == 0 {
				t.Fatal("no NetworkPolicy selects the pods: every pod in the cluster reaches them")
			}
			want := map[int32][]string{ports["http"]: {inNS(clientLabel), inNS(gatewayLabel)}}
			if ep, ok := ports["ext-proc"]; ok {
				want[ep] = []string{inNS(gatewayLabel)}
				if _, p, err := net.SplitHostPort(serve["ext-proc-addr"]); err != nil || p != strconv.Itoa(int(ep)) {
					t.Errorf("--ext-proc-addr %q is not the container port ext-proc %d", serve["ext-proc-addr"], ep)
				}
			} else if serve["ext-proc-addr"] != "" {
				t.Errorf("--ext-proc-addr %s without a container port ext-proc", serve["ext-proc-addr"])
			}
			for port, peers := range allowed {
				w, ok := want[port]
				if !ok {
					t.Errorf("port %d is open (%v): not a port the pods serve, or not one to open", port, keys(peers))
					continue
				}
				if got := keys(peers); !slices.Equal(got, w) {
					t.Errorf("port %d is open to %v, want %v", port, got, w)
				}
			}
			for port := range want {
				if allowed[port] == nil {
					t.Errorf("port %d is open to no one", port)
				}
			}
			if others[ports["http"]] == 0 {
				t.Errorf("port %d: Prometheus (pods in a namespace, both named) cannot scrape /metrics", ports["http"])
			}
			for port, n := range others {
				if port != ports["http"] {
					t.Errorf("port %d is open to %d peers in other namespaces: only Prometheus, on the HTTP port, is expected", port, n)
				}
			}
		})
	}
}

func mountOf(c *corev1.Container, volume string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return strings.TrimSuffix(m.MountPath, "/")
		}
	}
	return ""
}

func mountReadOnly(c *corev1.Container, volume string) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.ReadOnly
		}
	}
	return false
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestCommandsRun runs each container's command line with this checkout's
// binary: serve must accept every flag and the tenant file (it stops at
// the model, replaced by a folder that does not exist), pull must accept
// its arguments (it stops at the hub, switched off).
func TestCommandsRun(t *testing.T) {
	bin := streamguard(t)
	for _, name := range append(slices.Clone(overlays), withExtProc...) {
		t.Run(name, func(t *testing.T) {
			o := render(t, name)
			sg := o.container(t, "streamguard", false)
			serve := flags(t, sg.Args, "serve")
			dir := t.TempDir()
			tenants := filepath.Join(dir, "tenants.json")
			for _, s := range o.secrets {
				if err := os.WriteFile(tenants, s.Data[path.Base(serve["config"])], 0o600); err != nil {
					t.Fatal(err)
				}
			}
			args := []string{"serve"}
			for _, a := range sg.Args[1:] {
				switch {
				case strings.HasPrefix(a, "--model="):
					a = "--model=" + filepath.Join(dir, "no-model")
				case strings.HasPrefix(a, "--config="):
					a = "--config=" + tenants
				case strings.HasPrefix(a, "--addr="):
					a = "--addr=127.0.0.1:0"
				case strings.HasPrefix(a, "--ext-proc-addr="):
					a = "--ext-proc-addr=127.0.0.1:0"
				}
				args = append(args, strings.ReplaceAll(a, "$(POD_NAME)", "streamguard-0"))
			}
			code, stderr := run(t, bin, args, nil)
			if code != 1 || !strings.Contains(stderr, "no such folder") {
				t.Fatalf("streamguard %q: exit %d, stderr %q; want exit 1 at the missing model (flags and tenant file accepted)", args, code, stderr)
			}

			pull := o.container(t, "pull", true)
			env := []string{"HF_HUB_OFFLINE=1", "HF_HOME=" + filepath.Join(dir, "hf")}
			code, stderr = run(t, bin, pull.Args, env)
			if code != 1 || !strings.Contains(stderr, "offline") {
				t.Fatalf("streamguard %q: exit %d, stderr %q; want exit 1 because the hub is switched off (arguments accepted)", pull.Args, code, stderr)
			}
		})
	}
}

func run(t *testing.T, bin string, args, env []string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	msg := stderr.String()
	if i := strings.Index(msg, "\nUsage:"); i >= 0 { // a usage error: the message, not the flag list
		msg = msg[:i]
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), msg
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, msg
}

// adapterConfig is the part of the Prometheus adapter's configuration the
// rules file holds.
type adapterConfig struct {
	Rules []struct {
		SeriesQuery string `json:"seriesQuery"`
		Resources   struct {
			Overrides map[string]struct {
				Resource string `json:"resource"`
			} `json:"overrides"`
		} `json:"resources"`
		Name struct {
			Matches string `json:"matches"`
			As      string `json:"as"`
		} `json:"name"`
		MetricsQuery string `json:"metricsQuery"`
	} `json:"rules"`
}

var seriesName = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)
var seriesNameRegex = regexp.MustCompile(`__name__=~"([^"]+)"`)

// TestHPAMetrics: every metric the HPA scales on is served by a rule of
// the adapter, from series a running streamguard exposes on /metrics.
func TestHPAMetrics(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(k8sDir, "prometheus-adapter", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		t.Fatal(err)
	}
	var cfg adapterConfig
	if err := Strict(js, &cfg); err != nil {
		t.Fatalf("rules.yaml: %v", err)
	}
	exposed := scrape(t)
	served := map[string]bool{}
	for i, r := range cfg.Rules {
		var match func(string) bool
		if m := seriesName.FindStringSubmatch(r.SeriesQuery); m != nil {
			match = func(s string) bool { return s == m[1] }
		} else if m := seriesNameRegex.FindStringSubmatch(r.SeriesQuery); m != nil {
			re := regexp.MustCompile(m[1])
			match = re.MatchString
		} else {
			t.Fatalf("rule %d: cannot read the metric name of %q", i, r.SeriesQuery)
		}
		if !strings.Contains(r.SeriesQuery, `pod!=""`) || r.Resources.Overrides["pod"].Resource != "pod" || r.Resources.Overrides["namespace"].Resource != "namespace" {
			t.Errorf("rule %d: not per pod (the HPA's Pods metrics need the pod label mapped to pods)", i)
		}
		if !strings.Contains(r.MetricsQuery, "<<.LabelMatchers>>") || !strings.Contains(r.MetricsQuery, "<<.GroupBy>>") {
			t.Errorf("rule %d: metricsQuery %q ignores the label matchers or the grouping", i, r.MetricsQuery)
		}
		nameRe := regexp.MustCompile(r.Name.Matches)
		n := 0
		for _, s := range exposed {
			if !match(s) {
				continue
			}
			m := nameRe.FindStringSubmatchIndex(s)
			if m == nil {
				continue
			}
			served[string(nameRe.ExpandString(nil, r.Name.As, s, m))] = true
			n++
		}
		if n == 0 {
			t.Errorf("rule %d (%s): streamguard exposes no series it matches", i, r.SeriesQuery)
		}
	}
	for _, name := range overlays {
		o := render(t, name)
		for _, m := range o.hpa.Spec.Metrics {
			if m.Type != autoscalingv2.PodsMetricSourceType || m.Pods == nil {
				t.Errorf("%s: HPA metric %+v is not a Pods metric", name, m)
				continue
			}
			if !served[m.Pods.Metric.Name] {
				t.Errorf("%s: the HPA scales on %s, which no adapter rule serves (served: %v)", name, m.Pods.Metric.Name, keys(served))
			}
			if m.Pods.Target.Type != autoscalingv2.AverageValueMetricType || m.Pods.Target.AverageValue == nil || m.Pods.Target.AverageValue.Sign() <= 0 {
				t.Errorf("%s: %s target %+v: want a positive AverageValue", name, m.Pods.Metric.Name, m.Pods.Target)
			}
		}
		if len(o.hpa.Spec.Metrics) < 2 {
			t.Errorf("%s: HPA has %d metrics", name, len(o.hpa.Spec.Metrics))
		}
	}
}

// scrape starts streamguard serve on a tiny synthetic model and returns
// the series names of its /metrics.
func scrape(t *testing.T) []string {
	t.Helper()
	bin := streamguard(t)
	model := filepath.Join(t.TempDir(), "tiny")
	if code, stderr := run(t, bin, []string{"gen-model", "--preset", "tiny", "--out", model}, nil); code != 0 {
		t.Fatalf("gen-model: exit %d: %s", code, stderr)
	}
	cmd := exec.Command(bin, "serve", "--model", model, "--addr", "127.0.0.1:0", "--json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	var ev struct{ Addr string }
	if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Addr == "" {
		t.Fatalf("serve said %q", line)
	}
	resp, err := http.Get("http://" + ev.Addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name := l[:strings.IndexAny(l, "{ ")]
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	for _, want := range []string{"streamguard_open_streams", "streamguard_queue_wait_seconds_bucket", "streamguard_kv_reserved_bytes"} {
		if !slices.Contains(names, want) {
			t.Fatalf("/metrics has no %s: %v", want, names)
		}
	}
	return names
}
