package certs

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
)

// ErrPassphraseRequired is returned when a key is encrypted and no
// passphrase was given.
var ErrPassphraseRequired = errors.New("private key is encrypted and no passphrase was given")

// ErrBadPassphrase is returned when the passphrase does not open the key.
var ErrBadPassphrase = errors.New("wrong passphrase for private key")

// PBKDF2Iterations is the iteration count EncryptKeyPEM uses. Fluentd opens
// the key once at start-up, so a high count costs little.
const PBKDF2Iterations = 100_000

// Object identifiers of RFC 8018 (PKCS #5 v2.1) and NIST.
var (
	oidPBES2          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidHMACWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

// encryptedPrivateKeyInfo is RFC 5208's EncryptedPrivateKeyInfo.
type encryptedPrivateKeyInfo struct {
	Algorithm     pkix.AlgorithmIdentifier
	EncryptedData []byte
}

// pbes2Params is RFC 8018's PBES2-params.
type pbes2Params struct {
	KeyDerivationFunc pkix.AlgorithmIdentifier
	EncryptionScheme  pkix.AlgorithmIdentifier
}

// pbkdf2Params is RFC 8018's PBKDF2-params with a salt given as an octet
// string (the "otherSource" choice is reserved and never used).
type pbkdf2Params struct {
	Salt           []byte
	IterationCount int
	KeyLength      int                      `asn1:"optional"`
	PRF            pkix.AlgorithmIdentifier `asn1:"optional"`
}

// EncryptKeyPEM encodes key as an "ENCRYPTED PRIVATE KEY" PEM block: PKCS#8
// under PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC, the form OpenSSL (and
// so Fluentd's Ruby) reads with a passphrase.
func EncryptKeyPEM(key crypto.Signer, passphrase []byte) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("encrypt private key: empty passphrase")
	}
	plain, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encrypt private key: %w", err)
	}
	salt := make([]byte, 16)
	iv := make([]byte, aes.BlockSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("encrypt private key: salt: %w", err)
	}
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("encrypt private key: iv: %w", err)
	}
	dk, err := pbkdf2.Key(sha256.New, string(passphrase), salt, PBKDF2Iterations, 32)
	if err != nil {
		return nil, fmt.Errorf("encrypt private key: derive key: %w", err)
	}
	block, err := aes.NewCipher(dk)
	if err != nil {
		return nil, fmt.Errorf("encrypt private key: %w", err)
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	data := append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(data, data)

	kdf, err := asn1.Marshal(pbkdf2Params{
		Salt:           salt,
		IterationCount: PBKDF2Iterations,
		PRF:            pkix.AlgorithmIdentifier{Algorithm: oidHMACWithSHA256, Parameters: asn1.NullRawValue},
	})
	if err != nil {
		return nil, fmt.Errorf("encrypt private key: %w", err)
	}
	ivDER, err := asn1.Marshal(iv)
	if err != nil {
		return nil, fmt.Errorf("encrypt private key: %w", err)
	}
	params, err := asn1.Marshal(pbes2Params{
		KeyDerivationFunc: pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: kdf}},
		EncryptionScheme:  pkix.AlgorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: ivDER}},
	})
	if err != nil {
		return nil, fmt.Errorf("encrypt private key: %w", err)
	}
	der, err := asn1.Marshal(encryptedPrivateKeyInfo{
		Algorithm:     pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: params}},
		EncryptedData: data,
	})
	if err != nil {
		return nil, fmt.Errorf("encrypt private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM reads the first private key in data: PKCS#1 ("RSA PRIVATE
// KEY"), SEC 1 ("EC PRIVATE KEY"), PKCS#8 ("PRIVATE KEY") or PBES2-encrypted
// PKCS#8 ("ENCRYPTED PRIVATE KEY"). Legacy OpenSSL encryption (a PEM block
// with a DEK-Info header, as teleport-event-handler wrote server.key) is read
// too. An encrypted key without a passphrase gives ErrPassphraseRequired; a
// passphrase that does not open it gives ErrBadPassphrase.
func ParseKeyPEM(data, passphrase []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key block found")
		}
		switch block.Type {
		case "RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			return parseKeyBlock(block, passphrase)
		}
	}
}

func parseKeyBlock(block *pem.Block, passphrase []byte) (crypto.Signer, error) {
	der := block.Bytes
	if block.Headers["DEK-Info"] != "" {
		if len(passphrase) == 0 {
			return nil, ErrPassphraseRequired
		}
		//lint:ignore SA1019 legacy PEM encryption is insecure but older files use it.
		plain, err := x509.DecryptPEMBlock(block, passphrase) //nolint:staticcheck
		if err != nil {
			return nil, ErrBadPassphrase
		}
		der = plain
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(der)
		if err != nil {
			return nil, badKey(block, err)
		}
		return k, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(der)
		if err != nil {
			return nil, badKey(block, err)
		}
		return k, nil
	case "ENCRYPTED PRIVATE KEY":
		if len(passphrase) == 0 {
			return nil, ErrPassphraseRequired
		}
		plain, err := decryptPKCS8(der, passphrase)
		if err != nil {
			return nil, err
		}
		k, err := parsePKCS8(plain)
		if err != nil {
			// CBC padding matches by chance about once in 256 wrong passphrases.
			return nil, ErrBadPassphrase
		}
		return k, nil
	default:
		k, err := parsePKCS8(der)
		if err != nil {
			return nil, badKey(block, err)
		}
		return k, nil
	}
}

