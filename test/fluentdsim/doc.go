// Package fluentdsim is a test double for Fluentd's in_http input, the far end
// of the pipeline: the fluentd sink posts events to it over HTTPS with mutual
// TLS, and tests ask it what arrived.
//
// It answers the way a real Fluentd 1.18 does with the fluent.conf that
// `configure` writes (see REFERENCE.md): the tag is the URL path, the body is
// one JSON object or an array of objects, `time` is parsed with
// `%Y-%m-%dT%H:%M:%S` (400 on a bad time, the whole array refused) and taken
// out of the stored record unless Options.KeepTimeKey (<parse>'s
// keep_time_key true, which configure writes; KeepTimeKey reads it from a
// fluent.conf), malformed
// JSON is answered 200 and dropped, and the TLS handshake is refused without a
// client certificate from the configured CA. Faults (500s, latency, dropped
// connections, downtime, poison records) can be switched on at runtime.
//
// With Options.ForwardAddr it also serves Fluentd's in_forward (TLS with
// client certificates, the shared-key handshake, Message, Forward and
// PackedForward modes, gzip, acks) into the same store; forward.go says how
// it answers and forward_test.go holds the table of in_forward's behaviour
// it is tested against.
//
// What it stored is kept per tag with duplicate detection by `uid` (audit
// events) or (`sid`, `ei`) (session events), optionally appended to a JSONL
// file, and reported by Stats and by a small plain-HTTP stats endpoint.
package fluentdsim
