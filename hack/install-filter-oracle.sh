#!/usr/bin/env bash
# Installs the reference filter engine for tests/filter_differential.rs: event-ruler's jars
# (fetched by Maven, per hack/filter-oracle/pom.xml) and FilterOracle.java compiled against
# them, under $ESM_CACHE_DIR/filter-oracle. Idempotent: a stamp of the inputs skips the work
# when nothing changed. Prints the directory (the test's ESM_FILTER_ORACLE) on its last line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source hack/lib/env.sh

for tool in java javac mvn; do
  command -v "$tool" >/dev/null || { echo "install-filter-oracle.sh: '$tool' is missing (Java 17 JDK and Maven)" >&2; exit 1; }
done

src=hack/filter-oracle
dest=$ESM_CACHE_DIR/filter-oracle
stamp=$(cat "$src/pom.xml" "$src/FilterOracle.java" "$0" | sha256sum | cut -d' ' -f1)
if [[ -f $dest/stamp && $(cat "$dest/stamp") == "$stamp" ]]; then
  echo "$dest"
  exit 0
fi

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/classes"
mvn -q -B -f "$src/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$dest.tmp/lib" >&2
javac -encoding UTF-8 -d "$dest.tmp/classes" -cp "$dest.tmp/lib/*" "$src/FilterOracle.java"
echo "$stamp" >"$dest.tmp/stamp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$dest"
