package fluentdsim

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
)

// tlsConfig builds in_http's <transport tls> with client_cert_auth: TLS 1.2
// or newer, HTTP/1.1 only, and a client certificate from the CA required and
// verified.
func tlsConfig(o Options) (*tls.Config, error) {
	pool, err := clientCAs(o)
	if err != nil {
		return nil, err
	}
	cert, err := serverCert(o)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{"http/1.1"},
	}, nil
}

func clientCAs(o Options) (*x509.CertPool, error) {
	if o.CAFile != "" {
		pool, err := certs.LoadCertPool(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file %q: %w", o.CAFile, err)
		}
		return pool, nil
	}
	if len(o.CAPEM) == 0 {
		return nil, errors.New("no CA: set CAFile or CAPEM (client_cert_auth needs the CA of the client certificates)")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(o.CAPEM) {
		return nil, errors.New("CAPEM holds no PEM certificate")
	}
	return pool, nil
}

func serverCert(o Options) (tls.Certificate, error) {
	pass := []byte(o.KeyPassphrase)
	switch {
	case o.CertFile != "" && o.KeyFile != "":
		c, err := certs.LoadKeyPair(o.CertFile, o.KeyFile, pass)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
		}
		return c, nil
	case o.CertFile != "" || o.KeyFile != "":
		return tls.Certificate{}, errors.New("server certificate: set both CertFile and KeyFile")
	}
	certPEM, keyPEM := o.CertPEM, o.KeyPEM
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return tls.Certificate{}, errors.New("no server certificate: set CertFile and KeyFile, or CertPEM and KeyPEM")
	}
	key, err := certs.ParseKeyPEM(keyPEM, pass)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server key: %w", err)
	}
	// tls.X509KeyPair cannot take an encrypted key; hand it the parsed one.
	plain, err := certs.MarshalKeyPEM(key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server key: %w", err)
	}
	c, err := tls.X509KeyPair(certPEM, plain)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	return c, nil
}
