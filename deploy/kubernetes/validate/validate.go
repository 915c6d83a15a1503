// Package validate checks the Kubernetes manifests under deploy/kubernetes
// offline: it renders a kustomization with the kustomize Go API and decodes
// every object it yields strictly into the typed Kubernetes API structs, so
// a misspelt or misplaced field fails here rather than in a cluster. Its
// tests check the overlays against the streamguard binary of the checkout
// (flags, probes, shutdown timing, metrics the HPA scales on) and read the
// Envoy configuration into Envoy's own API types. It is a module of its
// own so that the streamguard module depends on no Kubernetes or Envoy
// code.
package validate

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Object is one rendered manifest, decoded into its typed struct (Obj is a
// *appsv1.Deployment, *corev1.Service, ...).
type Object struct {
	APIVersion, Kind, Name string
	Obj                    any
}

// kinds are the API types the manifests may use; anything else is an
// error (a new kind must be added here, with its typed struct).
var kinds = map[string]func() any{
	"v1/ServiceAccount":                      func() any { return new(corev1.ServiceAccount) },
	"v1/Service":                             func() any { return new(corev1.Service) },
	"v1/Secret":                              func() any { return new(corev1.Secret) },
	"v1/ConfigMap":                           func() any { return new(corev1.ConfigMap) },
	"apps/v1/Deployment":                     func() any { return new(appsv1.Deployment) },
	"policy/v1/PodDisruptionBudget":          func() any { return new(policyv1.PodDisruptionBudget) },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
	"networking.k8s.io/v1/NetworkPolicy":     func() any { return new(networkingv1.NetworkPolicy) },
}

// Render builds the kustomization in dir (a folder on disk) and decodes
// every resource strictly.
func Render(dir string) ([]Object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var out []Object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.CurId(), err)
		}
		o, err := DecodeStrict(y)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.CurId(), err)
		}
		out = append(out, o)
	}
	return out, nil
}

// DecodeStrict decodes one YAML manifest into the typed struct its
// apiVersion and kind name, refusing unknown fields, duplicate keys and
// keys that match a field only in another case.
func DecodeStrict(y []byte) (Object, error) {
	js, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return Object{}, err
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := json.UnmarshalCaseSensitivePreserveInts(js, &meta); err != nil {
		return Object{}, err
	}
	mk, ok := kinds[meta.APIVersion+"/"+meta.Kind]
	if !ok {
		return Object{}, fmt.Errorf("apiVersion %q kind %q: not a kind this check knows", meta.APIVersion, meta.Kind)
	}
	obj := mk()
	if err := Strict(js, obj); err != nil {
		return Object{}, fmt.Errorf("%s %s: %w", meta.Kind, meta.Metadata.Name, err)
	}
	return Object{APIVersion: meta.APIVersion, Kind: meta.Kind, Name: meta.Metadata.Name, Obj: obj}, nil
}

// Strict decodes JSON into v, refusing unknown and duplicate fields.
func Strict(js []byte, v any) error {
	strictErrs, err := json.UnmarshalStrict(js, v, json.DisallowUnknownFields, json.DisallowDuplicateFields)
	if err != nil {
		return err
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return fmt.Errorf("strict decoding: %s", strings.Join(msgs, "; "))
	}
	return nil
}
