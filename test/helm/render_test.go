package helm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// helmVersion is the helm .ci/run installs.
const helmVersion = "v4.3.2"

// helmBin is the helm to run: on PATH, else in $(go env GOPATH)/bin where
// `go install` puts it. Without one the tests skip, except in CI (CI=true),
// where .ci/run installs it and its absence is a failure.
func helmBin(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "helm")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := "helm is not installed: go install helm.sh/helm/v4/cmd/helm@" + helmVersion + " (.ci/run does)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// chartDir is deploy/helm/teleport-event-bus.
func chartDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "deploy", "helm", "teleport-event-bus"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// release and namespace are what every render installs as.
const (
	release   = "teb"
	namespace = "teleport-event-bus"
)

// helmArgs are the value flags of a render: -f for each file, --set for
// each assignment.
func helmArgs(files, sets []string) []string {
	var args []string
	for _, f := range files {
		args = append(args, "-f", f)
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return args
}

// runHelm runs helm with args; the error carries its stderr.
func runHelm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// template renders the chart.
func template(t *testing.T, files, sets []string) ([]byte, error) {
	t.Helper()
	args := append([]string{"template", release, chartDir(t), "--namespace", namespace}, helmArgs(files, sets)...)
	return runHelm(t, args...)
}

// installNotes runs helm install --dry-run=client (no cluster) and returns
// what it prints, NOTES.txt included.
func installNotes(t *testing.T, files, sets []string) (string, error) {
	t.Helper()
	args := append([]string{"install", release, chartDir(t), "--namespace", namespace, "--dry-run=client"}, helmArgs(files, sets)...)
	out, err := runHelm(t, args...)
	return string(out), err
}

// lint runs helm lint --strict.
func lint(t *testing.T, files, sets []string) error {
	t.Helper()
	args := append([]string{"lint", "--strict", chartDir(t), "--namespace", namespace}, helmArgs(files, sets)...)
	_, err := runHelm(t, args...)
	return err
}

// newObject maps apiVersion/kind to the Go type a rendered object must
// decode into; a kind not listed is an error.
var newObject = map[string]func() any{
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"apps/v1/StatefulSet":                     func() any { return &appsv1.StatefulSet{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
}

// rendered is the chart's output, decoded: each object under
// "<Kind>/<name>".
type rendered map[string]any

// decodeStrict decodes every document of helm's output into its type: a
// duplicate key, an unknown or misspelled field, a wrong type is an error
// naming the object.
func decodeStrict(out []byte) (rendered, error) {
	objs := rendered{}
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source(doc), err)
		}
		if string(js) == "null" {
			continue // a document of comments only
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(js, &meta); err != nil {
			return nil, fmt.Errorf("%s: %w", source(doc), err)
		}
		mk, ok := newObject[meta.APIVersion+"/"+meta.Kind]
		if !ok {
			return nil, fmt.Errorf("%s: %s %s is not a kind the test knows", source(doc), meta.APIVersion, meta.Kind)
		}
		obj := mk()
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			return nil, fmt.Errorf("%s: %s %q: %w", source(doc), meta.Kind, meta.Metadata.Name, err)
		}
		key := meta.Kind + "/" + meta.Metadata.Name
		if _, dup := objs[key]; dup {
			return nil, fmt.Errorf("%s: %s rendered twice", source(doc), key)
		}
		objs[key] = obj
	}
}

// source is the "# Source: <template>" line helm puts on a document.
func source(doc []byte) string {
	for _, l := range strings.Split(string(doc), "\n") {
		if s, ok := strings.CutPrefix(l, "# Source: "); ok {
			return s
		}
	}
	return "document"
}

// get is the object of kind and name suffix (after "<release>-<chart>-"),
// or nil.
func get[T any](objs rendered, kind, name string) *T {
	o, ok := objs[kind+"/"+release+"-teleport-event-bus"+name]
	if !ok {
		return nil
	}
	v, ok := o.(*T)
	if !ok {
		return nil
	}
	return v
}

// count is how many objects of kind were rendered.
func (r rendered) count(kind string) int {
	n := 0
	for k := range r {
		if strings.HasPrefix(k, kind+"/") {
			n++
		}
	}
	return n
}
