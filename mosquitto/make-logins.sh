#!/bin/sh
# Make the broker's logins and access rules (Mosquitto's dynamic security plugin file) from the environment.
#
#   MQTT_INGESTOR_PASSWORD  password of login `ingestor` (ingestor processes that log in with a password; each uses
#                           its own client id, which must start with `ingestor` or `shopfloor-ingestor`)
#   MQTT_INGESTOR_LOGINS    more ingestor logins for the client-certificate listener, comma-separated, each named
#                           `ingestor...` (e.g. ingestor-1,ingestor-2): there the client id IS the certificate's
#                           name, so every ingestor process needs a certificate (and a login) of its own
#   MQTT_GATEWAY_LOGINS     one login per gateway or MQTT device: login@site:password, comma-separated;
#                           login@site without a password is a login for the client-certificate listener only
#                           (certificate Common Name = login, made by make-certs.sh). Passwords may contain
#                           anything but a comma; logins may not start with `ingestor` or `shopfloor-`.
#                           login@site/m1+m2:password also names the machines whose commands the gateway executes
#                           (machine codes joined by +): it may take their commands and answer them, no others
#   MQTT_API_PASSWORD       password of login `shopfloor-api` (the API, when COMMANDS_ENABLED): the only login that
#                           may publish commands to machines; unset, nobody can
#   MQTT_INGESTOR_GROUPS    the ingestors' shared subscription groups, comma-separated (default `ingestors`, the
#                           default INGEST_SHARED_GROUP); `ingestor` may subscribe to `$share/<group>/...` of these only
#   MQTT_SPARKPLUG_HOST_IDS the Sparkplug host ids the ingestors use (SPARKPLUG_HOST_ID), comma-separated codes
#                           (default `shopfloor`): `ingestor` may publish `spBv1.0/STATE/<id>` of these only
#
# Usage: make-logins.sh [FILE]   (default /mosquitto/config/dynamic-security.json)
#
# What the file grants (checked with the real broker in tests/integration/test_mosquitto_config.py):
#   * a gateway/device login may publish only its site's contract topics (telemetry and status of its
#     machines, status of the site's gateways) and subscribes to nothing of the v1 contract (Sparkplug: below);
#   * its client id is bound to the login: the broker refuses any other id, so no device can take over the
#     ingestor's session (and its queue) or another gateway's;
#   * `ingestor` may subscribe to `$share/<group>/shopfloor/v1/...` (its groups) and to `shopfloor/v1/...` and
#     receive them (command results included), and publish nothing of the v1 contract.
#   * commands: only `shopfloor-api` (bound to client id `shopfloor-api`) may publish `shopfloor/v1/+/+/command`; a
#     gateway login may subscribe to (and receive) the command topics of the machines listed in its entry only, and
#     publish their `…/command/result`; a machine is named by one gateway at most; a device login without machines
#     can neither read nor send a command. A SUBSCRIBE outside a login's rules is refused (SUBACK 135), so a device
#     cannot join the ingestors' group or read other sites.
#   * Sparkplug B (group id = site code, edge node id = the login): a gateway/device login may publish its own edge
#     node's births, data and deaths, `spBv1.0/<site>/{NBIRTH,NDATA,NDEATH}/<login>` and
#     `spBv1.0/<site>/{DBIRTH,DDATA,DDEATH}/<login>/<device>`, and subscribe to its own commands
#     (`spBv1.0/<site>/{NCMD,DCMD}/<login>/#`) and to the hosts' `spBv1.0/STATE/+`; it can send no command.
#     `ingestor` may subscribe to `spBv1.0/#` (never shared: a host sees all of a node's messages in order), publish
#     Rebirth requests on `spBv1.0/+/NCMD/+` and its own `spBv1.0/STATE/<id>` (MQTT_SPARKPLUG_HOST_IDS).
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
MAX_LENGTH=1024
PROGRAM=make-logins.sh
OUT=${1:-/mosquitto/config/dynamic-security.json}
# Not GROUPS: bash keeps that name for the caller's group ids and ignores assignments to it.
INGESTOR_GROUPS=${MQTT_INGESTOR_GROUPS:-ingestors}
INGESTOR_LOGINS=${MQTT_INGESTOR_LOGINS:-}
SPARKPLUG_HOST_IDS=${MQTT_SPARKPLUG_HOST_IDS:-shopfloor}

