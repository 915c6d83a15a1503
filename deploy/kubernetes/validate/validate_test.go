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
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
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
}

func render(t *testing.T, name string) *overlay {
	t.Helper()
	objs, err := Render(filepath.Join(k8sDir, "overlays", name))
	if err != nil {
		t.Fatal(err)
	}
	o := &overlay{name: name, objs: objs, svc: map[string]*corev1.Service{}, secrets: map[string]*corev1.Secret{}}
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
		}
	}
	want := map[string]int{"ServiceAccount": 1, "Deployment": 1, "Service": 2, "PodDisruptionBudget": 1, "HorizontalPodAutoscaler": 1, "Secret": 1}
	for k, n := range want {
		if kinds[k] != n {
			t.Fatalf("%s: %d %s objects, want %d (all: %v)", name, kinds[k], k, n, kinds)
		}
	}
	if len(objs) != 7 {
		t.Fatalf("%s: %d objects, want 7: %v", name, len(objs), kinds)
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
			if ref := o.hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != o.dep.Name || ref.APIVersion != "apps/v1" {
				t.Errorf("HPA scales %+v", ref)
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
	for _, name := range overlays {
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