func badKey(block *pem.Block, err error) error {
	if block.Headers["DEK-Info"] != "" {
		return ErrBadPassphrase
	}
	return fmt.Errorf("parse %s: %w", block.Type, err)
}

func parsePKCS8(der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", k)
	}
	return s, nil
}

// decryptPKCS8 opens a PBES2 EncryptedPrivateKeyInfo.
func decryptPKCS8(der, passphrase []byte) ([]byte, error) {
	var info encryptedPrivateKeyInfo
	if err := unmarshalAll(der, &info); err != nil {
		return nil, fmt.Errorf("parse encrypted private key: %w", err)
	}
	if !info.Algorithm.Algorithm.Equal(oidPBES2) {
		return nil, fmt.Errorf("encrypted private key uses %s; only PBES2 is supported", info.Algorithm.Algorithm)
	}
	var params pbes2Params
	if err := unmarshalAll(info.Algorithm.Parameters.FullBytes, &params); err != nil {
		return nil, fmt.Errorf("parse PBES2 parameters: %w", err)
	}
	if !params.KeyDerivationFunc.Algorithm.Equal(oidPBKDF2) {
		return nil, fmt.Errorf("encrypted private key derives its key with %s; only PBKDF2 is supported", params.KeyDerivationFunc.Algorithm)
	}
	var kdf pbkdf2Params
	if err := unmarshalAll(params.KeyDerivationFunc.Parameters.FullBytes, &kdf); err != nil {
		return nil, fmt.Errorf("parse PBKDF2 parameters: %w", err)
	}
	prf, err := prfHash(kdf.PRF.Algorithm)
	if err != nil {
		return nil, err
	}
	keyLen, err := aesKeyLen(params.EncryptionScheme.Algorithm)
	if err != nil {
		return nil, err
	}
	if kdf.KeyLength != 0 && kdf.KeyLength != keyLen {
		return nil, fmt.Errorf("encrypted private key: key length %d does not fit the cipher", kdf.KeyLength)
	}
	if kdf.IterationCount < 1 || kdf.IterationCount > 10_000_000 {
		return nil, fmt.Errorf("encrypted private key: iteration count %d out of range", kdf.IterationCount)
	}
	var iv []byte
	if err := unmarshalAll(params.EncryptionScheme.Parameters.FullBytes, &iv); err != nil || len(iv) != aes.BlockSize {
		return nil, errors.New("encrypted private key: bad AES-CBC IV")
	}
	data := info.EncryptedData
	if len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, errors.New("encrypted private key: ciphertext is not a whole number of blocks")
	}
	dk, err := pbkdf2.Key(prf, string(passphrase), kdf.Salt, kdf.IterationCount, keyLen)
	if err != nil {
		return nil, fmt.Errorf("encrypted private key: derive key: %w", err)
	}
	block, err := aes.NewCipher(dk)
	if err != nil {
		return nil, fmt.Errorf("encrypted private key: %w", err)
	}
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, data)
	pad := int(plain[len(plain)-1])
	if pad < 1 || pad > aes.BlockSize || !bytes.Equal(plain[len(plain)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, ErrBadPassphrase
	}
	return plain[:len(plain)-pad], nil
}

func unmarshalAll(der []byte, v any) error {
	rest, err := asn1.Unmarshal(der, v)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return errors.New("trailing data")
	}
	return nil
}

func prfHash(oid asn1.ObjectIdentifier) (func() hash.Hash, error) {
	switch {
	case len(oid) == 0, oid.Equal(oidHMACWithSHA1):
		return sha1.New, nil
	case oid.Equal(oidHMACWithSHA256):
		return sha256.New, nil
	case oid.Equal(oidHMACWithSHA384):
		return sha512.New384, nil
	case oid.Equal(oidHMACWithSHA512):
		return sha512.New, nil
	}
	return nil, fmt.Errorf("encrypted private key: unsupported PBKDF2 PRF %s", oid)
}

func aesKeyLen(oid asn1.ObjectIdentifier) (int, error) {
	switch {
	case oid.Equal(oidAES128CBC):
		return 16, nil
	case oid.Equal(oidAES192CBC):
		return 24, nil
	case oid.Equal(oidAES256CBC):
		return 32, nil
	}
	return 0, fmt.Errorf("encrypted private key: unsupported cipher %s (AES-CBC only)", oid)
}
