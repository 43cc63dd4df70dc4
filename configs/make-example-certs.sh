#!/usr/bin/env bash
# Throwaway certificates for the example configs (edge-full.yaml, edge-tls.yaml): a test CA,
# a server certificate for the edge, and a client certificate for mTLS to backends.
# For trying kedge locally only; never deploy these. Usage: configs/make-example-certs.sh [DIR]
set -euo pipefail
dir=${1:-"$(dirname "$0")/certs"}
mkdir -p "$dir"
cd "$dir"
days=30
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=kedge example CA" \
  -keyout backend-ca-key.pem -out backend-ca.pem -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
issue() { # name, subject CN, extensions
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA backend-ca.pem -CAkey backend-ca-key.pem -CAcreateserial \
    -days "$days" -out "$1.pem" -extfile <(printf '%s\n' "$3") 2>/dev/null
  rm -f "$1.csr"
}
issue edge "edge.example.test" "subjectAltName=DNS:localhost,DNS:*.example.test,IP:127.0.0.1
extendedKeyUsage=serverAuth"
issue client "kedge-edge" "subjectAltName=DNS:kedge-edge
extendedKeyUsage=clientAuth"
# An empty CRL of the CA, for the mTLS example (client_certs.crl_files).
: > index.txt
echo 1000 > crlnumber
printf '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\ncrlnumber=crlnumber\ndefault_md=sha256\ndefault_crl_days=%s\n' \
  "$days" > crl.cnf
openssl ca -config crl.cnf -gencrl -keyfile backend-ca-key.pem -cert backend-ca.pem -out crl.pem 2>/dev/null
rm -f crl.cnf index.txt* crlnumber*
# A kubeconfig for the `kubernetes:` example (an API server on 127.0.0.1:6443).
cat > kubeconfig.yaml <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: example, cluster: {server: "https://127.0.0.1:6443", certificate-authority: backend-ca.pem}}]
users: [{name: edge, user: {client-certificate: client.pem, client-key: client-key.pem}}]
contexts: [{name: example, context: {cluster: example, user: edge}}]
current-context: example
KUBECONFIG
chmod 600 ./*-key.pem kubeconfig.yaml
echo "wrote example certificates to $(pwd)"
