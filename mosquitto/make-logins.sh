#!/bin/sh
# Make the broker's logins and access rules (Mosquitto's dynamic security plugin file) from the environment.
#
#   MQTT_INGESTOR_PASSWORD  password of login `ingestor` (every ingestor process; each uses its own client id)
#   MQTT_GATEWAY_LOGINS     one login per gateway or MQTT device: login@site:password, comma-separated;
#                           login@site without a password is a login for the client-certificate listener only
#                           (certificate Common Name = login, made by make-certs.sh)
#   MQTT_INGESTOR_GROUPS    the ingestors' shared subscription groups, comma-separated (default `ingestors`, the
#                           default INGEST_SHARED_GROUP); `ingestor` may subscribe to `$share/<group>/...` of these only
#
# Usage: make-logins.sh [FILE]   (default /mosquitto/config/dynamic-security.json)
#
# What the file grants (checked with the real broker in tests/integration/test_mosquitto_config.py):
#   * a gateway/device login may publish only its site's contract topics (telemetry and status of its
#     machines, status of the site's gateways), may subscribe to nothing and receives nothing;
#   * its client id is bound to the login: the broker refuses any other id, so no device can take over the
#     ingestor's session (and its queue) or another gateway's;
#   * `ingestor` may subscribe to `$share/<group>/shopfloor/v1/...` (its groups) and to `shopfloor/v1/...` and
#     receive them, and publish nothing. A SUBSCRIBE outside a login's rules is refused (SUBACK 135), so a device
#     cannot join the ingestors' group or read other sites.
#
# Refuses with exit status 2 and a one-line message naming the variable when a variable is missing, a
# password is shorter than 12 characters, a login or site is not a contract code, or a login is listed twice.
# Every entry is checked before anything is written, and the new file replaces the old one in one rename.
# Mosquitto reads this file at start only (SIGHUP does not reload plugins): restart the broker after a change;
# persistent sessions and queued messages survive the restart (persistence true), gateways buffer on disk.
#
# Passwords are hashed by mosquitto_passwd (PBKDF2-SHA512 with a random salt, Mosquitto's own format); it takes
# the password as an argument, visible in the process list for the milliseconds it runs: run this where only
# the operator can list processes (container start-up).

set -eu
LC_ALL=C
export LC_ALL

MIN_LENGTH=12
PROGRAM=make-logins.sh
OUT=${1:-/mosquitto/config/dynamic-security.json}
GROUPS=${MQTT_INGESTOR_GROUPS:-ingestors}

refuse() {
    printf '%s: %s\n' "$PROGRAM" "$1" >&2
    exit 2
}

# The contract's code rule, [a-z0-9][a-z0-9_-]{0,63}: logins become client ids, sites topic levels.
check_code() {
    # $1: variable name, $2: what, $3: value
    case $3 in
        '' | [!a-z0-9]* | *[!a-z0-9_-]*) refuse "$1: \"$3\" is not a $2 code ([a-z0-9][a-z0-9_-]{0,63})" ;;
    esac
    if [ "${#3}" -gt 64 ]; then
        refuse "$1: $2 code \"$3\" is longer than 64 characters"
    fi
}

check_password() {
    # $1: variable name, $2: who, $3: password
    if [ "${#3}" -lt "$MIN_LENGTH" ]; then
        refuse "$1: password for $2 is shorter than $MIN_LENGTH characters"
    fi
}

[ -n "${MQTT_INGESTOR_PASSWORD:-}" ] || refuse "MQTT_INGESTOR_PASSWORD is not set"
[ -n "${MQTT_GATEWAY_LOGINS:-}" ] || refuse "MQTT_GATEWAY_LOGINS is not set (expected login@site:password,...)"
if ! command -v mosquitto_passwd >/dev/null 2>&1; then
    printf '%s: mosquitto_passwd not found (apt-get install mosquitto)\n' "$PROGRAM" >&2
    exit 1
fi
check_password MQTT_INGESTOR_PASSWORD "login ingestor" "$MQTT_INGESTOR_PASSWORD"

case $MQTT_GATEWAY_LOGINS in
    ,* | *, | *,,*) refuse "MQTT_GATEWAY_LOGINS has an empty entry (expected login@site:password,...)" ;;
esac
case $GROUPS in
    ,* | *, | *,,*) refuse "MQTT_INGESTOR_GROUPS has an empty entry (expected group1,group2)" ;;
esac

# Pass 1: check every entry. Field splitting on commas only, no globbing of passwords. The first colon ends
# login@site (codes have no colon), so a password may contain anything but a comma.
seen=' '
sites=''
saved_ifs=$IFS
IFS=,
set -f
for group in $GROUPS; do
    check_code MQTT_INGESTOR_GROUPS group "$group"
