#!/bin/sh
# Make the broker's password file from the environment.
#
#   MQTT_INGESTOR_PASSWORD   password of user `ingestor`
#   MQTT_SITE_PASSWORDS      site1:pass1,site2:pass2 (one user per site code; see the naming rule in `acl`)
#
# Usage: make-passwd.sh [PASSWORD_FILE]   (default /mosquitto/config/passwd)
#
# Refuses with exit status 2 and a one-line message naming the variable when a variable is missing, a
# password is shorter than 12 characters or a site code is not a valid contract code. Every entry is checked
# before anything is written, and the new file replaces the old one in one rename, so a broker reloading
# (SIGHUP) never reads a half-written file. Passwords may contain anything but a comma; a site code cannot
# contain a colon, so the first colon of an entry ends the site code.
#
# mosquitto_passwd -b takes the password as an argument: it is visible in the process list for the few
# milliseconds the command runs. Run this where only the operator can list processes (container start-up).

set -eu
LC_ALL=C
export LC_ALL

MIN_LENGTH=12
PROGRAM=make-passwd.sh
OUT=${1:-/mosquitto/config/passwd}

refuse() {
    printf '%s: %s\n' "$PROGRAM" "$1" >&2
    exit 2
}

check_password() {
    # $1: variable name, $2: who, $3: password
    if [ "${#3}" -lt "$MIN_LENGTH" ]; then
        refuse "$1: password for $2 is shorter than $MIN_LENGTH characters"
    fi
}

if [ -z "${MQTT_INGESTOR_PASSWORD:-}" ]; then
    refuse "MQTT_INGESTOR_PASSWORD is not set"
fi
if [ -z "${MQTT_SITE_PASSWORDS:-}" ]; then
    refuse "MQTT_SITE_PASSWORDS is not set (expected site1:pass1,site2:pass2)"
fi
if ! command -v mosquitto_passwd >/dev/null 2>&1; then
    printf '%s: mosquitto_passwd not found (apt-get install mosquitto)\n' "$PROGRAM" >&2
    exit 1
fi

check_password MQTT_INGESTOR_PASSWORD "user ingestor" "$MQTT_INGESTOR_PASSWORD"

case $MQTT_SITE_PASSWORDS in
    ,* | *, | *,,*) refuse "MQTT_SITE_PASSWORDS has an empty entry (expected site1:pass1,site2:pass2)" ;;
esac

# Pass 1: check every entry. Field splitting on commas only, no globbing of passwords.
seen=' '
saved_ifs=$IFS
IFS=,
set -f
for entry in $MQTT_SITE_PASSWORDS; do
    case $entry in
        *:*) ;;
        *) refuse "MQTT_SITE_PASSWORDS: entry without a colon (expected site:password)" ;;
    esac
    site=${entry%%:*}
    password=${entry#*:}
    # The contract's code rule, [a-z0-9][a-z0-9_-]{0,63}: the username ends up as a topic level (%u).
    case $site in
        '' | [!a-z0-9]* | *[!a-z0-9_-]*)
            refuse "MQTT_SITE_PASSWORDS: \"$site\" is not a site code ([a-z0-9][a-z0-9_-]{0,63})" ;;
    esac
    if [ "${#site}" -gt 64 ]; then
        refuse "MQTT_SITE_PASSWORDS: site code \"$site\" is longer than 64 characters"
    fi
    if [ "$site" = ingestor ]; then
        refuse "MQTT_SITE_PASSWORDS: \"ingestor\" is reserved for the ingestor user, not a site code"
    fi
    case $seen in
        *" $site "*) refuse "MQTT_SITE_PASSWORDS: site \"$site\" is listed twice" ;;
    esac
    seen="$seen$site "
    check_password MQTT_SITE_PASSWORDS "site \"$site\"" "$password"
done

# Pass 2: write a new file next to the target, then rename it over the target.
umask 077
tmp="$OUT.new.$$"
trap 'rm -f "$tmp"' EXIT
rm -f "$tmp"
mosquitto_passwd -c -b "$tmp" ingestor "$MQTT_INGESTOR_PASSWORD"
for entry in $MQTT_SITE_PASSWORDS; do
    mosquitto_passwd -b "$tmp" "${entry%%:*}" "${entry#*:}"
done
set +f
IFS=$saved_ifs

chmod 0600 "$tmp"
# Mosquitto started as root drops to user `mosquitto` before it reads the file ("Unable to open pwfile"
# otherwise). Only root can give a file away, so a non-root run (tests, CI) leaves it as it is.
if [ "$(id -u)" -eq 0 ] && id -u mosquitto >/dev/null 2>&1; then
    chown mosquitto: "$tmp"
fi
mv -f "$tmp" "$OUT"
trap - EXIT
