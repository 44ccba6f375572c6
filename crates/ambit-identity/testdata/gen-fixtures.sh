#!/bin/sh
# Regenerates the OpenSSL-made fixtures of ambit-identity's tests. Run from anywhere:
#   sh crates/ambit-identity/testdata/gen-fixtures.sh
# Needs only the openssl CLI (3.x). The outputs are committed; tests never run this script.
#
# istio-cacerts/: a plug-in CA in Istio's `cacerts` layout, made the way Istio's tools/certs Makefile does it
#   (RSA 4096 root and intermediate, intermediate with pathlen 0, cert-chain.pem = intermediate + root), valid for
#   100 years so the tests do not rot.
# openssl-csr/: CSRs a foreign client (not rcgen) would send: an ECDSA P-256 CSR with one URI SAN (accepted), and an
#   RSA 1024 one (refused: too short; rcgen cannot make such keys).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
days=36500

cat >"$work/root.conf" <<'CONF'
[req]
distinguished_name = dn
prompt = no
[dn]
O = Istio
CN = Root CA
[ext]
basicConstraints = critical, CA:true
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
subjectKeyIdentifier = hash
CONF

cat >"$work/intermediate.conf" <<'CONF'
[req]
distinguished_name = dn
prompt = no
[dn]
O = Istio
CN = Intermediate CA
L = cluster1
[ext]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
subjectAltName = DNS:istiod.istio-system.svc
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CONF

out="$here/istio-cacerts"
mkdir -p "$out"
openssl genrsa -out "$work/root-key.pem" 4096 2>/dev/null
openssl req -new -sha256 -key "$work/root-key.pem" -config "$work/root.conf" -out "$work/root.csr"
openssl x509 -req -sha256 -days "$days" -in "$work/root.csr" -signkey "$work/root-key.pem" \
    -extfile "$work/root.conf" -extensions ext -out "$out/root-cert.pem" 2>/dev/null
openssl genrsa -out "$out/ca-key.pem" 4096 2>/dev/null
openssl req -new -sha256 -key "$out/ca-key.pem" -config "$work/intermediate.conf" -out "$work/ca.csr"
openssl x509 -req -sha256 -days "$days" -in "$work/ca.csr" -CA "$out/root-cert.pem" -CAkey "$work/root-key.pem" \
    -CAcreateserial -CAserial "$work/root.srl" -extfile "$work/intermediate.conf" -extensions ext \
    -out "$out/ca-cert.pem" 2>/dev/null
cat "$out/ca-cert.pem" "$out/root-cert.pem" >"$out/cert-chain.pem"
chmod 600 "$out/ca-key.pem"

out="$here/openssl-csr"
mkdir -p "$out"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/O=ambit" \
    -addext "subjectAltName = URI:spiffe://cluster.local/ns/demo/sa/client" -out "$out/p256.csr.pem" 2>/dev/null
openssl req -new -newkey rsa:1024 -nodes -keyout /dev/null -subj "/O=ambit" \
    -addext "subjectAltName = URI:spiffe://cluster.local/ns/demo/sa/client" -out "$out/rsa1024.csr.pem" 2>/dev/null
echo "fixtures written under $here"
