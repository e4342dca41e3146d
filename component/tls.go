package component

// TLSMinVersion and TLSCipherSuites are the TLS settings of every server
// anvil configures: TLS 1.2 at least,
// and for 1.2 only ECDHE key exchange with AEAD ciphers (TLS 1.3's suites
// are all strong and not configurable). Both ECDSA and RSA suites are listed
// because the key algorithm is the operator's choice (pki.keyAlgorithm).
const TLSMinVersion = "VersionTLS12"

func TLSCipherSuites() []string {
	return []string{
		"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
		"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
		"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
		"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
		"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
		"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	}
}
