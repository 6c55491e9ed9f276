package helm

import (
	"strings"
	"testing"
)

// TestBadValuesFailTemplate: values that would start pods that cannot work,
// lose events or open the bus fail `helm template` with a message naming
// the value.
func TestBadValuesFailTemplate(t *testing.T) {
	helmBin(t)
	for _, tc := range []struct {
		name    string
		forward bool
		sets    []string
		want    []string
	}{
		{name: "embedded with 2 ingest replicas", sets: []string{"ingest.replicas=2"},
			want: []string{"ingest.replicas is 2", "one store, one owner", "set nats.url"}},
		{name: "in_http and in_forward URLs", sets: []string{"fluentd.forward.url=tls://fluentd.logging.svc:24224/test.log", "fluentd.forward.sharedKeySecretName=k"},
			want: []string{"fluentd.url (in_http", "fluentd.forward.url (in_forward", "remove one"}},
		{name: "no identity Secret", sets: []string{"teleport.identitySecretName="},
			want: []string{"teleport.identitySecretName is required"}},
		{name: "no Fluentd client Secret", sets: []string{"fluentd.certificate.secretName="},
			want: []string{"fluentd.certificate.secretName is required"}},
		{name: "no shared key Secret", forward: true, sets: []string{"fluentd.forward.sharedKeySecretName="},
			want: []string{"fluentd.forward.sharedKeySecretName is required"}},
		{name: "no NKey Secret", sets: []string{"nats.nkeys.secretName="},
			want: []string{"nats.nkeys.secretName is required"}},
		{name: "embedded NATS listener without TLS", sets: []string{"nats.tls.secretName="},
			want: []string{"nats.tls.secretName is required", "reachable from other pods", "serves TLS only"}},
		{name: "external NATS without TLS", sets: []string{"nats.url=nats://nats.teleport-event-bus.svc:4222"},
			want: []string{`nats.url "nats://nats.teleport-event-bus.svc:4222"`, "must be tls://"}},
		{name: "embedded without a volume", sets: []string{"persistentVolumeClaim.enabled=false"},
			want: []string{"persistentVolumeClaim.enabled is false", "loses undelivered events"}},
		{name: "in_forward URL as in_http", sets: []string{"fluentd.url=tls://fluentd.logging.svc:24224/test.log"},
			want: []string{`fluentd.url "tls://fluentd.logging.svc:24224/test.log" must start with https://`, "fluentd.forward.url"}},
		{name: "autoscaling min above max", sets: []string{"sink.autoscaling.enabled=true", "sink.autoscaling.minReplicas=5", "sink.autoscaling.maxReplicas=3"},
			want: []string{"sink.autoscaling.minReplicas (5) is above sink.autoscaling.maxReplicas (3)"}},
		{name: "upstream tbot", sets: []string{"tbot.enabled=true"},
			want: []string{"tbot.enabled", "not supported"}},
		{name: "upstream image", sets: []string{"image.repository=public.ecr.aws/gravitational/teleport-plugin-event-handler"},
			want: []string{"image.repository", "remove image.repository"}},
		{name: "misspelled key", sets: []string{"fluentd.sesionUrl=https://fluentd/session"},
			want: []string{"sesionUrl"}},
		{name: "wrong type", sets: []string{"sink.replicas=many"},
			want: []string{"replicas"}},
		{name: "bad memory budget", sets: []string{"ingest.memoryBudget=lots"},
			want: []string{"memoryBudget"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inst := configured(t, tc.forward)
			_, err := template(t, []string{inst.values}, tc.sets)
			if err == nil {
				t.Fatalf("helm template with %v succeeded, want a failure naming %q", tc.sets, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the failure does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestStrictDecodeCatchesMisspelling: a field Kubernetes does not know,
// passed through a value the schema leaves open, renders but fails the
// strict decoding, naming it: the decoding is what would catch a
// misspelled field in a template.
func TestStrictDecodeCatchesMisspelling(t *testing.T) {
	helmBin(t)
	inst := configured(t, false)
	out, err := template(t, []string{inst.values}, []string{"podSecurityContext.runAsNonRot=true"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = decodeStrict(out)
	if err == nil || !strings.Contains(err.Error(), `unknown field "runAsNonRot"`) {
		t.Fatalf("got %v, want an unknown field runAsNonRot", err)
	}
}
