package deploy_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// rendered is a kustomize build, strictly decoded into Kubernetes types.
type rendered struct {
	services     []corev1.Service
	statefulSets []appsv1.StatefulSet
	deployments  []appsv1.Deployment
	pdbs         []policyv1.PodDisruptionBudget
	monitors     []serviceMonitor
	secrets      []corev1.Secret
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor
// that the files use; unknown fields are refused like for the core types.
type serviceMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []struct {
			Port              string `json:"port"`
			Path              string `json:"path"`
			Interval          string `json:"interval"`
			BearerTokenSecret *struct {
				Name string `json:"name"`
				Key  string `json:"key"`
			} `json:"bearerTokenSecret"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// build runs kustomize (the library kubectl embeds) on deploy/<dir> and
// decodes every object, refusing unknown fields: a typo in a manifest
// fails here, not at kubectl apply.
func build(t *testing.T, dir string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot(t), "deploy", dir))
	if err != nil {
		t.Fatalf("kustomize build deploy/%s: %v", dir, err)
	}
	var r rendered
	for _, res := range rm.Resources() {
		js, err := res.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		strict := func(v any) {
			dec := json.NewDecoder(bytes.NewReader(js))
			dec.DisallowUnknownFields()
			if err := dec.Decode(v); err != nil {
				t.Errorf("deploy/%s: %s %s: %v", dir, res.GetKind(), res.GetName(), err)
			}
		}
		switch res.GetKind() {
		case "Service":
			var v corev1.Service
			strict(&v)
			r.services = append(r.services, v)
		case "StatefulSet":
			var v appsv1.StatefulSet
			strict(&v)
			r.statefulSets = append(r.statefulSets, v)
		case "Deployment":
			var v appsv1.Deployment
			strict(&v)
			r.deployments = append(r.deployments, v)
		case "PodDisruptionBudget":
			var v policyv1.PodDisruptionBudget
			strict(&v)
			r.pdbs = append(r.pdbs, v)
		case "Secret":
			var v corev1.Secret
			strict(&v)
			r.secrets = append(r.secrets, v)
		case "ServiceMonitor":
			var v serviceMonitor
			strict(&v)
			r.monitors = append(r.monitors, v)
		default:
			t.Errorf("deploy/%s: unexpected %s %s", dir, res.GetKind(), res.GetName())
		}
	}
	return r
}

// pods are the pod templates of the workloads, by workload name.
func (r rendered) pods() map[string]corev1.PodTemplateSpec {
	m := map[string]corev1.PodTemplateSpec{}
	for _, s := range r.statefulSets {
		m["statefulset/"+s.Name] = s.Spec.Template
	}
	for _, d := range r.deployments {
		m["deployment/"+d.Name] = d.Spec.Template
	}
	return m
}

// TestKustomizeBase: the base renders; every container has CPU and memory
// requests and a memory limit; every Service and disruption budget selects
// pods that exist, on ports those pods declare; the node budget allows one
// node down at a time (each block has two owners).
func TestKustomizeBase(t *testing.T) {
	r := build(t, "k8s")
	if len(r.statefulSets) != 1 || len(r.deployments) != 1 || len(r.monitors) != 0 {
		t.Fatalf("base: %d statefulsets, %d deployments, %d servicemonitors; want 1, 1, 0 (monitors are opt-in)",
			len(r.statefulSets), len(r.deployments), len(r.monitors))
	}
	pods := r.pods()
	for name, p := range pods {
		for _, c := range p.Spec.Containers {
			req, lim := c.Resources.Requests, c.Resources.Limits
			if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
				t.Errorf("%s container %s: requests %v limits %v; want cpu and memory requests and a memory limit", name, c.Name, req, lim)
			}
		}
	}
	selects := func(sel labels.Selector) []string {
		var hit []string
		for name, p := range pods {
			if sel.Matches(labels.Set(p.Labels)) {
				hit = append(hit, name)
			}
		}
		return hit
	}
	for _, s := range r.services {
		hit := selects(labels.SelectorFromSet(s.Spec.Selector))
		if len(hit) != 1 {
			t.Errorf("service %s selects %v; want one workload", s.Name, hit)
			continue
		}
		var ports []string
		for _, c := range pods[hit[0]].Spec.Containers {
			for _, p := range c.Ports {
				ports = append(ports, p.Name)
			}
		}
		for _, p := range s.Spec.Ports {
			if !slices.Contains(ports, p.TargetPort.String()) {
				t.Errorf("service %s port %s targets %q, not a port of %s %v", s.Name, p.Name, p.TargetPort.String(), hit[0], ports)
			}
		}
	}
	budgets := map[string]string{}
	for _, b := range r.pdbs {
		sel, err := metav1Selector(b)
		if err != nil {
			t.Fatal(err)
		}
		hit := selects(sel)
		if len(hit) != 1 {
			t.Errorf("pdb %s selects %v; want one workload", b.Name, hit)
			continue
		}
		budgets[hit[0]] = b.Name
		if hit[0] == "statefulset/kvcache" && (b.Spec.MaxUnavailable == nil || b.Spec.MaxUnavailable.IntValue() != 1) {
			t.Errorf("node pdb %s: maxUnavailable %v, want 1", b.Name, b.Spec.MaxUnavailable)
		}
	}
	for name := range pods {
		if budgets[name] == "" {
			t.Errorf("%s has no PodDisruptionBudget", name)
		}
	}
}

// TestKustomizeMonitoring: the monitoring overlay is the base plus one
// ServiceMonitor per component, each selecting a Service on a port it has.
func TestKustomizeMonitoring(t *testing.T) {
	base, r := build(t, "k8s"), build(t, "k8s-monitoring")
	if len(r.services) != len(base.services) || len(r.pods()) != len(base.pods()) || len(r.pdbs) != len(base.pdbs) {
		t.Errorf("overlay changed the base's objects")
	}
	if len(r.monitors) != 2 {
		t.Fatalf("%d ServiceMonitors, want 2 (nodes, workers)", len(r.monitors))
	}
	for _, m := range r.monitors {
		if m.APIVersion != "monitoring.coreos.com/v1" || len(m.Spec.Endpoints) == 0 {
			t.Errorf("servicemonitor %s: apiVersion %q, %d endpoints", m.Metadata.Name, m.APIVersion, len(m.Spec.Endpoints))
		}
		var svc []corev1.Service
		for _, s := range r.services {
			if labels.SelectorFromSet(m.Spec.Selector.MatchLabels).Matches(labels.Set(s.Labels)) {
				svc = append(svc, s)
			}
		}
		if len(svc) == 0 {
			t.Errorf("servicemonitor %s selects no Service", m.Metadata.Name)
		}
		for _, e := range m.Spec.Endpoints {
			for _, s := range svc {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
					t.Errorf("servicemonitor %s scrapes port %q, which service %s lacks", m.Metadata.Name, e.Port, s.Name)
				}
			}
		}
	}
}

func metav1Selector(b policyv1.PodDisruptionBudget) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(b.Spec.Selector)
}
