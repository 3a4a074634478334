# OCI images without a registry or an image builder (sourced, not run), used by
# hack/build-images.sh and hack/start-cluster.sh (the pause image): a root file system
# directory becomes one uncompressed tar layer + image config + manifest + index (an OCI image
# layout), tarred and imported with `ctr images import`. The index's
# io.containerd.image.name annotation names the image, so the CRI sees it under that name.

# oci_sha256 FILE: hex digest.
oci_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# oci_blob LAYOUT FILE: moves FILE into LAYOUT/blobs/sha256/<digest>, prints the digest.
oci_blob() {
  local digest
  digest=$(oci_sha256 "$2")
  mv -f "$2" "$1/blobs/sha256/$digest"
  echo "$digest"
}

# oci_image OUT NAME ROOTFS CONFIG: writes the image archive OUT for image NAME (fully
# qualified, e.g. localhost/esm-operator/esm-operator:dev) from directory ROOTFS. CONFIG is
# the JSON of the image config's "config" object (Entrypoint, Cmd, User, ExposedPorts, ...).
# Reproducible: files owned by root, sorted, mtime 0, so the same binary gives the same digest.
oci_image() {
  local out=$1 name=$2 rootfs=$3 config=$4 layout layer_digest layer_size config_digest config_size
  local manifest_digest manifest_size
  layout=$(mktemp -d)
  mkdir -p "$layout/blobs/sha256"
  tar -C "$rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$layout/layer.tar" .
  layer_size=$(stat -c %s "$layout/layer.tar")
  layer_digest=$(oci_blob "$layout" "$layout/layer.tar")
  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"hack/lib/oci.sh"}]}' \
    "$config" "$layer_digest" >"$layout/config.json"
  config_size=$(stat -c %s "$layout/config.json")
  config_digest=$(oci_blob "$layout" "$layout/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$layout/manifest.json"
  manifest_size=$(stat -c %s "$layout/manifest.json")
  manifest_digest=$(oci_blob "$layout" "$layout/manifest.json")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "$manifest_size" "$name" "${name##*:}" >"$layout/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  tar -C "$layout" -cf "$out" oci-layout index.json blobs
  rm -rf "$layout"
}

# oci_import ADDRESS ARCHIVE: imports into containerd's k8s.io namespace (the CRI's).
oci_import() {
  ctr --address "$1" -n k8s.io images import "$2" >&2
}
