// Package deploy checks what operators install from deploy/ and read in
// docs/: the systemd units (systemd-analyze), the 3-node NATS cluster
// configuration with TLS and per-role users (started for real), the Helm
// chart's memory defaults (test/helm renders the chart), the Prometheus
// rules and Grafana dashboard (every metric they name exists in the
// code), and the documentation (generated
// metrics reference, links, the consumer example; the error messages
// docs/troubleshooting.md quotes are produced by test/e2e).
package deploy