refuse() {
    printf '%s: %s\n' "$PROGRAM" "$1" >&2
    exit 2
}

# The contract's code rule, [a-z0-9][a-z0-9_-]{0,63}: logins become client ids, sites topic levels.
check_code() {
    # $1: where (variable, entry), $2: what, $3: value
    case $3 in
        '' | [!a-z0-9]* | *[!a-z0-9_-]*) refuse "$1: \"$3\" is not a $2 code ([a-z0-9][a-z0-9_-]{0,63})" ;;
    esac
    if [ "${#3}" -gt 64 ]; then
        refuse "$1: $2 code \"$3\" is longer than 64 characters"
    fi
}

check_password() {
    # $1: where, $2: who, $3: password (never printed)
    if [ "${#3}" -lt "$MIN_LENGTH" ]; then
        refuse "$1: password for $2 is shorter than $MIN_LENGTH characters"
    fi
    if [ "${#3}" -gt "$MAX_LENGTH" ]; then
        refuse "$1: password for $2 is longer than $MAX_LENGTH characters"
    fi
}

check_list() {
    # $1: variable name, $2: value
    case $2 in
        ,* | *, | *,,*) refuse "$1 has an empty entry" ;;
    esac
}

[ -n "${MQTT_INGESTOR_PASSWORD:-}" ] || refuse "MQTT_INGESTOR_PASSWORD is not set"
[ -n "${MQTT_GATEWAY_LOGINS:-}" ] || refuse "MQTT_GATEWAY_LOGINS is not set (expected login@site:password,...)"
API_PASSWORD=${MQTT_API_PASSWORD:-}
if ! command -v mosquitto_passwd >/dev/null 2>&1; then
    printf '%s: mosquitto_passwd not found (apt-get install mosquitto)\n' "$PROGRAM" >&2
    exit 1
fi
check_password MQTT_INGESTOR_PASSWORD "login ingestor" "$MQTT_INGESTOR_PASSWORD"
if [ -n "$API_PASSWORD" ]; then
    check_password MQTT_API_PASSWORD "login shopfloor-api" "$API_PASSWORD"
fi
check_list MQTT_GATEWAY_LOGINS "$MQTT_GATEWAY_LOGINS"
check_list MQTT_INGESTOR_GROUPS "$INGESTOR_GROUPS"
check_list MQTT_INGESTOR_LOGINS "$INGESTOR_LOGINS"
check_list MQTT_SPARKPLUG_HOST_IDS "$SPARKPLUG_HOST_IDS"

# Pass 1: check every entry. Field splitting on commas only, no globbing of passwords. The first colon ends
# login@site (codes have no colon). A refusal names the entry by its number, never by its text: a password
# holding a comma would otherwise end up in the log.
seen=' ingestor '
commanded=' '
sites=''
saved_ifs=$IFS
IFS=,
set -f
for group in $INGESTOR_GROUPS; do
    check_code MQTT_INGESTOR_GROUPS group "$group"
done
for host in $SPARKPLUG_HOST_IDS; do
    check_code MQTT_SPARKPLUG_HOST_IDS "host id" "$host"
done
for login in $INGESTOR_LOGINS; do
    check_code MQTT_INGESTOR_LOGINS login "$login"
    case $login in
        ingestor*) ;;
        *) refuse "MQTT_INGESTOR_LOGINS: \"$login\" must start with \"ingestor\"" ;;
    esac
    case $seen in
        *" $login "*) refuse "MQTT_INGESTOR_LOGINS: login \"$login\" is listed twice" ;;
    esac
    seen="$seen$login "
