package helm

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// pod is one component's rendered pod, laid out and its TOML loaded.
type pod struct {
	spec corev1.PodSpec
	c    corev1.Container
	fs   *podFS
	cfg  *config.Config
}

// chartCase is one installation of the matrix.
type chartCase struct {
	name string
	// forward uses configure --forward's files.
	forward bool
	// values are the -f files (configure's values file when nil) and sets
	// the --set assignments.
	values func(t *testing.T, inst installation) []string
	sets   []string
	// more are Secrets besides those of configure's script.
	more  func(inst installation) secrets
	check func(t *testing.T, objs rendered, ingest, sink pod)
}

// upstreamValues is a values file of the teleport-plugin-event-handler
// chart, as its configure writes it.
const upstreamValues = `eventHandler:
  storagePath: "./storage"
  timeout: "10s"
  batch: 20
teleport:
  address: "teleport.example.com:443"
  identitySecretName: teleport-plugin-event-handler-identity
  identitySecretPath: identity
fluentd:
  url: "https://fluentd.fluentd.svc.cluster.local/events.log"
  sessionUrl: "https://fluentd.fluentd.svc.cluster.local/session"
  certificate:
    secretName: teleport-plugin-event-handler-client-tls
    caPath: ca.crt
    certPath: client.crt
    keyPath: client.key
persistentVolumeClaim:
  enabled: true
`

// TestChart installs the matrix of values: each renders, lints, decodes
// strictly and loads, then its own checks run.
func TestChart(t *testing.T) {
	helmBin(t)
	for _, tc := range []chartCase{
		{name: "embedded (configure's values)", check: checkEmbedded},
		{name: "external NATS, 2 ingest, 3 sinks",
			sets: []string{"nats.url=tls://nats.teleport-event-bus.svc:4222", "sink.replicas=3"}, check: checkExternal},
		{name: "in_forward (configure --forward's values)", forward: true, check: checkForward},
		{name: "monitoring, network policy, autoscaling",
			sets:  []string{"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true", "networkPolicy.enabled=true", "sink.autoscaling.enabled=true"},
			check: checkMonitoring},
		{name: "teleport-plugin-event-handler's values",
			values: func(t *testing.T, _ installation) []string { return []string{writeValues(t, upstreamValues)} },
			more: func(inst installation) secrets {
				return secrets{
					"teleport-plugin-event-handler-identity":   {"identity": filepath.Join(inst.dir, "identity")},
					"teleport-plugin-event-handler-client-tls": inst.secrets["teleport-event-bus-fluentd-client"],
				}
			},
			check: checkUpstream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inst := configured(t, tc.forward)
			files := []string{inst.values}
			if tc.values != nil {
				files = tc.values(t, inst)
			}
			if err := lint(t, files, tc.sets); err != nil {
				t.Errorf("helm lint --strict: %v", err)
			}
			notes, err := installNotes(t, files, tc.sets)
			if err != nil {
				t.Errorf("helm install --dry-run=client: %v", err)
			} else if !strings.Contains(notes, "Check first") {
				t.Errorf("helm install --dry-run=client prints no NOTES.txt (\"Check first\"):\n%s", notes)
			}
			out, err := template(t, files, tc.sets)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := decodeStrict(out)
			if err != nil {
				t.Fatal(err)
			}
			s := inst.secrets
			if tc.more != nil {
				s = s.with(tc.more(inst))
			}
			ingest, sink := loadPods(t, objs, s)
			tc.check(t, objs, ingest, sink)
		})
	}
}

