package deploy_test

import (
	"strings"
	"testing"
)

// TestKustomizeCredentialsExist: the manifests start authenticated (the
// node has --auth-tokens) and every Secret key a pod or a ServiceMonitor
// names exists, so nothing waits for a credential that is not there.
func TestKustomizeCredentialsExist(t *testing.T) {
	r := build(t, "k8s-monitoring")
	keys := map[string]bool{}
	for _, s := range r.secrets {
		for k := range s.StringData {
			keys[s.Name+"/"+k] = true
		}
		for k := range s.Data {
			keys[s.Name+"/"+k] = true
		}
	}
	need := func(where, name, key string) {
		if !keys[name+"/"+key] {
			t.Errorf("%s names secret %s key %q, which the manifests do not define", where, name, key)
		}
	}
	authed := false
	for name, p := range r.pods() {
		for _, v := range p.Spec.Volumes {
			if v.Secret != nil {
				for _, it := range v.Secret.Items {
					need(name+" volume "+v.Name, v.Secret.SecretName, it.Key)
				}
			}
		}
		for _, c := range p.Spec.Containers {
			for _, a := range c.Args {
				if strings.HasPrefix(a, "--auth-tokens=") {
					authed = true
				}
				if a == "--insecure" {
					t.Errorf("%s runs with --insecure", name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					need(name+" env "+e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			}
		}
	}
	if !authed {
		t.Error("no cache node runs with --auth-tokens")
	}
	for _, m := range r.monitors {
		for _, e := range m.Spec.Endpoints {
			if e.BearerTokenSecret != nil {
				need("ServiceMonitor "+m.Metadata.Name, e.BearerTokenSecret.Name, e.BearerTokenSecret.Key)
			}
		}
	}
}
