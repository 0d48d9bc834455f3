#!/usr/bin/env bash
# Installs the real peers the suite talks to when this machine lacks them (Debian packages):
# OpenSSH's sshd for the SFTP tests, Chromium for the dashboard, promtool for the alert rules, alertmanager and amtool
# for monitoring/alertmanager.yml. PostgreSQL is provided by the machine; tests that need a peer that is
# missing are skipped with a visible reason, except in CI (CI=true), where a missing peer is an error.
set -u
need=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need+=(openssh-server)
command -v /usr/bin/chromium >/dev/null 2>&1 || need+=(chromium)       # the dashboard's browser test
command -v promtool >/dev/null 2>&1 || need+=(prometheus)              # promtool checks monitoring/alerts.yml
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)   # amtool + alertmanager: monitoring/alertmanager.yml
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "peers: installing ${need[*]}"
    # Wait for another apt/dpkg to finish instead of failing on its lock.
    lock=(-o DPkg::Lock::Timeout=300)
    if ! out=$( (apt-get "${lock[@]}" update -qq && DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq "${need[@]}") 2>&1 ); then
      echo "peers: could not install ${need[*]}; the tests that need them will be skipped (fail in CI):"
      echo "$out" | tail -5
    fi
  else
    echo "peers: ${need[*]} missing and cannot be installed here; the tests that need them will be skipped"
  fi
fi
# The real FHIR server of tests/channels/test_fhir_server.py: Medplum's FHIR router from the npm registry.
if command -v npm >/dev/null 2>&1; then
  dir=var/test-peers/medplum
  if [ ! -d "$dir/node_modules/@medplum/fhir-router" ] || ! cmp -s tests/channels/fhir_server/package.json "$dir/package.json"; then
    mkdir -p "$dir" && cp tests/channels/fhir_server/package.json tests/channels/fhir_server/server.mjs "$dir/"
    echo "peers: installing the test FHIR server (@medplum/fhir-router)"
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null 2>&1) || echo "peers: npm install failed; the real FHIR server tests will be skipped (fail in CI)"
  fi
fi
exit 0
