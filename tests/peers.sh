#!/usr/bin/env bash
# Installs the real peers the suite talks to when this machine lacks them (Debian packages):
# OpenSSH's sshd for the SFTP tests. PostgreSQL is provided by the machine; tests that need a peer that is
# missing are skipped with a visible reason, except in CI (CI=true), where a missing peer is an error.
set -u
need=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need+=(openssh-server)
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
exit 0