// loadPods finds both workloads, checks what every pod of the chart must
// be, and loads each one's TOML as its command would.
func loadPods(t *testing.T, objs rendered, s secrets) (ingest, sink pod) {
	t.Helper()
	cms := map[string]*corev1.ConfigMap{}
	for k, o := range objs {
		if cm, ok := o.(*corev1.ConfigMap); ok {
			cms[strings.TrimPrefix(k, "ConfigMap/")] = cm
		}
	}
	var ingestTmpl, sinkTmpl corev1.PodTemplateSpec
	switch {
	case get[appsv1.StatefulSet](objs, "StatefulSet", "-ingest") != nil:
		ingestTmpl = get[appsv1.StatefulSet](objs, "StatefulSet", "-ingest").Spec.Template
	case get[appsv1.Deployment](objs, "Deployment", "-ingest") != nil:
		ingestTmpl = get[appsv1.Deployment](objs, "Deployment", "-ingest").Spec.Template
	default:
		t.Fatal("no ingest StatefulSet or Deployment")
	}
	d := get[appsv1.Deployment](objs, "Deployment", "-fluentd-sink")
	if d == nil {
		t.Fatal("no fluentd-sink Deployment")
	}
	sinkTmpl = d.Spec.Template
	ingest = loadPod(t, "ingest", ingestTmpl, config.Ingest, cms, s)
	sink = loadPod(t, "fluentd-sink", sinkTmpl, config.Sink, cms, s)

	// The metrics Services select the pods and reach the metrics port.
	for name, tmpl := range map[string]corev1.PodTemplateSpec{"ingest": ingestTmpl, "fluentd-sink": sinkTmpl} {
		svc := get[corev1.Service](objs, "Service", "-"+name+"-metrics")
		if svc == nil {
			t.Errorf("no Service %s-metrics", name)
			continue
		}
		for k, v := range svc.Spec.Selector {
			if tmpl.Labels[k] != v {
				t.Errorf("Service %s-metrics selects %s=%s, which the %s pods do not carry", name, k, v, name)
			}
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
			t.Errorf("Service %s-metrics: ports %+v, want one to the metrics port", name, svc.Spec.Ports)
		}
	}
	return ingest, sink
}

func loadPod(t *testing.T, name string, tmpl corev1.PodTemplateSpec, cmd config.Command, cms map[string]*corev1.ConfigMap, s secrets) pod {
	t.Helper()
	spec := tmpl.Spec
	if len(spec.Containers) != 1 || spec.Containers[0].Name != name {
		t.Fatalf("%s: want one container named %s, got %d", name, name, len(spec.Containers))
	}
	c := spec.Containers[0]
	if len(c.Command) != 1 || filepath.Base(c.Command[0]) != name {
		t.Errorf("%s: command %v does not run %s", name, c.Command, name)
	}
	checkSecurity(t, name, spec, c)
	pfs, err := layOut(t.TempDir(), spec, c, cms, s)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	cfg, err := pfs.loadTOML(c, cmd)
	if err != nil {
		t.Fatalf("%s's TOML does not load: %v", name, err)
	}
	p := pod{spec: spec, c: c, fs: pfs, cfg: cfg}
	checkProbes(t, name, p, cfg.MetricsAddrFor(cmd))
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Limits.Cpu().IsZero() {
		t.Errorf("%s: no memory or cpu limit", name)
	}
	return p
}

// checkSecurity: non-root, no privilege escalation, no capabilities, a
// read-only root filesystem, no service account token.
func checkSecurity(t *testing.T, name string, spec corev1.PodSpec, c corev1.Container) {
	t.Helper()
	psc, sc := spec.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatalf("%s: no securityContext", name)
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("%s: pod may run as root: %+v", name, psc)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: the root filesystem is writable", name)
	}
	if sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities %+v, want all dropped", name, sc.Capabilities)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: the service account token is mounted", name)
	}
}