done
for entry in $MQTT_GATEWAY_LOGINS; do
    who=${entry%%:*}
    case $who in
        *@*) ;;
        *) refuse "MQTT_GATEWAY_LOGINS: \"$who\" has no @site (expected login@site:password)" ;;
    esac
    login=${who%%@*}
    site=${who#*@}
    check_code MQTT_GATEWAY_LOGINS login "$login"
    check_code MQTT_GATEWAY_LOGINS site "$site"
    if [ "$login" = ingestor ]; then
        refuse "MQTT_GATEWAY_LOGINS: \"ingestor\" is reserved for the ingestor's login"
    fi
    case $seen in
        *" $login "*) refuse "MQTT_GATEWAY_LOGINS: login \"$login\" is listed twice (one login per gateway)" ;;
    esac
    seen="$seen$login "
    case ",$sites," in
        *",$site,"*) ;;
        *) sites="${sites:+$sites,}$site" ;;
    esac
    case $entry in
        *:*) check_password MQTT_GATEWAY_LOGINS "login \"$login\"" "${entry#*:}" ;;
    esac
done

umask 077
work=$(mktemp -d)
tmp="$OUT.new.$$"
trap 'rm -rf "$work" "$tmp"' EXIT

# credentials LOGIN PASSWORD: the JSON members of a password, from mosquitto_passwd's $7$iterations$salt$hash.
credentials() {
    mosquitto_passwd -c -b "$work/passwd" "$1" "$2"
    line=$(cat "$work/passwd")
    hash=${line#*:}
    rest=${hash#\$7\$}
    [ "$rest" != "$hash" ] || { printf '%s: unexpected mosquitto_passwd output format\n' "$PROGRAM" >&2; exit 1; }
    iterations=${rest%%\$*}
    rest=${rest#*\$}
    printf '"salt": "%s", "password": "%s", "iterations": %s' "${rest%%\$*}" "${rest#*\$}" "$iterations"
}

acl() {
    # $1: type, $2: topic
    printf '{"acltype": "%s", "topic": "%s", "allow": true}' "$1" "$2"
}

# Pass 2: write the file. Logins, sites and hashes are codes and base64, so nothing needs JSON escaping.
{
    printf '{\n"defaultACLAccess": {"publishClientSend": false, "publishClientReceive": false, '
    printf '"subscribe": false, "unsubscribe": true},\n"clients": [\n'
    printf '  {"username": "ingestor", "textName": "Shopfloor ingestor", %s,\n' \
        "$(credentials ingestor "$MQTT_INGESTOR_PASSWORD")"
    printf '   "roles": [{"rolename": "ingestor"}]}'
    for entry in $MQTT_GATEWAY_LOGINS; do
        who=${entry%%:*}
        login=${who%%@*}
        site=${who#*@}
        printf ',\n  {"username": "%s", "clientid": "%s", "textName": "gateway or device of site %s"' \
            "$login" "$login" "$site"
        case $entry in
            *:*) printf ', %s' "$(credentials "$login" "${entry#*:}")" ;;
        esac
        printf ',\n   "roles": [{"rolename": "site-%s"}]}' "$site"
    done
    printf '\n],\n"groups": [],\n"roles": [\n'
    printf '  {"rolename": "ingestor", "acls": [%s, %s' \
        "$(acl subscribePattern 'shopfloor/v1/#')" \
        "$(acl publishClientReceive 'shopfloor/v1/#')"
    # A `+` in place of the group is not matched by the plugin's subscribe check, so each group is listed.
    for group in $GROUPS; do
        printf ', %s' "$(acl subscribePattern "\$share/$group/shopfloor/v1/#")"
    done
    printf ']}'
    for site in $sites; do
        printf ',\n  {"rolename": "site-%s", "acls": [%s, %s, %s]}' "$site" \
            "$(acl publishClientSend "shopfloor/v1/$site/+/telemetry")" \
            "$(acl publishClientSend "shopfloor/v1/$site/+/status")" \
            "$(acl publishClientSend "shopfloor/v1/$site/_gateway/+/status")"
    done
    printf '\n]\n}\n'
} >"$tmp"
set +f
IFS=$saved_ifs

chmod 0600 "$tmp"
# Mosquitto started as root drops to user `mosquitto` before it reads the file. Only root can give a file
# away, so a non-root run (tests, CI) leaves it as it is.
if [ "$(id -u)" -eq 0 ] && id -u mosquitto >/dev/null 2>&1; then
    chown mosquitto: "$tmp"
fi
mv -f "$tmp" "$OUT"
trap 'rm -rf "$work"' EXIT
