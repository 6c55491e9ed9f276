package bus

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
)

// serverTLSTimeout bounds a client's TLS handshake with the embedded
// server, in seconds.
const serverTLSTimeout = 5

// ServerTLS is the TLS configuration of a NATS server's client listener
// for the certificate and (unencrypted) key files [nats] server-cert and
// server-key name: what the embedded server serves, and what a server of
// your own built from pkg/bus may serve. Clients verify the certificate
// with the CA that signed it ([nats] ca); they are not asked for one of
// their own, since each logs in with its NKey. A file that cannot be read,
// a key that does not match, a certificate outside its validity or not
// valid for server use is an error naming the file and the fix.
func ServerTLS(certFile, keyFile string) (*tls.Config, error) {
	pair, err := certs.LoadKeyPair(certFile, keyFile, nil)
	if err != nil {
		return nil, fmt.Errorf("NATS server TLS ([nats] server-cert, server-key): %w (configure <dir> --nats-names <names> writes nats-server.crt and nats-server.key)", err)
	}
	if eku := pair.Leaf.ExtKeyUsage; len(eku) > 0 && !slices.Contains(eku, x509.ExtKeyUsageServerAuth) && !slices.Contains(eku, x509.ExtKeyUsageAny) {
		return nil, fmt.Errorf("NATS server TLS: certificate %q is not valid for server use (no serverAuth extended key usage), clients would refuse it: use nats-server.crt from configure, or a certificate issued for servers", certFile)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}
