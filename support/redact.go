package support

import (
	"bytes"
	"regexp"
)

// Redacted replaces every secret Redact removes.
const Redacted = "<redacted>"

var (
	// A PEM block whose type names a private key, up to its END line or,
	// when a log cut it short, to the end of the input: a truncated key
	// is still a key.
	privateKeyRE = regexp.MustCompile(`(?s)-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)`)
	// kubeadm's bootstrap token format, anywhere (a log line, a URL).
	tokenRE = regexp.MustCompile(`[a-z0-9]{6}\.[a-z0-9]{16}`)
	// age's secret keys and plugin identities.
	ageRE = regexp.MustCompile(`(?i)AGE-(?:SECRET-KEY|PLUGIN-[A-Z0-9-]+?)-1[0-9A-Z]*`)
	// Fields whose value is a credential, in YAML or JSON: a kubeconfig's
	// client-key-data, client-certificate-data and token, the encryption
	// config's secret, a password, the certificate key upload-certs seals
	// with. The value runs to its closing quote, or to the end of the line.
	fieldRE = regexp.MustCompile(`(?i)((?:client-key-data|client-certificate-data|token|secret|password|certificate-key|certificatekey)["']?[ \t]*[:=][ \t]*)("(?:[^"\\\r\n]|\\.)*"?|'[^'\r\n]*'?|[^\r\n]*)`)
)

// Redact returns b with every secret a support bundle must not carry
// replaced by Redacted: PEM private key blocks (the BEGIN and END lines are
// kept so a reader sees a key was there), bootstrap tokens, age identities,
// and the values of credential fields (kubeconfigs' client-key-data,
// client-certificate-data and token; the encryption config's secret;
// password; certificate-key). It errs on the side of hiding: a line that
// merely looks like one of these loses its value too.
func Redact(b []byte) []byte {
	b = privateKeyRE.ReplaceAllFunc(b, func(m []byte) []byte {
		kind := privateKeyRE.FindSubmatch(m)[1]
		return []byte("-----BEGIN " + string(kind) + "-----\n" + Redacted + "\n-----END " + string(kind) + "-----")
	})
	b = fieldRE.ReplaceAllFunc(b, func(m []byte) []byte {
		sub := fieldRE.FindSubmatch(m)
		v := sub[2]
		if len(bytes.TrimSpace(v)) == 0 || bytes.Equal(bytes.Trim(v, `"'`), []byte(Redacted)) {
			return m
		}
		q := ""
		if len(v) > 0 && (v[0] == '"' || v[0] == '\'') {
			q = string(v[0])
		}
		return []byte(string(sub[1]) + q + Redacted + q)
	})
	// A token can hide inside a longer run ("xabcdef.…"): replace until
	// none is left.
	for tokenRE.Match(b) {
		b = tokenRE.ReplaceAll(b, []byte(Redacted))
	}
	return ageRE.ReplaceAll(b, []byte("AGE-SECRET-KEY-"+Redacted))
}
