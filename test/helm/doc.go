// Package helm checks the chart deploy/helm/teleport-event-bus with the real
// helm (v4, installed by .ci/run from the module proxy): `helm lint
// --strict` and `helm template` for a matrix of values (the files
// `configure --helm` writes, an external NATS cluster, in_forward,
// monitoring, the values file of the teleport-plugin-event-handler chart);
// every rendered object decoded strictly into its k8s.io/api (or Prometheus
// operator) type; each pod's files laid out as the kubelet would mount
// them, from the Secrets configure's script creates, and its TOML loaded by
// pkg/config; and the values that must fail `helm template` with a message
// naming them. No Kubernetes API server runs: admission, scheduling and the
// pods themselves are not exercised.
package helm
