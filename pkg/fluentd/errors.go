package fluentd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// RefusedError is a 4xx answer about the records (400 bad time format, 413
// too large, …): Fluentd refused them (for an array, at least one of them)
// and will refuse them again. For in_http a bad record in an array makes it
// refuse the whole array.
type RefusedError struct {
	URL     string
	Result  Result
	Records int
}

// Error names the URL, the number of records and Fluentd's answer.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("fluentd %s refused %d records: %d %s", e.URL, e.Records, e.Result.Status, e.Result.Answer)
}

// StatusError is an answer that is neither a 2xx nor a refusal of the
// records (5xx: Fluentd could not buffer them; 3xx, 401, 403, 404, 429…: a
// misconfigured URL or proxy, or a rate limit). Retry later.
type StatusError struct {
	URL    string
	Result Result
}

// Error names the URL and Fluentd's answer.
func (e *StatusError) Error() string {
	return fmt.Sprintf("fluentd %s answered %d %s", e.URL, e.Result.Status, e.Result.Answer)
}

// TransportError is a request that got no answer: connection refused or
// reset, a timeout, a proxy or TLS failure. Its message explains the TLS
// failures users meet when setting up mTLS.
type TransportError struct {
	// Op is what was being done ("post to" when empty).
	Op  string
	URL string
	// CA is the ca file the client trusts, named in the explanation.
	CA  string
	Err error
}

// Error names the URL, explains a TLS setup failure, and gives the cause.
func (e *TransportError) Error() string {
	op := e.Op
	if op == "" {
		op = "post to"
	}
	if why := explainTLS(e.Err, e.CA); why != "" {
		return fmt.Sprintf("%s fluentd %s: %s: %v", op, e.URL, why, e.Err)
	}
	return fmt.Sprintf("%s fluentd %s: %v", op, e.URL, e.Err)
}

// Unwrap returns the transport's error.
func (e *TransportError) Unwrap() error { return e.Err }

// Refused reports whether err is a 4xx refusal of the records.
func Refused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

// Retryable reports whether sending the same records again later may
// succeed: 5xx answers, timeouts, connection and TLS errors. A refusal and a
// cancelled context are not retryable.
func Retryable(err error) bool {
	if err == nil || Refused(err) {
		return false
	}
	var st *StatusError
	var tr *TransportError
	var he *HandshakeError
	return errors.As(err, &st) || errors.As(err, &tr) || errors.As(err, &he)
}

// explainTLS turns the TLS failures of a misconfigured mTLS setup into a
// sentence naming what to fix; "" for other errors.
func explainTLS(err error, ca string) string {
	if errors.Is(err, context.Canceled) {
		return ""
	}
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		if ca == "" {
			return "the Fluentd server's certificate is not signed by a CA in the system roots (set the fluentd ca)"
		}
		return fmt.Sprintf("the Fluentd server's certificate is not signed by ca %s", ca)
	}
	var host x509.HostnameError
	if errors.As(err, &host) {
		return fmt.Sprintf("the Fluentd server's certificate is not valid for %q (fix the URL or set the fluentd server-name)", host.Host)
	}
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) {
		return "the Fluentd server's certificate is not valid"
	}
	var rec tls.RecordHeaderError
	msg := err.Error()
	// net/http replaces the record header error of an HTTP answer with a
	// plain string of its own.
	if errors.As(err, &rec) || strings.Contains(msg, "server gave HTTP response to HTTPS client") {
		return "the Fluentd server did not answer with TLS (is it plain http?)"
	}
	// A server that requires a client certificate rejects ours (or its
	// absence) with an alert; with TLS 1.3 it arrives on the first read.
	if strings.Contains(msg, "remote error: tls:") &&
		(strings.Contains(msg, "certificate") || strings.Contains(msg, "handshake failure")) {
		return "Fluentd refused our client certificate (client_cert_auth)"
	}
	return ""
}