// checkProbes: /healthz and /readyz on the port the command serves.
func checkProbes(t *testing.T, name string, p pod, metricsAddr string) {
	t.Helper()
	_, port, err := net.SplitHostPort(metricsAddr)
	if err != nil {
		t.Fatalf("%s: metrics address %q: %v", name, metricsAddr, err)
	}
	ports := map[string]string{}
	for _, cp := range p.c.Ports {
		ports[cp.Name] = strconv.Itoa(int(cp.ContainerPort))
	}
	for path, pr := range map[string]*corev1.Probe{"/healthz": p.c.LivenessProbe, "/readyz": p.c.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			t.Errorf("%s: no httpGet probe of %s", name, path)
			continue
		}
		got := pr.HTTPGet.Port.String()
		if named, ok := ports[got]; ok {
			got = named
		}
		if pr.HTTPGet.Path != path || got != port {
			t.Errorf("%s: probe %s on port %s, want %s on %s (metrics-addr %s)", name, pr.HTTPGet.Path, got, path, port, metricsAddr)
		}
	}
}

// checkEmbedded: one ingest pod of a StatefulSet holding the stream on its
// PVC, serving TLS to the sinks through a headless Service.
func checkEmbedded(t *testing.T, objs rendered, ingest, sink pod) {
	sts := get[appsv1.StatefulSet](objs, "StatefulSet", "-ingest")
	if sts == nil {
		t.Fatal("embedded mode: no ingest StatefulSet")
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("ingest StatefulSet: %v replicas, want exactly 1", sts.Spec.Replicas)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != "storage" {
		t.Fatalf("ingest StatefulSet: volumeClaimTemplates %v, want one named storage", sts.Spec.VolumeClaimTemplates)
	}
	if got := ingest.fs.unrooted(ingest.cfg.Storage); got != mountOf(ingest.c, "storage") {
		t.Errorf("ingest storage %s is not where the PVC is mounted (%s)", got, mountOf(ingest.c, "storage"))
	}
	if ingest.cfg.NATS.URL != "" {
		t.Errorf("ingest nats.url %q: want empty (embedded server)", ingest.cfg.NATS.URL)
	}
	svc := get[corev1.Service](objs, "Service", "-nats")
	if svc == nil {
		t.Fatal("no NATS Service for the sinks")
	}
	if svc.Spec.ClusterIP != "None" || sts.Spec.ServiceName != svc.Name {
		t.Errorf("the NATS Service %s must be the StatefulSet's headless service (clusterIP %q, serviceName %q)", svc.Name, svc.Spec.ClusterIP, sts.Spec.ServiceName)
	}
	want := "tls://" + svc.Name + "." + namespace + ".svc:4222"
	if sink.cfg.NATS.URL != want {
		t.Errorf("sink nats.url %q, want %q (TLS to the Service)", sink.cfg.NATS.URL, want)
	}
	if sink.cfg.NATS.CA == "" || sink.cfg.NATS.NKey == "" {
		t.Errorf("the sink connects without the CA (%q) or its NKey (%q)", sink.cfg.NATS.CA, sink.cfg.NATS.NKey)
	}
	if get[policyv1.PodDisruptionBudget](objs, "PodDisruptionBudget", "-ingest") != nil {
		t.Error("a PodDisruptionBudget for the one ingest pod would block every node drain")
	}
	checkSinkCommon(t, objs, 2)
}

// checkExternal: two ingest pods of a Deployment without a PVC, three
// sinks, everyone on the cluster's URL.
func checkExternal(t *testing.T, objs rendered, ingest, sink pod) {
	d := get[appsv1.Deployment](objs, "Deployment", "-ingest")
	if d == nil {
		t.Fatal("external NATS: no ingest Deployment")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("ingest Deployment: %v replicas, want 2", d.Spec.Replicas)
	}
	if objs.count("StatefulSet") != 0 || get[corev1.Service](objs, "Service", "-nats") != nil {
		t.Error("external NATS: the embedded server's StatefulSet or Service is rendered")
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			t.Errorf("external NATS: ingest mounts PVC %s", v.PersistentVolumeClaim.ClaimName)
		}
	}
	const url = "tls://nats.teleport-event-bus.svc:4222"
	if ingest.cfg.NATS.URL != url || sink.cfg.NATS.URL != url {
		t.Errorf("nats.url: ingest %q, sink %q, want %q", ingest.cfg.NATS.URL, sink.cfg.NATS.URL, url)
	}
	if ingest.cfg.NATS.Replicas != 3 {
		t.Errorf("nats.replicas %d, want 3 on a cluster", ingest.cfg.NATS.Replicas)
	}
	if pdb := get[policyv1.PodDisruptionBudget](objs, "PodDisruptionBudget", "-ingest"); pdb == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Error("ingest: want a PodDisruptionBudget keeping 1 of the 2")
	}
	checkSinkCommon(t, objs, 3)
}

