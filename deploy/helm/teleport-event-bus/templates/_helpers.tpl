{{/*
Names, labels, the mode (embedded or external NATS), the paths the pods
mount, the checks of the values, and the TOML each command reads.
*/}}

{{- define "teb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "teb.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object; selectorLabels with a component name. */}}
{{- define "teb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "teb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: teleport-event-bus
{{- end }}

{{- define "teb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "teb.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* "true" when ingest runs the embedded NATS server (nats.url empty). */}}
{{- define "teb.embedded" -}}
{{- if not .Values.nats.url }}true{{ end }}
{{- end }}

{{- define "teb.ingestReplicas" -}}
{{- if not (kindIs "invalid" .Values.ingest.replicas) }}{{ .Values.ingest.replicas }}
{{- else if include "teb.embedded" . }}1
{{- else }}2
{{- end }}
{{- end }}

{{/* The embedded server's Service and the URL the sinks dial. */}}
{{- define "teb.natsService" -}}
{{- printf "%s-nats" (include "teb.fullname" .) }}
{{- end }}

{{- define "teb.natsURL" -}}
{{- if include "teb.embedded" . }}
{{- printf "tls://%s.%s.svc:%d" (include "teb.natsService" .) .Release.Namespace (int .Values.nats.port) }}
{{- else }}
{{- .Values.nats.url }}
{{- end }}
{{- end }}

{{/* ingest's state directory: storagePath, made absolute. */}}
{{- define "teb.storageDir" -}}
{{- $p := .Values.eventHandler.storagePath }}
{{- if isAbs $p }}{{ clean $p }}
{{- else }}{{ clean (printf "/var/lib/teleport-event-bus/%s" $p) }}
{{- end }}
{{- end }}

{{/* Where the pods mount the ConfigMap and each Secret. */}}
{{- define "teb.dir.config" }}/etc/teleport-event-bus/config{{ end }}
{{- define "teb.dir.teleport" }}/etc/teleport-event-bus/teleport{{ end }}
{{- define "teb.dir.teleportCA" }}/etc/teleport-event-bus/teleport-ca{{ end }}
{{- define "teb.dir.fluentd" }}/etc/teleport-event-bus/fluentd{{ end }}
{{- define "teb.dir.sharedKey" }}/etc/teleport-event-bus/fluentd-shared-key{{ end }}
{{- define "teb.dir.natsTLS" }}/etc/teleport-event-bus/nats-tls{{ end }}
{{- define "teb.dir.nkeys" }}/etc/teleport-event-bus/nats-nkeys{{ end }}

{{/*
The port of a URL: its own, else the scheme's default (tls:// is
in_forward's 24224 for Fluentd, 4222 for NATS). Arguments: url, default.
*/}}
{{- define "teb.urlPort" -}}
{{- $u := urlParse .url }}
{{- $hp := splitList ":" $u.host }}
{{- if gt (len $hp) 1 }}{{ last $hp }}
{{- else if eq $u.scheme "https" }}443
{{- else }}{{ .default }}
{{- end }}
{{- end }}

{{/* The Teleport port of teleport.address (host:port). */}}
{{- define "teb.teleportPort" -}}
{{- $hp := splitList ":" .Values.teleport.address }}
{{- if gt (len $hp) 1 }}{{ last $hp }}{{ else }}3025{{ end }}
{{- end }}

{{/*
teb.validate fails the render with one line naming the value and the fix,
for values that would start pods that cannot work, lose events or open the
bus. Every template includes it, so `helm template` fails on any of them.
*/}}
{{- define "teb.validate" -}}
{{- $v := .Values }}
{{- $embedded := include "teb.embedded" . }}
{{- if not $v.teleport.address }}
{{- fail "teleport.address is required: the Teleport proxy (teleport.example.com:443) or auth server (host:3025)" }}
{{- end }}
{{- if not $v.teleport.identitySecretName }}
{{- fail "teleport.identitySecretName is required: the Secret with ingest's identity file (kubectl create secret generic teleport-event-bus-identity --from-file=auth_id=identity)" }}
{{- end }}
{{- if and $v.fluentd.url $v.fluentd.forward.url }}
{{- fail (printf "fluentd.url (in_http, %s) and fluentd.forward.url (in_forward, %s) are both set: the sink delivers to one Fluentd input, remove one" $v.fluentd.url $v.fluentd.forward.url) }}
{{- end }}
{{- if not (or $v.fluentd.url $v.fluentd.forward.url) }}
{{- fail "fluentd.url is required: in_http's URL (https://fluentd.logging.svc:8888/test.log), or fluentd.forward.url for in_forward (tls://fluentd.logging.svc:24224/test.log)" }}
{{- end }}
{{- if and $v.fluentd.url (not (hasPrefix "https://" $v.fluentd.url)) }}
{{- fail (printf "fluentd.url %q must start with https:// (in_http on TLS); for in_forward set fluentd.forward.url instead" $v.fluentd.url) }}
{{- end }}
{{- if and $v.fluentd.sessionUrl (not (hasPrefix "https://" $v.fluentd.sessionUrl)) }}
{{- fail (printf "fluentd.sessionUrl %q must start with https:// (in_http on TLS)" $v.fluentd.sessionUrl) }}
{{- end }}
{{- if $v.fluentd.forward.url }}
{{- if not (hasPrefix "tls://" $v.fluentd.forward.url) }}
{{- fail (printf "fluentd.forward.url %q must start with tls:// (in_forward on TLS)" $v.fluentd.forward.url) }}
{{- end }}
{{- if and $v.fluentd.forward.sessionUrl (not (hasPrefix "tls://" $v.fluentd.forward.sessionUrl)) }}
{{- fail (printf "fluentd.forward.sessionUrl %q must start with tls:// (in_forward on TLS)" $v.fluentd.forward.sessionUrl) }}
{{- end }}
{{- if not $v.fluentd.forward.sharedKeySecretName }}
{{- fail "fluentd.forward.sharedKeySecretName is required with fluentd.forward.url: the Secret with in_forward's shared key (kubectl create secret generic teleport-event-bus-fluentd-shared-key --from-file=fluentd-shared.key)" }}
{{- end }}
{{- end }}
{{- if not $v.fluentd.certificate.secretName }}
{{- fail "fluentd.certificate.secretName is required: the Secret with the sink's Fluentd client certificate (kubectl create secret generic teleport-event-bus-fluentd-client --from-file=ca.crt --from-file=client.crt --from-file=client.key)" }}
{{- end }}
{{- if not $v.nats.nkeys.secretName }}
{{- fail "nats.nkeys.secretName is required: the Secret with the NKey seed of each role and the users file (configure writes them; kubectl create secret generic teleport-event-bus-nats-nkeys --from-file=nats-ingest.nk --from-file=nats-fluentd-sink.nk --from-file=nats-users.toml)" }}
{{- end }}
{{- if $embedded }}
{{- if not $v.nats.tls.secretName }}
{{- fail "nats.tls.secretName is required: the embedded NATS server is reachable from other pods through its Service, so it serves TLS only; set it to the Secret with the CA and the server certificate and key (configure writes them)" }}
{{- end }}
{{- if gt (int (include "teb.ingestReplicas" .)) 1 }}
{{- fail (printf "ingest.replicas is %s, but the embedded NATS server (nats.url empty) keeps the stream in one pod's storage: one store, one owner; set ingest.replicas to 1, or set nats.url to a NATS cluster for 2 ingest replicas" (include "teb.ingestReplicas" .)) }}
{{- end }}
{{- if not $v.persistentVolumeClaim.enabled }}
{{- fail "persistentVolumeClaim.enabled is false, but the embedded NATS server keeps the stream and every cursor in storage: without a volume a restart loses undelivered events; set it to true, or set nats.url to a NATS cluster" }}
{{- end }}
{{- else }}
{{- range splitList "," $v.nats.url }}
{{- if not (hasPrefix "tls://" (trim .)) }}
{{- fail (printf "nats.url %q: every server must be tls:// (the NKey seeds and events must not cross the network in clear)" .) }}
{{- end }}
{{- end }}
{{- if not $v.nats.tls.secretName }}
{{- fail "nats.tls.secretName is required: the Secret with the CA (ca.crt) that signed the NATS servers' certificates" }}
{{- end }}
{{- if lt (int (include "teb.ingestReplicas" .)) 1 }}
{{- fail "ingest.replicas must be at least 1" }}
{{- end }}
{{- end }}
{{- with $v.sink.autoscaling }}
{{- if and .enabled (gt (int .minReplicas) (int .maxReplicas)) }}
{{- fail (printf "sink.autoscaling.minReplicas (%d) is above sink.autoscaling.maxReplicas (%d)" (int .minReplicas) (int .maxReplicas)) }}
{{- end }}
{{- end }}
{{- if $v.tbot.enabled }}
{{- fail "tbot.enabled (teleport-plugin-event-handler chart) is not supported: run tbot yourself and set teleport.identitySecretName to the Secret it writes" }}
{{- end }}
{{- if $v.resources }}
{{- fail "resources (teleport-plugin-event-handler chart) has no single meaning here: set ingest.resources and sink.resources (ingest's memory limit sets its memory budget)" }}
{{- end }}
{{- if or $v.volumes $v.volumeMounts }}
{{- fail "volumes and volumeMounts (teleport-plugin-event-handler chart) are not supported: ingest's storage is persistentVolumeClaim (or persistentVolumeClaim.existingClaim)" }}
{{- end }}
{{- if contains "teleport-plugin-event-handler" $v.image.repository }}
{{- fail (printf "image.repository %q is the teleport-plugin-event-handler image: this chart runs teleport-event-bus; remove image.repository from the values" $v.image.repository) }}
{{- end }}
{{- if ne (toString $v.podSecurityContext.runAsGroup) (toString $v.podSecurityContext.fsGroup) }}
{{- fail "podSecurityContext.runAsGroup and fsGroup must be equal: Secret files are readable by fsGroup, and the commands accept a group-readable key only from their own group" }}
{{- end }}
{{- end }}

{{/*
teb.toml is the TOML one command reads; .component is "ingest" or
"fluentd-sink". Each holds only the keys its command reads.
*/}}
{{- define "teb.toml" -}}
{{- $ := .root }}
{{- $v := $.Values }}
{{- $ingest := eq .component "ingest" }}
{{- $embedded := include "teb.embedded" $ }}
# {{ .component }}'s configuration, rendered by the teleport-event-bus chart
# from its values; keys as in docs/configuration.md.
debug = {{ $v.eventHandler.debug }}
{{- if $ingest }}
storage = {{ include "teb.storageDir" $ | toJson }}
timeout = {{ $v.eventHandler.timeout | toString | toJson }}
batch = {{ $v.eventHandler.batch | int }}
window-size = {{ $v.eventHandler.windowSize | toString | toJson }}
namespace = {{ $v.eventHandler.namespace | toJson }}
types = {{ $v.eventHandler.types | default list | toJson }}
skip-event-types = {{ $v.eventHandler.skipEventTypes | default list | toJson }}
skip-session-types = {{ $v.eventHandler.skipSessionTypes | default list | toJson }}
concurrency = {{ $v.eventHandler.concurrency | int }}
{{- with $v.eventHandler.startTime }}
start-time = {{ . | toString | toJson }}
{{- end }}

[teleport]
addr = {{ $v.teleport.address | toJson }}
identity = {{ printf "%s/%s" (include "teb.dir.teleport" $) $v.teleport.identitySecretPath | toJson }}
{{- else }}

[fluentd]
{{- $c := $v.fluentd.certificate }}
ca = {{ printf "%s/%s" (include "teb.dir.fluentd" $) $c.caPath | toJson }}
cert = {{ printf "%s/%s" (include "teb.dir.fluentd" $) $c.certPath | toJson }}
key = {{ printf "%s/%s" (include "teb.dir.fluentd" $) $c.keyPath | toJson }}
{{- if $v.fluentd.forward.url }}
{{- $f := $v.fluentd.forward }}
url = {{ $f.url | toJson }}
{{- with $f.sessionUrl }}
session-url = {{ . | toJson }}
{{- end }}
shared-key-file = {{ printf "%s/%s" (include "teb.dir.sharedKey" $) $f.sharedKeyPath | toJson }}
self-hostname = {{ $f.selfHostname | toJson }}
{{- else }}
url = {{ $v.fluentd.url | toJson }}
{{- with $v.fluentd.sessionUrl }}
session-url = {{ . | toJson }}
{{- end }}
{{- end }}
{{- end }}

[nats]
{{- if and $ingest $embedded }}
# Empty url: ingest runs the embedded NATS server, on TLS for the sinks.
url = ""
listen = {{ printf "0.0.0.0:%d" (int $v.nats.port) | toJson }}
server-cert = {{ printf "%s/%s" (include "teb.dir.natsTLS" $) $v.nats.tls.certPath | toJson }}
server-key = {{ printf "%s/%s" (include "teb.dir.natsTLS" $) $v.nats.tls.keyPath | toJson }}
users = {{ printf "%s/%s" (include "teb.dir.nkeys" $) $v.nats.nkeys.usersPath | toJson }}
{{- else }}
url = {{ include "teb.natsURL" $ | toJson }}
{{- end }}
ca = {{ printf "%s/%s" (include "teb.dir.natsTLS" $) $v.nats.tls.caPath | toJson }}
{{- if $ingest }}
replicas = {{ ternary 1 (int $v.nats.streamReplicas) (eq $embedded "true") }}
max-age = {{ $v.nats.maxAge | toString | toJson }}

[ingest]
nats-nkey = {{ printf "%s/%s" (include "teb.dir.nkeys" $) $v.nats.nkeys.ingestPath | toJson }}
metrics-addr = {{ printf ":%d" (int $v.metrics.port) | toJson }}
memory-budget = {{ $v.ingest.memoryBudget | toString | toJson }}
lease-ttl = {{ $v.ingest.leaseTTL | toString | toJson }}
{{- else }}

[sink]
nats-nkey = {{ printf "%s/%s" (include "teb.dir.nkeys" $) $v.nats.nkeys.sinkPath | toJson }}
metrics-addr = {{ printf ":%d" (int $v.metrics.port) | toJson }}
{{- end }}
{{- end }}

{{/* The container parts both workloads share. */}}
{{- define "teb.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "teb.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 5
  failureThreshold: 3
{{- end }}
