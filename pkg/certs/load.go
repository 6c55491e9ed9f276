package certs

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// LoadKeyPair reads a PEM certificate (chain) and its private key, opening an
// encrypted key with passphrase. Errors name the file: unreadable, not PEM,
// a key that does not match the certificate, and a certificate outside its
// validity period (with its NotBefore/NotAfter).
func LoadKeyPair(certFile, keyFile string, passphrase []byte) (tls.Certificate, error) {
	chain, err := readCertificates(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read key file: %w", err)
	}
	key, err := ParseKeyPEM(keyPEM, passphrase)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("key file %q: %w", keyFile, err)
	}
	leaf := chain[0]
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return tls.Certificate{}, fmt.Errorf("key file %q does not match the certificate in %q", keyFile, certFile)
	}
	if err := checkValidity(leaf, time.Now()); err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate file %q: %w", certFile, err)
	}
	out := tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out, nil
}

// LoadCertPool reads the PEM certificates of caFile into a pool, for
// verifying the other end of a TLS connection.
func LoadCertPool(caFile string) (*x509.CertPool, error) {
	certs, err := readCertificates(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// WriteFile writes data to path with mode, replacing the file atomically (a
// temporary file in the same directory, synced, then renamed), so a reader
// never sees half a key. The mode is set exactly, whatever the umask.
func WriteFile(path string, data []byte, mode os.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	return nil
}

// readCertificates parses every CERTIFICATE block of a PEM file; it fails
// when there is none.
func readCertificates(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read certificate file: %w", err)
	}
	var certs []*x509.Certificate
	sawPEM := false
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		sawPEM = true
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate file %q: certificate %d: %w", file, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	switch {
	case !sawPEM:
		return nil, fmt.Errorf("certificate file %q is not PEM", file)
	case len(certs) == 0:
		return nil, fmt.Errorf("certificate file %q holds no CERTIFICATE block", file)
	}
	return certs, nil
}

// ErrCertificateExpired is wrapped by LoadKeyPair's error when the
// certificate's NotAfter has passed.
var ErrCertificateExpired = errors.New("certificate has expired")

// ErrCertificateNotYetValid is wrapped by LoadKeyPair's error when the
// certificate's NotBefore is still in the future.
var ErrCertificateNotYetValid = errors.New("certificate is not yet valid")

func checkValidity(c *x509.Certificate, now time.Time) error {
	if now.After(c.NotAfter) {
		return fmt.Errorf("%w: NotAfter %s is in the past (subject %q)", ErrCertificateExpired, c.NotAfter.UTC().Format(time.RFC3339), c.Subject.CommonName)
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("%w: NotBefore %s is in the future (subject %q)", ErrCertificateNotYetValid, c.NotBefore.UTC().Format(time.RFC3339), c.Subject.CommonName)
	}
	return nil
}
