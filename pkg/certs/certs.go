// Package certs makes and loads the X.509 material of the pipeline's mTLS
// links: the CA, server and client certificates `configure` writes for
// Fluentd's in_http, and the certificates the Teleport and Fluentd test
// doubles serve. It also reads and writes private keys, including the
// passphrase-encrypted PKCS#8 form Fluentd (OpenSSL) opens.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// KeyType is the kind of private key a certificate is made for.
type KeyType string

// The key types NewCA and Issue can generate.
const (
	KeyRSA   KeyType = "rsa"
	KeyECDSA KeyType = "ecdsa"
)

// Usage says what an issued certificate may be used for. The values are bit
// flags: ServerAuth|ClientAuth makes a certificate usable on both ends.
type Usage int

// The extended key usages Issue can set.
const (
	ServerAuth Usage = 1 << iota
	ClientAuth
)

// Defaults applied to the zero fields of a Request.
const (
	DefaultRSABits = 2048
	DefaultTTL     = 365 * 24 * time.Hour
	// DefaultBackdate is how far before "now" a certificate becomes valid by
	// default, so a peer whose clock is slightly behind still accepts it.
	DefaultBackdate = time.Minute
)

// Request describes a certificate to make. Only CommonName is needed; the
// zero values of the other fields pick the defaults documented on each.
type Request struct {
	CommonName   string
	Organization []string
	// Subject, when set, replaces the subject built from CommonName and
	// Organization (test doubles that encode an identity in the subject).
	Subject  *pkix.Name
	DNSNames []string
	IPs      []net.IP
	// Usage selects the extended key usages of an issued certificate; zero
	// leaves the extension out, which Go and OpenSSL treat as "any usage".
	// NewCA ignores it.
	Usage Usage
	// KeyType defaults to KeyRSA.
	KeyType KeyType
	// RSABits defaults to DefaultRSABits; ignored for ECDSA (always P-256).
	RSABits int
	// TTL defaults to DefaultTTL. The certificate's NotAfter is NotBefore + TTL.
	TTL time.Duration
	// NotBefore defaults to now minus DefaultBackdate.
	NotBefore time.Time
	// ExtraExtensions are added to the certificate as they are.
	ExtraExtensions []pkix.Extension
}

// CA is a certificate authority: its certificate and key, parsed and as PEM.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// Pair is an issued certificate and its key, parsed and as PEM. KeyPEM is
// unencrypted PKCS#8; use EncryptKeyPEM for a protected copy.
type Pair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed certificate authority.
func NewCA(req Request) (*CA, error) {
	key, err := generateKey(req)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl, err := template(req)
	if err != nil {
		return nil, fmt.Errorf("CA %q: %w", req.CommonName, err)
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = nil
	cert, certPEM, err := sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA %q: %w", req.CommonName, err)
	}
	keyPEM, err := MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// Issue makes a certificate signed by the CA, for a new key of req.KeyType.
func (ca *CA) Issue(req Request) (*Pair, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("issue certificate: CA has no certificate or key")
	}
	key, err := generateKey(req)
	if err != nil {
		return nil, fmt.Errorf("generate key for %q: %w", req.CommonName, err)
	}
	tmpl, err := template(req)
	if err != nil {
		return nil, fmt.Errorf("certificate %q: %w", req.CommonName, err)
	}
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if _, ok := key.(*rsa.PrivateKey); ok {
		// RSA key exchange (TLS 1.2 without ECDHE) encrypts with the key.
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if req.Usage&ServerAuth != 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if req.Usage&ClientAuth != 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	cert, certPEM, err := sign(tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", req.CommonName, err)
	}
	keyPEM, err := MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	return &Pair{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// MarshalKeyPEM encodes a private key as an unencrypted PKCS#8 PEM block
// ("PRIVATE KEY").
func MarshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func generateKey(req Request) (crypto.Signer, error) {
	switch req.KeyType {
	case "", KeyRSA:
		bits := req.RSABits
		if bits == 0 {
			bits = DefaultRSABits
		}
		if bits < 2048 {
			return nil, fmt.Errorf("RSA key size %d is below the minimum 2048", bits)
		}
		return rsa.GenerateKey(rand.Reader, bits)
	case KeyECDSA:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("unknown key type %q (want %q or %q)", req.KeyType, KeyRSA, KeyECDSA)
	}
}

func template(req Request) (*x509.Certificate, error) {
	if req.TTL < 0 {
		return nil, fmt.Errorf("negative TTL %s", req.TTL)
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	notBefore := req.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-DefaultBackdate)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	subject := pkix.Name{CommonName: req.CommonName, Organization: req.Organization}
	if req.Subject != nil {
		subject = *req.Subject
	}
	return &x509.Certificate{
		SerialNumber:    serial,
		Subject:         subject,
		DNSNames:        req.DNSNames,
		IPAddresses:     req.IPs,
		NotBefore:       notBefore.UTC(),
		NotAfter:        notBefore.Add(ttl).UTC(),
		ExtraExtensions: req.ExtraExtensions,
	}, nil
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, []byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