done
number=0
for entry in $MQTT_GATEWAY_LOGINS; do
    number=$((number + 1))
    where="MQTT_GATEWAY_LOGINS entry $number"
    who=${entry%%:*}
    case $who in
        *@*) ;;
        *) refuse "$where: no @site before the first colon (expected login@site:password; a comma ends an entry)" ;;
    esac
    login=${who%%@*}
    place=${who#*@}
    site=${place%%/*}
    check_code "$where" login "$login"
    check_code "$where" site "$site"
    case $place in
        */*)
            machines=${place#*/}
            [ -n "$machines" ] || refuse "$where: no machine after the / (expected login@site/machine+machine)"
            IFS=+
            for machine in $machines; do
                check_code "$where" machine "$machine"
                # Two gateways taking one machine's commands would both write it.
                case $commanded in
                    *" $site/$machine "*) refuse "$where: machine \"$machine\" of site $site is named by another gateway" ;;
                esac
                commanded="$commanded$site/$machine "
            done
            IFS=, ;;
    esac
    case $login in
        ingestor* | shopfloor-*)
            refuse "$where: logins starting with \"ingestor\" or \"shopfloor-\" are reserved for ingestors" ;;
    esac
    case $seen in
        *" $login "*) refuse "$where: login \"$login\" is listed twice (one login per gateway)" ;;
    esac
    seen="$seen$login "
    case ",$sites," in
        *",$site,"*) ;;
        *) sites="${sites:+$sites,}$site" ;;
    esac
    case $entry in
        *:*) check_password "$where" "login \"$login\"" "${entry#*:}" ;;
    esac
done

umask 077
work=$(mktemp -d)
tmp=$(mktemp "$OUT.new.XXXXXX")
trap 'rm -rf "$work" "$tmp"' EXIT

