package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v2"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// manifest is one YAML document of deploy/kubernetes, with the fields the
// checks read.
type manifest struct {
	File       string `json:"-"`
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Data       map[string]string `json:"data"`
	StringData map[string]string `json:"stringData"`
	Resources  []string          `json:"resources"` // Kustomization
	Spec       struct {
		Replicas *int `json:"replicas"`
		Template struct {
			Spec podSpec `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsNonRoot *bool `json:"runAsNonRoot"`
		RunAsUser    *int  `json:"runAsUser"`
	} `json:"securityContext"`
	Containers []container `json:"containers"`
	Volumes    []struct {
		Name      string `json:"name"`
		ConfigMap *struct {
			Name string `json:"name"`
		} `json:"configMap"`
		Secret *struct {
			SecretName string `json:"secretName"`
		} `json:"secret"`
	} `json:"volumes"`
}

type container struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	Env     []struct {
		Name      string `json:"name"`
		ValueFrom *struct {
			SecretKeyRef    *keyRef `json:"secretKeyRef"`
			ConfigMapKeyRef *keyRef `json:"configMapKeyRef"`
		} `json:"valueFrom"`
	} `json:"env"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	LivenessProbe  *probe `json:"livenessProbe"`
	ReadinessProbe *probe `json:"readinessProbe"`
	Resources      struct {
		Limits   map[string]string `json:"limits"`
		Requests map[string]string `json:"requests"`
	} `json:"resources"`
	SecurityContext struct {
		RunAsNonRoot             *bool `json:"runAsNonRoot"`
		AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `json:"readOnlyRootFilesystem"`
	} `json:"securityContext"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
		SubPath   string `json:"subPath"`
	} `json:"volumeMounts"`
}

type keyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

type probe struct {
	HTTPGet *struct {
		Path string `json:"path"`
		Port any    `json:"port"`
	} `json:"httpGet"`
}

// loadManifests parses every YAML document of deploy/kubernetes.
func loadManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/kubernetes: %v", err)
	}
	var out []manifest
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(data)))
		for i := 0; ; i++ {
			var doc any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", filepath.Base(f), i+1, err)
			}
			if doc == nil {
				continue
			}
			js, err := json.Marshal(jsonable(doc))
			if err != nil {
				t.Fatalf("%s: document %d: %v", filepath.Base(f), i+1, err)
			}
			var m manifest
			if err := json.Unmarshal(js, &m); err != nil {
				t.Fatalf("%s: document %d: %v", filepath.Base(f), i+1, err)
			}
			m.File = filepath.Base(f)
			out = append(out, m)
		}
	}
	return out
}

// jsonable turns yaml.v2's map[interface{}]interface{} into JSON-encodable
// maps.
func jsonable(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[fmt.Sprint(k)] = jsonable(x)
		}
		return m
	case []any:
		for i := range v {
			v[i] = jsonable(v[i])
		}
	}
	return v
}

// keys is what a ConfigMap or Secret holds.
func (m manifest) keys() map[string]string {
	out := map[string]string{}
	for k, v := range m.Data {
		out[k] = v
	}
	for k, v := range m.StringData {
		out[k] = v
	}
	return out
}

func TestKubernetesManifests(t *testing.T) {
	all := loadManifests(t)
	configMaps, secrets := map[string]manifest{}, map[string]manifest{}
	workloads := map[string]manifest{}
	files := map[string]bool{}
	var kustomization *manifest
	for i, m := range all {
		files[m.File] = true
		where := fmt.Sprintf("%s (%s %q)", m.File, m.Kind, m.Metadata.Name)
		if m.APIVersion == "" || m.Kind == "" {
			t.Errorf("%s: apiVersion or kind missing", where)
		}
		if m.Kind == "Kustomization" {
			kustomization = &all[i]
			continue
		}
		if m.Metadata.Name == "" {
			t.Errorf("%s: metadata.name missing", where)
		}
		if m.Kind != "Namespace" && m.Metadata.Namespace != "teleport-event-bus" {
			t.Errorf("%s: namespace %q, want teleport-event-bus", where, m.Metadata.Namespace)
		}
		switch m.Kind {
		case "ConfigMap":
			configMaps[m.Metadata.Name] = m
		case "Secret":
			secrets[m.Metadata.Name] = m
		case "Deployment", "StatefulSet":
			workloads[m.Metadata.Name] = m
		}
	}
	if kustomization == nil {
		t.Fatal("no kustomization.yaml")
	}
	for f := range files {
		if f != "kustomization.yaml" && !slices.Contains(kustomization.Resources, f) {
			t.Errorf("kustomization.yaml does not list %s", f)
		}
	}
	for _, r := range kustomization.Resources {
		if !files[r] {
			t.Errorf("kustomization.yaml lists %s, which does not exist", r)
		}
	}

	ingest, ok := workloads["ingest"]
	if !ok {
		t.Fatal("no ingest Deployment")
	}
	if ingest.Spec.Replicas == nil || *ingest.Spec.Replicas != 2 {
		t.Errorf("ingest: want 2 replicas (one active, one standby)")
	}
	if _, ok := workloads["fluentd-sink"]; !ok {
		t.Fatal("no fluentd-sink Deployment")
	}

	cm, ok := configMaps["teleport-event-bus-config"]
	if !ok {
		t.Fatal("no ConfigMap teleport-event-bus-config")
	}
	toml, ok := cm.Data["teleport-event-handler.toml"]
	if !ok {
		t.Fatal("ConfigMap teleport-event-bus-config has no teleport-event-handler.toml")
	}
	cfg, err := config.Decode([]byte(toml), "configmap.yaml:teleport-event-handler.toml")
	if err != nil {
		t.Fatalf("the ConfigMap's TOML does not load: %v", err)
	}
	if cfg.NATS.URL == "" {
		t.Error("the ConfigMap's TOML has no [nats] url: two ingest replicas need an external NATS cluster for the lease")
	}
	metricsPorts := map[string]string{} // command → the port its probes must use
	for name, cmd := range map[string]config.Command{"ingest": config.Ingest, "fluentd-sink": config.Sink} {
		addr := cfg.MetricsAddrFor(cmd)
		_, port, err := net.SplitHostPort(addr)
		if err != nil || strings.Contains(port, "-") || port == "0" {
			t.Fatalf("%s's metrics address %q: want one fixed port for the probes (%v)", name, addr, err)
		}
		metricsPorts[name] = port
	}

	openedFiles := map[string][]string{ // files each command opens, from the TOML
		"ingest":       {cfg.Teleport.Identity, cfg.Fluentd.CA, cfg.Fluentd.Cert, cfg.Fluentd.Key, cfg.NATS.CA, cfg.NATS.Cert, cfg.NATS.Key},
		"fluentd-sink": {cfg.Fluentd.CA, cfg.Fluentd.Cert, cfg.Fluentd.Key, cfg.NATS.CA, cfg.NATS.Cert, cfg.NATS.Key},
	}
	for name, w := range workloads {
		checkWorkload(t, name, w.Spec.Template.Spec, configMaps, secrets, metricsPorts[name], openedFiles[name])
	}
}

// checkWorkload checks a pod template: probes, non-root, limits, and that
// every ConfigMap, Secret and file it needs exists.
func checkWorkload(t *testing.T, name string, pod podSpec, configMaps, secrets map[string]manifest, metricsPort string, needFiles []string) {
	t.Helper()
	volumes := map[string]string{} // volume name → "secret:x" / "configmap:x"
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap != nil:
			if _, ok := configMaps[v.ConfigMap.Name]; !ok {
				t.Errorf("%s: volume %s uses ConfigMap %q, which no manifest defines", name, v.Name, v.ConfigMap.Name)
			}
			volumes[v.Name] = "configmap:" + v.ConfigMap.Name
		case v.Secret != nil:
			if _, ok := secrets[v.Secret.SecretName]; !ok {
				t.Errorf("%s: volume %s uses Secret %q, which no manifest defines", name, v.Name, v.Secret.SecretName)
			}
			volumes[v.Name] = "secret:" + v.Secret.SecretName
		default:
			volumes[v.Name] = ""
		}
	}
	if len(pod.Containers) == 0 {
		t.Fatalf("%s: no containers", name)
	}
	for _, c := range pod.Containers {
		where := name + "/" + c.Name
		nonRoot := pod.SecurityContext.RunAsNonRoot
		if c.SecurityContext.RunAsNonRoot != nil {
			nonRoot = c.SecurityContext.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			t.Errorf("%s: runAsNonRoot is not true", where)
		}
		if pod.SecurityContext.RunAsUser != nil && *pod.SecurityContext.RunAsUser == 0 {
			t.Errorf("%s: runAsUser 0", where)
		}
		if p := c.SecurityContext.AllowPrivilegeEscalation; p == nil || *p {
			t.Errorf("%s: allowPrivilegeEscalation is not false", where)
		}
		if len(c.Command) == 0 || filepath.Base(c.Command[0]) != name {
			t.Errorf("%s: command %v does not run %s", where, c.Command, name)
		}
		if c.Resources.Limits["memory"] == "" || c.Resources.Limits["cpu"] == "" {
			t.Errorf("%s: resource limits for cpu and memory missing", where)
		}
		ports := map[string]string{}
		for _, p := range c.Ports {
			ports[p.Name] = fmt.Sprint(p.ContainerPort)
		}
		checkProbe(t, where+" livenessProbe", c.LivenessProbe, "/healthz", ports, metricsPort)
		checkProbe(t, where+" readinessProbe", c.ReadinessProbe, "/readyz", ports, metricsPort)
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				s, ok := secrets[r.Name]
				if _, has := s.keys()[r.Key]; !ok || !has {
					t.Errorf("%s: env %s refers to Secret %q key %q, which no manifest defines", where, e.Name, r.Name, r.Key)
				}
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				m, ok := configMaps[r.Name]
				if _, has := m.keys()[r.Key]; !ok || !has {
					t.Errorf("%s: env %s refers to ConfigMap %q key %q, which no manifest defines", where, e.Name, r.Name, r.Key)
				}
			}
		}
		// Every file the TOML names is in a mounted Secret under that key.
		for _, f := range needFiles {
			if f == "" {
				continue
			}
			found := false
			for _, vm := range c.VolumeMounts {
				rel, ok := strings.CutPrefix(f, strings.TrimSuffix(vm.MountPath, "/")+"/")
				if !ok || vm.SubPath != "" {
					continue
				}
				src, ok := volumes[vm.Name]
				sec, isSecret := strings.CutPrefix(src, "secret:")
				if !ok || !isSecret {
					continue
				}
				if _, has := secrets[sec].keys()[rel]; !has {
					t.Errorf("%s: %s is mounted from Secret %q, which has no key %q", where, f, sec, rel)
				}
				found = true
			}
			if !found {
				t.Errorf("%s: the config names %s, but no Secret is mounted there", where, f)
			}
		}
	}
}

func checkProbe(t *testing.T, where string, p *probe, path string, ports map[string]string, metricsPort string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: missing (want an httpGet of %s)", where, path)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: path %q, want %q", where, p.HTTPGet.Path, path)
	}
	port := fmt.Sprint(p.HTTPGet.Port)
	if named, ok := ports[port]; ok {
		port = named
	}
	if port != metricsPort {
		t.Errorf("%s: port %v, but metrics-addr serves on %s", where, p.HTTPGet.Port, metricsPort)
	}
}
