package teleportsim

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gravitational/teleport/api/constants"
	"github.com/gravitational/teleport/api/identityfile"
	"golang.org/x/crypto/ssh"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
)

// Names of the files WriteIdentity writes into its directory.
const (
	IdentityFileName = "identity"
	CertFileName     = "tls.crt"
	KeyFileName      = "tls.key"
	CAFileName       = "ca.crt"
)

// IdentityRoles are the roles a client certificate's subject names, as
// Teleport's tlsca puts them in the Organization.
var IdentityRoles = []string{"teleport-event-handler"}

// clusterCreds are the server's CAs and certificate.
type clusterCreds struct {
	ca     *certs.CA
	sshCA  ssh.Signer
	server tls.Certificate
	pool   *x509.CertPool
}

func newCredentials(ca *certs.CA, cluster string) (*clusterCreds, error) {
	if ca == nil {
		var err error
		ca, err = NewCA(cluster)
		if err != nil {
			return nil, err
		}
	}
	_, sshKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate SSH CA key: %w", err)
	}
	sshCA, err := ssh.NewSignerFromKey(sshKey)
	if err != nil {
		return nil, fmt.Errorf("SSH CA signer: %w", err)
	}
	pair, err := ca.Issue(certs.Request{
		CommonName: constants.APIDomain,
		// Teleport clients dial with SNI teleport.cluster.local.
		DNSNames: []string{constants.APIDomain, "*." + constants.APIDomain, "localhost", cluster},
		IPs:      []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Usage:    certs.ServerAuth | certs.ClientAuth,
		KeyType:  certs.KeyECDSA,
	})
	if err != nil {
		return nil, fmt.Errorf("issue server certificate: %w", err)
	}
	server, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("load server certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &clusterCreds{ca: ca, sshCA: sshCA, server: server, pool: pool}, nil
}

// NewCA makes a CA for a simulated cluster.
func NewCA(cluster string) (*certs.CA, error) {
	ca, err := certs.NewCA(certs.Request{
		CommonName:   cluster,
		Organization: []string{cluster},
		KeyType:      certs.KeyECDSA,
		TTL:          10 * 365 * 24 * time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("make cluster CA: %w", err)
	}
	return ca, nil
}

// tlsConfig requires a client certificate from the cluster CA, as
// Teleport's auth server does.
func (c *clusterCreds) tlsConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{c.server},
		ClientCAs:    c.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
	}
}

// identity issues a client identity for user valid for ttl from now; a
// negative ttl makes one that expired -ttl ago.
func (c *clusterCreds) identity(cluster, user string, ttl time.Duration, now time.Time) (*identityfile.IdentityFile, error) {
	notBefore := now.Add(-time.Minute)
	if ttl < 0 {
		notBefore = now.Add(2 * ttl)
		ttl = -ttl
	}
	if ttl == 0 {
		return nil, fmt.Errorf("identity for %q: zero TTL", user)
	}
	pair, err := c.ca.Issue(certs.Request{
		Subject:   &pkix.Name{CommonName: user, Organization: IdentityRoles, StreetAddress: []string{cluster}},
		Usage:     certs.ClientAuth,
		KeyType:   certs.KeyECDSA,
		TTL:       ttl,
		NotBefore: notBefore,
	})
	if err != nil {
		return nil, fmt.Errorf("issue client certificate for %q: %w", user, err)
	}
	sshPub, err := ssh.NewPublicKey(pair.Key.Public())
	if err != nil {
		return nil, fmt.Errorf("SSH public key for %q: %w", user, err)
	}
	serial := make([]byte, 8)
	if _, err := rand.Read(serial); err != nil {
		return nil, fmt.Errorf("SSH certificate serial: %w", err)
	}
	sshCert := &ssh.Certificate{
		Key:             sshPub,
		Serial:          binary.BigEndian.Uint64(serial),
		CertType:        ssh.UserCert,
		KeyId:           user,
		ValidPrincipals: []string{user},
		ValidAfter:      uint64(notBefore.Unix()),
		ValidBefore:     uint64(notBefore.Add(ttl).Unix()),
		Permissions:     ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}},
	}
	if err := sshCert.SignCert(rand.Reader, c.sshCA); err != nil {
		return nil, fmt.Errorf("sign SSH certificate for %q: %w", user, err)
	}
	hostCA := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c.sshCA.PublicKey())))
	return &identityfile.IdentityFile{
		PrivateKey: pair.KeyPEM,
		Certs:      identityfile.Certs{SSH: ssh.MarshalAuthorizedKey(sshCert), TLS: pair.CertPEM},
		CACerts: identityfile.CACerts{
			SSH: [][]byte{[]byte(fmt.Sprintf("@cert-authority %s,*.%s %s type=host\n", cluster, cluster, hostCA))},
			TLS: [][]byte{c.ca.CertPEM},
		},
	}, nil
}

// writeIdentity writes an identity file and the same credentials as PEM
// files, all mode 0600, into dir.
func writeIdentity(id *identityfile.IdentityFile, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create identity directory %q: %w", dir, err)
	}
	raw, err := identityfile.Encode(id)
	if err != nil {
		return "", fmt.Errorf("encode identity file: %w", err)
	}
	path := filepath.Join(dir, IdentityFileName)
	files := map[string][]byte{
		path:                             raw,
		filepath.Join(dir, CertFileName): id.Certs.TLS,
		filepath.Join(dir, KeyFileName):  id.PrivateKey,
		filepath.Join(dir, CAFileName):   id.CACerts.TLS[0],
	}
	for name, data := range files {
		if err := certs.WriteFile(name, data, 0o600); err != nil {
			return "", fmt.Errorf("write identity: %w", err)
		}
	}
	return path, nil
}