# credentials LOGIN PASSWORD: the JSON members of a password, from mosquitto_passwd's $7$iterations$salt$hash.
# Called as `x=$(credentials ...) || exit 1`: a failure inside a command substitution that is an argument of another
# command (printf) would not stop the script under `set -e`.
credentials() {
    mosquitto_passwd -c -b "$work/passwd" "$1" "$2" >&2 || return 1
    line=$(cat "$work/passwd")
    hash=${line#*:}
    rest=${hash#\$7\$}
    if [ "$rest" = "$hash" ]; then
        printf '%s: unexpected mosquitto_passwd output format\n' "$PROGRAM" >&2
        return 1
    fi
    iterations=${rest%%\$*}
    rest=${rest#*\$}
    salt=${rest%%\$*}
    digest=${rest#*\$}
    case $iterations$salt$digest in
        '' | *[!A-Za-z0-9+/=]*)
            printf '%s: unexpected characters in mosquitto_passwd output\n' "$PROGRAM" >&2
            return 1 ;;
    esac
    printf '"salt": "%s", "password": "%s", "iterations": %s' "$salt" "$digest" "$iterations"
}

acl() {
    # $1: type, $2: topic
    printf '{"acltype": "%s", "topic": "%s", "allow": true}' "$1" "$2"
}

# Pass 2: every client entry first (any failure stops here), then the file. Logins, sites and hashes are codes and
# base64, so nothing needs JSON escaping.
secret=$(credentials ingestor "$MQTT_INGESTOR_PASSWORD") || exit 1
clients=$(printf '  {"username": "ingestor", "textName": "Shopfloor ingestor", %s,\n   "roles": [{"rolename": "ingestor"}]}' "$secret")
for login in $INGESTOR_LOGINS; do
    clients="$clients$(printf ',\n  {"username": "%s", "clientid": "%s", "textName": "Shopfloor ingestor (certificate)", "roles": [{"rolename": "ingestor"}]}' "$login" "$login")"
done
if [ -n "$API_PASSWORD" ]; then
    secret=$(credentials shopfloor-api "$API_PASSWORD") || exit 1
    clients="$clients$(printf ',\n  {"username": "shopfloor-api", "clientid": "shopfloor-api", "textName": "Shopfloor API (commands)", %s,\n   "roles": [{"rolename": "api"}]}' "$secret")"
fi
for entry in $MQTT_GATEWAY_LOGINS; do
    who=${entry%%:*}
    login=${who%%@*}
    place=${who#*@}
    site=${place%%/*}
    secret=''
    case $entry in
        *:*) secret=$(credentials "$login" "${entry#*:}") || exit 1
             secret=", $secret" ;;
    esac
    clients="$clients$(printf ',\n  {"username": "%s", "clientid": "%s", "textName": "gateway or device of site %s"%s,\n   "roles": [{"rolename": "site-%s"}, {"rolename": "edge-%s"}]}' \
        "$login" "$login" "$site" "$secret" "$site" "$login")"
done
roles=$(printf '  {"rolename": "ingestor", "acls": [%s, %s, %s, %s, %s' \
    "$(acl subscribePattern 'shopfloor/v1/#')" "$(acl publishClientReceive 'shopfloor/v1/#')" \
    "$(acl subscribePattern 'spBv1.0/#')" "$(acl publishClientReceive 'spBv1.0/#')" \
    "$(acl publishClientSend 'spBv1.0/+/NCMD/+')")
for host in $SPARKPLUG_HOST_IDS; do
    roles="$roles, $(acl publishClientSend "spBv1.0/STATE/$host")"
done
# A `+` in place of the group is not matched by the plugin's subscribe check, so each group is listed.
for group in $INGESTOR_GROUPS; do
    roles="$roles, $(acl subscribePattern "\$share/$group/shopfloor/v1/#")"
done
roles="$roles]}"
# Bound to its client id like a gateway, so the API's password cannot take over another client's session; the API
# processes take turns on it (a connection taken over by another process is retried). It can publish commands only.
roles="$roles$(printf ',\n  {"rolename": "api", "acls": [%s]}' "$(acl publishClientSend 'shopfloor/v1/+/+/command')")"
for site in $sites; do
    roles="$roles$(printf ',\n  {"rolename": "site-%s", "acls": [%s, %s, %s' "$site" \
        "$(acl publishClientSend "shopfloor/v1/$site/+/telemetry")" \
        "$(acl publishClientSend "shopfloor/v1/$site/+/status")" \
        "$(acl publishClientSend "shopfloor/v1/$site/_gateway/+/status")")"
    roles="$roles, $(acl subscribePattern 'spBv1.0/STATE/+'), $(acl publishClientReceive 'spBv1.0/STATE/+')]}"
done
# Sparkplug B, one role per login (Mosquitto 2.0's plugin has no %u in its rules): the login's own edge node only.
for entry in $MQTT_GATEWAY_LOGINS; do
    who=${entry%%:*}
    login=${who%%@*}
    place=${who#*@}
    site=${place%%/*}
    acls=''
    case $place in
        */*)
            IFS=+
            for machine in ${place#*/}; do
                acls="$acls, $(acl subscribePattern "shopfloor/v1/$site/$machine/command")"
                acls="$acls, $(acl publishClientReceive "shopfloor/v1/$site/$machine/command")"
                acls="$acls, $(acl publishClientSend "shopfloor/v1/$site/$machine/command/result")"
            done
            IFS=, ;;
    esac
    for verb in NBIRTH NDATA NDEATH; do
        acls="$acls, $(acl publishClientSend "spBv1.0/$site/$verb/$login")"
    done
    for verb in DBIRTH DDATA DDEATH; do
        acls="$acls, $(acl publishClientSend "spBv1.0/$site/$verb/$login/+")"
    done
    for verb in NCMD DCMD; do
        acls="$acls, $(acl subscribePattern "spBv1.0/$site/$verb/$login/#")"
        acls="$acls, $(acl publishClientReceive "spBv1.0/$site/$verb/$login/#")"
    done
    roles="$roles$(printf ',\n  {"rolename": "edge-%s", "acls": [%s]}' "$login" "${acls#, }")"
done
set +f
IFS=$saved_ifs

{
    printf '{\n"defaultACLAccess": {"publishClientSend": false, "publishClientReceive": false, '
    printf '"subscribe": false, "unsubscribe": true},\n"clients": [\n%s\n],\n"groups": [],\n"roles": [\n%s\n]\n}\n' \
        "$clients" "$roles"
} >"$tmp"

chmod 0600 "$tmp"
# Mosquitto started as root drops to user `mosquitto` before it reads the file. Only root can give a file
# away, so a non-root run (tests, CI) leaves it as it is.
if [ "$(id -u)" -eq 0 ] && id -u mosquitto >/dev/null 2>&1; then
    chown mosquitto: "$tmp"
fi
mv -f "$tmp" "$OUT"
trap 'rm -rf "$work"' EXIT