// checkForward: the sink delivers to in_forward with the shared key.
func checkForward(t *testing.T, objs rendered, _, sink pod) {
	f := sink.cfg.Fluentd
	if !strings.HasPrefix(f.URL, "tls://") || f.SharedKeyFile == "" || f.SelfHostname == "" {
		t.Errorf("sink: url %q, shared-key-file %q, self-hostname %q: want in_forward with the shared key", f.URL, f.SharedKeyFile, f.SelfHostname)
	}
	checkSinkCommon(t, objs, 2)
}

// checkMonitoring: the ServiceMonitor names the jobs the alerts match, the
// PrometheusRule is deploy/observability/alerts.yaml, the HPA scales the
// sinks, and the NetworkPolicies open only the expected ports.
func checkMonitoring(t *testing.T, objs rendered, _, _ pod) {
	sm := get[monitoringv1.ServiceMonitor](objs, "ServiceMonitor", "")
	if sm == nil {
		t.Fatal("no ServiceMonitor")
	}
	for _, name := range []string{"ingest", "fluentd-sink"} {
		svc := get[corev1.Service](objs, "Service", "-"+name+"-metrics")
		if svc == nil {
			t.Fatalf("no Service %s-metrics", name)
		}
		if job := svc.Labels[sm.Spec.JobLabel]; job != "teleport-event-bus-"+name {
			t.Errorf("Service %s-metrics: job label %q=%q, want the job alerts.yaml matches, teleport-event-bus-%s", name, sm.Spec.JobLabel, job, name)
		}
		for k, v := range sm.Spec.Selector.MatchLabels {
			if svc.Labels[k] != v {
				t.Errorf("the ServiceMonitor selects %s=%s, which Service %s-metrics lacks", k, v, name)
			}
		}
	}
	alerts, err := os.ReadFile(filepath.Join("..", "..", "deploy", "observability", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	chartCopy, err := os.ReadFile(filepath.Join(chartDir(t), "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(alerts, chartCopy) {
		t.Error("deploy/helm/teleport-event-bus/files/alerts.yaml differs from deploy/observability/alerts.yaml: cp deploy/observability/alerts.yaml deploy/helm/teleport-event-bus/files/")
	}
	var want monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(alerts, &want); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	pr := get[monitoringv1.PrometheusRule](objs, "PrometheusRule", "")
	if pr == nil {
		t.Fatal("no PrometheusRule")
	}
	if !reflect.DeepEqual(pr.Spec, want) || len(want.Groups) == 0 {
		t.Errorf("the PrometheusRule's groups are not alerts.yaml's (%d groups rendered, %d in the file)", len(pr.Spec.Groups), len(want.Groups))
	}
	hpa := get[autoscalingv2.HorizontalPodAutoscaler](objs, "HorizontalPodAutoscaler", "-fluentd-sink")
	if hpa == nil || hpa.Spec.ScaleTargetRef.Name != release+"-teleport-event-bus-fluentd-sink" {
		t.Error("no HorizontalPodAutoscaler of the fluentd-sink Deployment")
	}
	if d := get[appsv1.Deployment](objs, "Deployment", "-fluentd-sink"); d != nil && d.Spec.Replicas != nil {
		t.Error("with the autoscaler, the Deployment must leave replicas to it")
	}
	sinkNP := get[networkingv1.NetworkPolicy](objs, "NetworkPolicy", "-fluentd-sink")
	ingestNP := get[networkingv1.NetworkPolicy](objs, "NetworkPolicy", "-ingest")
	if sinkNP == nil || ingestNP == nil {
		t.Fatal("networkPolicy.enabled: want a NetworkPolicy for ingest and one for the sinks")
	}
	if got := egressPorts(sinkNP); !reflect.DeepEqual(got, []string{"4222", "53", "53", "8888"}) {
		t.Errorf("the sinks may reach ports %v, want DNS, Fluentd (8888) and NATS (4222) only", got)
	}
	if got := egressPorts(ingestNP); !reflect.DeepEqual(got, []string{"443", "53", "53"}) {
		t.Errorf("ingest may reach ports %v, want DNS and Teleport (443) only", got)
	}
	for _, r := range ingestNP.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port.String() != "nats" {
				continue
			}
			if len(r.From) != 1 || r.From[0].PodSelector == nil || r.From[0].PodSelector.MatchLabels["app.kubernetes.io/component"] != "fluentd-sink" {
				t.Errorf("the embedded NATS port is open to %+v, want the sink pods only", r.From)
			}
		}
	}
}

// checkUpstream: teleport-plugin-event-handler's values mean the same here.
func checkUpstream(t *testing.T, objs rendered, ingest, sink pod) {
	if got := ingest.cfg.Teleport.Addr; len(got) != 1 || got[0] != "teleport.example.com:443" {
		t.Errorf("teleport.addr %v, want teleport.example.com:443", got)
	}
	if got := ingest.fs.unrooted(ingest.cfg.Teleport.Identity); filepath.Base(got) != "identity" {
		t.Errorf("teleport.identity %s: want the Secret's key identity", got)
	}
	f := sink.cfg.Fluentd
	if f.URL != "https://fluentd.fluentd.svc.cluster.local/events.log" || f.SessionURL != "https://fluentd.fluentd.svc.cluster.local/session" {
		t.Errorf("fluentd url %q, session-url %q: not the upstream values", f.URL, f.SessionURL)
	}
	if got := ingest.fs.unrooted(ingest.cfg.Storage); got != "/var/lib/teleport-event-bus/storage" {
		t.Errorf("storage %s, want ./storage under the state directory", got)
	}
	if ingest.cfg.Timeout.String() != "10s" || ingest.cfg.Batch != 20 {
		t.Errorf("timeout %s, batch %d: want 10s and 20", ingest.cfg.Timeout, ingest.cfg.Batch)
	}
	sts := get[appsv1.StatefulSet](objs, "StatefulSet", "-ingest")
	if sts == nil || len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatal("persistentVolumeClaim.enabled: want the ingest StatefulSet with its PVC")
	}
	checkSinkCommon(t, objs, 2)
}

// checkSinkCommon: the sink Deployment's replicas and its PDB.
func checkSinkCommon(t *testing.T, objs rendered, replicas int32) {
	t.Helper()
	d := get[appsv1.Deployment](objs, "Deployment", "-fluentd-sink")
	if d == nil || d.Spec.Replicas == nil || *d.Spec.Replicas != replicas {
		t.Errorf("fluentd-sink: want %d replicas", replicas)
	}
	if pdb := get[policyv1.PodDisruptionBudget](objs, "PodDisruptionBudget", "-fluentd-sink"); pdb == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Error("fluentd-sink: want a PodDisruptionBudget keeping 1")
	}
}

func mountOf(c corev1.Container, volume string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath
		}
	}
	return ""
}

// egressPorts are the ports a policy lets its pods reach, sorted.
func egressPorts(np *networkingv1.NetworkPolicy) []string {
	var out []string
	for _, r := range np.Spec.Egress {
		for _, p := range r.Ports {
			out = append(out, p.Port.String())
		}
	}
	sort.Strings(out)
	return out
}
