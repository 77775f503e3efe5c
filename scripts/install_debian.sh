#!/bin/sh
# Installs the Debian packages the tests need beyond Python, where they are missing. Each argument is
# PROGRAM=PACKAGE[,PACKAGE...]: the packages are installed when PROGRAM is not found. `make test` asks for
# Chromium (Playwright's own browser download cannot be fetched here: it drives /usr/bin/chromium), nginx (the
# proxy Elastic Beanstalk puts in front of the container; the tests run it themselves, not its service), a
# Java runtime for pyspark (Spark 4 runs on Java 17 or 21), PostgreSQL and Prometheus (the tests start their own
# servers, not the packages' services) and the two compose tools that read compose.yaml.
set -eu
missing=""
for wanted in "$@"; do
    program=${wanted%%=*}
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$program" >/dev/null 2>&1; then
        missing="$missing $(echo "${wanted#*=}" | tr ',' ' ')"
    fi
done
[ -n "$missing" ] || exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# shellcheck disable=SC2086 # one word per package
$SUDO apt-get install -y --no-install-recommends $missing
