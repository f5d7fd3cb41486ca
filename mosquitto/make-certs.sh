#!/bin/sh
# Make a plant's private certificate authority and the certificates of its MQTT broker and clients (openssl).
#
# Usage: make-certs.sh DIR [CLIENT...]
#
#   DIR        where the files go (made if missing): ca.crt (give it to every client), ca.key (keep it offline),
#              server.crt/server.key (the broker's), and NAME.crt/NAME.key per client.
#   CLIENT     NAME or NAME:USERNAME. The certificate's Common Name is USERNAME (default NAME); on the client
#              certificate listener (use_identity_as_username, use_username_as_clientid) the CN IS the broker login
#              and the client id: a login of MQTT_INGESTOR_LOGINS for an ingestor (`ingestor-1`, also its
#              INGEST_CLIENT_ID), the gateway's own login for a gateway or device (`gw-hall2`, declared in
#              make-logins.sh as gw-hall2@plant1).
#   MQTT_SERVER_NAMES   the names clients use for the broker, comma-separated, put in the server certificate's
#              subjectAltName (addresses as IP entries); default mosquitto,localhost,127.0.0.1. Clients check the
#              name they connect to against this list, so every host name and address in use must be here.
#   CERT_DAYS  validity of server and client certificates (default 825); the CA is valid for 10 years.
#
# An existing CA (DIR/ca.key) is reused, so clients added later are trusted by the same broker; the server and
# the named clients get new keys and certificates. Keys are EC P-256, written with mode 0600. Refuses with exit
# status 2 and one line for a wrong argument.

set -eu
LC_ALL=C
export LC_ALL

PROGRAM=make-certs.sh

refuse() {
    printf '%s: %s\n' "$PROGRAM" "$1" >&2
    exit 2
}

[ $# -ge 1 ] || refuse "usage: $PROGRAM DIR [NAME[:USERNAME]...]"
DIR=$1
shift
NAMES=${MQTT_SERVER_NAMES:-mosquitto,localhost,127.0.0.1}
DAYS=${CERT_DAYS:-825}
case $DAYS in '' | *[!0-9]*) refuse "CERT_DAYS must be a number of days" ;; esac
command -v openssl >/dev/null 2>&1 || { printf '%s: openssl not found (apt-get install openssl)\n' "$PROGRAM" >&2; exit 1; }

# Check every client before anything is written.
for client in "$@"; do
    name=${client%%:*}
    user=${client#*:}
    for part in "$name" "$user"; do
        case $part in
            '' | [!a-z0-9]* | *[!a-z0-9_-]*)
                refuse "\"$client\": names and usernames are codes ([a-z0-9][a-z0-9_-]{0,63})" ;;
        esac
    done
    [ "$name" != ca ] && [ "$name" != server ] || refuse "\"$name\" is reserved for the CA and the broker"
done

san=
saved_ifs=$IFS
IFS=,
for host in $NAMES; do
    case $host in
        '') refuse "MQTT_SERVER_NAMES has an empty entry" ;;
        *:* | *[0-9].*[0-9].*[0-9].*[0-9]) entry="IP:$host" ;;
        *) entry="DNS:$host" ;;
    esac
    san="${san:+$san,}$entry"
done
IFS=$saved_ifs

mkdir -p "$DIR"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

if [ ! -f "$DIR/ca.key" ]; then
    new_key "$DIR/ca.key"
    openssl req -x509 -new -key "$DIR/ca.key" -out "$DIR/ca.crt" -days 3650 -subj "/CN=Shopfloor MQTT CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
fi

# sign FILE-STEM COMMON-NAME EXTENSIONS
sign() {
    new_key "$work/$1.key"
    openssl req -new -key "$work/$1.key" -out "$work/$1.csr" -subj "/CN=$2"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "$3" \
        >"$work/$1.ext"
    openssl x509 -req -in "$work/$1.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
        -CAserial "$work/ca.srl" -out "$work/$1.crt" -days "$DAYS" -extfile "$work/$1.ext" 2>/dev/null
    mv -f "$work/$1.key" "$DIR/$1.key"
    mv -f "$work/$1.crt" "$DIR/$1.crt"
}

sign server "${NAMES%%,*}" "extendedKeyUsage=serverAuth
subjectAltName=$san"
for client in "$@"; do
    sign "${client%%:*}" "${client#*:}" "extendedKeyUsage=clientAuth"
done
chmod 0644 "$DIR/ca.crt" "$DIR"/*.crt
