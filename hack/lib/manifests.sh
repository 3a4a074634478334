# hack/manifests/ for the scripts on the real node (sourced, not run).

# manifest FILE NAME=VALUE...: hack/manifests/FILE with its ${NAME} placeholders replaced.
manifest() {
  local text pair
  text=$(<"hack/manifests/$1")
  shift
  for pair in "$@"; do text=${text//"\${${pair%%=*}}"/${pair#*=}}; done
  printf '%s\n' "$text"
}

# host_service NAMESPACE NAME URL: a DNS name NAME in NAMESPACE for the host process behind URL
# (http://NODE_IP:PORT); prints the in-cluster URL.
host_service() {
  local port=${3##*:}
  manifest host-service.yaml "NAME=$2" "PORT=$port" "NODE_IP=$NODE_IP" | kubectl -n "$1" apply -f - >/dev/null
  echo "http://$2.$1.svc.$CLUSTER_DOMAIN:$port"
}
