#!/usr/bin/env bash
# Certificates for the secure deployment, and one authentication key pair per
# SuperNode.
#
#   bash deploy/certs.sh [--out DIR] [--supernodes N] [SAN ...]
#
# Writes DIR/certs/{ca.crt,ca.key,server.pem,server.key} (a private CA and one
# server certificate whose subjectAltName lists every SAN) and
# DIR/keys/supernode-<i>{,.pub} (ECDSA P-384, the key type Flower's SuperNode
# authentication takes). DIR defaults to deploy/, N to 3 and the SANs to the
# compose service names plus localhost:
#   DNS:superlink DNS:supernode-1 ... DNS:supernode-N DNS:localhost IP:127.0.0.1
# For machines of your own, pass their names or addresses, e.g. IP:10.0.0.5.
#
# Register each public key with the SuperLink (TLS on, auth on) before its
# SuperNode starts:  flwr supernode register DIR/keys/supernode-1.pub <profile>
#
# The files are made readable by all so that the containers' non-root user can
# read them through a bind mount. On real machines copy each private key only
# to its own host and keep it at mode 0600.
set -euo pipefail

out="$(dirname "$0")"
supernodes=3
sans=()
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --supernodes) supernodes="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    DNS:*|IP:*) sans+=("$1"); shift ;;
    *) echo "certs.sh: unknown argument '$1' (SANs look like DNS:name or IP:1.2.3.4)" >&2; exit 2 ;;
  esac
done
if ((${#sans[@]} == 0)); then
  sans=(DNS:superlink)
  for ((i = 1; i <= supernodes; i++)); do sans+=("DNS:supernode-$i"); done
  sans+=(DNS:localhost IP:127.0.0.1)
fi
san_list="$(IFS=,; echo "${sans[*]}")"

certs="$out/certs"
keys="$out/keys"
mkdir -p "$certs" "$keys"
openssl req -x509 -newkey rsa:3072 -nodes -days 365 -subj "/CN=llmqfl-ca" \
  -keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
openssl req -newkey rsa:3072 -nodes -subj "/CN=${sans[0]#*:}" \
  -keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" \
  -CAcreateserial -days 365 -out "$certs/server.pem" \
  -extfile <(printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$san_list") \
  2>/dev/null
rm -f "$certs/server.csr" "$certs/ca.srl"
for ((i = 1; i <= supernodes; i++)); do
  rm -f "$keys/supernode-$i" "$keys/supernode-$i.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "supernode-$i" -f "$keys/supernode-$i"
done
chmod a+r "$certs"/* "$keys"/*
chmod 600 "$certs/ca.key"  # signs certificates; never mounted
echo "certs.sh: CA and server certificate ($san_list) in $certs; $supernodes SuperNode key pairs in $keys"
