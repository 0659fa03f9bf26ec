# The real node beside the kwok nodes (sourced by scripts/cluster): containerd,
# runc, the kubelet, kube-proxy, CoreDNS and kube-router (NetworkPolicy), all
# inside a network and mount namespace of the plane's own.
#
# Addresses (S is derived from the state dir, so two planes differ):
#   host side of the veth  10.243.S.1/30  (NODE_HOST_IP; pods see the host as this)
#   node side (eth0)       10.243.S.2/30  (NODE_IP: the node's InternalIP)
#   pods, on bridge cni0   10.244.(128+S).0/24 (kwok's pods use 10.244.0.0/17)
# The host routes only the node's pod CIDR, toward the veth; the node netns has
# no default route, so nothing a pod sends can leave the machine. The node's
# components reach the API server at NODE_HOST_IP:API_PORT, which a DNAT rule
# on the host (chain SUP-NODE-<hash> in the nat table, only for packets coming
# in on the node's veth) sends to 127.0.0.1.
#
# The namespaces are anonymous (no /run/netns bind mount to leave behind): the
# holder process (`unshare`, then `sleep infinity`) keeps them while the node
# runs; `scripts/cluster node-exec CMD` runs CMD inside. Every node process
# lives in the cgroup /sup-node-<hash> (pods under /sup-node-<hash>/kubepods),
# so `down` ends them all, containers and shims included, and removes the
# cgroups; the veth dies with the netns and `down` removes the host's chain.

node_hash=$(echo -n "$state" | sha256sum | cut -c1-8)
node_s=$((16#${node_hash:0:4} % 120 + 1))
node_name=sup-node-$node_hash
node_veth=supn$node_hash
node_cgroup=sup-node-$node_hash
node_chain=SUP-NODE-${node_hash^^}
NODE_HOST_IP=10.243.$node_s.1
NODE_IP=10.243.$node_s.2
node_pod_cidr=10.244.$((128 + node_s)).0/24
cluster_dns_ip=10.96.0.10
node_dir=$state/node
# The taint and label that keep every pod off the real node unless its
# namespace opts in (see with_real_node_ns in tests/plane/support.rs).
real_node_label=singleuser-profiles.io/real-node
node_components=(node-ns containerd kubelet kube-proxy coredns kube-router)
# Images imported into the node's containerd at `up`: the cheap ones always,
# SUP_CLUSTER_IMAGES=ray,notebook adds the large ones.
node_images=(pause busybox)
IFS=, read -ra _extra <<<"${SUP_CLUSTER_IMAGES:-}"
node_images+=("${_extra[@]}")
unset _extra

node_exec() { nsenter --target "$(pid_of node-ns)" --net --mount -- "$@"; }

health_node_ns() { [[ -f $node_dir/ns-ready ]]; }
health_containerd() {
    "$(bindir)/ctr" --address "$node_dir/containerd.sock" --timeout 2s version >/dev/null 2>&1
}
health_kubelet() { curl -sf --max-time 2 "http://$NODE_IP:10248/healthz" >/dev/null; }
health_kube_proxy() { curl -sf --max-time 2 "http://$NODE_IP:10256/healthz" >/dev/null; }
health_coredns() { curl -sf --max-time 2 "http://$NODE_IP:8181/ready" >/dev/null; }
health_kube_router() { curl -sf --max-time 2 "http://$NODE_IP:20244/healthz" >/dev/null; }

# The host's tools the node's components call: iptables (kube-proxy, the CNI
# plugins, kube-router), ipset (kube-router), conntrack (kube-proxy).
ensure_node_tools() {
    local missing=() tool pkg
    for tool in iptables:iptables ipset:ipset conntrack:conntrack nsenter:util-linux; do
        command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
    done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]} from Debian (the real node needs them)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; }
}

node_cgroup_dirs() {
    local d
    for d in /sys/fs/cgroup/*/; do echo "$d$node_cgroup"; done
}

make_node_cgroups() {
    local d
    for d in $(node_cgroup_dirs); do
        mkdir -p "$d/system"
        # A new cpuset cgroup starts with no CPUs: give it its parent's.
        if [[ -f $d/cpuset.cpus ]]; then
            cat "${d%/*}/cpuset.cpus" >"$d/cpuset.cpus"
            cat "${d%/*}/cpuset.mems" >"$d/cpuset.mems"
            cat "$d/cpuset.cpus" >"$d/system/cpuset.cpus"
            cat "$d/cpuset.mems" >"$d/system/cpuset.mems"
        fi
    done
}

# node_cgroup_pids -> every process in the node's cgroups (pids hierarchy).
node_cgroup_pids() {
    local root=/sys/fs/cgroup/pids/$node_cgroup
    [[ -d $root ]] || return 0
    find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null
    return 0
}

remove_node_cgroups() {
    local d
    for d in $(node_cgroup_dirs); do
        [[ -d $d ]] || continue
        # Deepest first; a cgroup with processes left in it refuses, and says so.
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ ! -d $d ]] || log "warning: cgroup $d could not be removed"
    done
}

host_chain_rules() {
    iptables -w 5 -t nat -N "$node_chain" 2>/dev/null || iptables -w 5 -t nat -F "$node_chain"
    iptables -w 5 -t nat -A "$node_chain" -i "$node_veth" -d "$NODE_HOST_IP" -p tcp --dport "$API_PORT" \
        -j DNAT --to-destination "127.0.0.1:$API_PORT"
    iptables -w 5 -t nat -C PREROUTING -i "$node_veth" -j "$node_chain" 2>/dev/null ||
        iptables -w 5 -t nat -A PREROUTING -i "$node_veth" -j "$node_chain"
}

remove_host_chain() {
    command -v iptables >/dev/null || return 0
    while iptables -w 5 -t nat -D PREROUTING -i "$node_veth" -j "$node_chain" 2>/dev/null; do :; done
    if iptables -w 5 -t nat -S "$node_chain" >/dev/null 2>&1; then
        iptables -w 5 -t nat -F "$node_chain"
        iptables -w 5 -t nat -X "$node_chain"
    fi
}

# stop_node: end every process of the node (components in reverse start order,
# then whatever else is in its cgroups: shims, containers, the holder), remove
# the cgroups and the host's iptables chain. The netns, its veth and the mount
# namespace (tmpfs mounts, overlay snapshots, volumes) go with their last process.
stop_node() {
    local i left
    for ((i = ${#node_components[@]} - 1; i > 0; i--)); do stop "${node_components[i]}"; done
    for _ in $(seq 1 50); do
        left=$(node_cgroup_pids)
        [[ -z $left ]] && break
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
        sleep 0.1
    done
    [[ -z $(node_cgroup_pids) ]] || die "node processes still running after down: $(node_cgroup_pids | tr '\n' ' ')"
    remove_node_cgroups
    remove_host_chain
    ip link del "$node_veth" 2>/dev/null || true
    rm -f "$node_dir/ns-ready" "$pids"/{node-ns,containerd,kubelet,kube-proxy,coredns,kube-router}.pid
}

# The holder: a new network and mount namespace, set up once, then kept by
# `sleep infinity`. Inside: / made rshared anew (so kubelet's mounts reach
# containers; nothing propagates to the host), tmpfs on /run (containerd's
# state, shim sockets, pod netns files), /var/lib (the CNI cache) and /var/log
# (pod logs), and files of our own bind-mounted over the three global sysctls
# the kubelet sets (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops),
# so it changes nothing on the host.
start_node_ns() {
    make_node_cgroups
    mkdir -p "$node_dir/sysctl"
    local f setup="set -e
for d in /sys/fs/cgroup/*/$node_cgroup/system; do echo \$\$ >\"\$d/cgroup.procs\"; done
mount --make-rshared /
mount -t tmpfs -o mode=0755 sup-node-run /run
mount -t tmpfs -o mode=0755 sup-node-var-lib /var/lib
mount -t tmpfs -o mode=0755 sup-node-var-log /var/log"
    for f in vm/overcommit_memory kernel/panic kernel/panic_on_oops; do
        cat "/proc/sys/$f" >"$node_dir/sysctl/${f//\//.}"
        setup+="
mount --bind $node_dir/sysctl/${f//\//.} /proc/sys/$f"
    done
    setup+="
ip link set lo up
sysctl -qw net.ipv4.ip_forward=1
exec sleep infinity"
    start_raw node-ns unshare --net --mount --propagation private -- bash -c "$setup" "$node_dir"
    local deadline=$((SECONDS + 30)) pid
    until pid=$(pid_of node-ns) && [[ $(readlink "/proc/$pid/exe") == */sleep ]]; do
        pid_of node-ns >/dev/null || { print_logs 20 node-ns; die "the node's namespace holder exited"; }
        ((SECONDS < deadline)) || { print_logs 20 node-ns; die "the node's namespaces not set up in 30s"; }
        sleep 0.1
    done
    if ip -o addr show | grep -q " $NODE_HOST_IP/"; then
        die "$NODE_HOST_IP is already in use on this host (another plane with the same S=$node_s?)"
    fi
    ip link add "$node_veth" type veth peer name eth0 netns "$pid"
    ip addr add "$NODE_HOST_IP/30" dev "$node_veth"
    # route_localnet: the DNAT to 127.0.0.1 of what comes in on this veth.
    sysctl -qw "net.ipv4.conf.$node_veth.route_localnet=1"
    ip link set "$node_veth" up
    nsenter --target "$pid" --net -- ip addr add "$NODE_IP/30" dev eth0
    nsenter --target "$pid" --net -- ip link set eth0 up
    ip route add "$node_pod_cidr" via "$NODE_IP" dev "$node_veth"
    host_chain_rules
    touch "$node_dir/ns-ready"
}

# start_raw NAME COMMAND... : like `start`, for a command outside the bin dir.
start_raw() {
    local name=$1; shift
    echo "=== $(date -u +%FT%TZ) starting $name" >>"$logs/$name.log"
    setsid "$@" </dev/null >>"$logs/$name.log" 2>&1 8>&- &
    local pid=$!
    echo "$pid $(start_time "$pid")" >"$pids/$name.pid"
}

# node_start NAME ARGS... : start a component inside the node.
node_start() {
    local name=$1; shift
    start "$name" PATH="$(bindir):/usr/sbin:/usr/bin:/sbin:/bin" \
        "+$launch/in-node" "+$(pid_of node-ns)" "+$node_cgroup/system" -- "$@"
}

write_node_configs() {
    local bin
    bin=$(bindir)
    mkdir -p "$node_dir"/{cni,cni-ipam,containerd,kubelet} "$node_dir/kubelet-root"
    : >"$node_dir/resolv.conf"   # pods get cluster DNS only, no search domain of the host's
    cat >"$node_dir/containerd.toml" <<EOF
version = 3
root = "$node_dir/containerd"
# In the node's tmpfs /run: runtime state, shim sockets, pod netns files.
state = "/run/containerd"
[grpc]
  address = "$node_dir/containerd.sock"
[ttrpc]
  address = "$node_dir/containerd.sock.ttrpc"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "localhost/singleuser-profiles/pause:1.0"
[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # Root here lacks CAP_SYS_RESOURCE, so no process may lower its OOM score:
  # containers get at least containerd's (the kubelet asks -998 for sandboxes).
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "$bin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["$bin"]
    conf_dir = "$node_dir/cni"
    max_conf_num = 1
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
EOF
    cat >"$node_dir/cni/10-sup-pods.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "sup-pods",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$node_dir/cni-ipam",
        "ranges": [[{"subnet": "$node_pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    cat >"$node_dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroup v1; the kubelet still supports it when told so.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$node_cgroup
containerRuntimeEndpoint: unix://$node_dir/containerd.sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: $NODE_IP
healthzPort: 10248
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$cluster_dns_ip]
clusterDomain: cluster.local
resolvConf: $node_dir/resolv.conf
failSwapOn: false
# No registry can be reached: never delete an imported image.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
registerWithTaints:
- {key: $real_node_label, value: "true", effect: NoSchedule}
maxPods: 110
serializeImagePulls: false
# Requests still schedule (2 CPUs here), but a limit does not throttle: test-sized Ray pods
# (a quarter CPU each) would otherwise take minutes to start Ray on this 2-core host.
cpuCFSQuota: false
EOF
    cat >"$node_dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $auth/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $node_name
bindAddress: $NODE_IP
healthzBindAddress: $NODE_IP:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: 10.244.0.0/16
nodePortAddresses: [$NODE_IP/32]
# Zero: leave the (global) conntrack table size and timeouts alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
    cat >"$node_dir/Corefile" <<EOF
# Cluster names only: no forward plugin is linked in, so nothing else resolves.
.:53 {
    bind $NODE_IP
    errors
    health $NODE_IP:8080
    ready $NODE_IP:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $auth/coredns.kubeconfig coredns@sup-test
        pods insecure
        ttl 5
    }
    cache 5
    loop
}
EOF
}

node_rbac_yaml() {
    cat <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: sup-coredns}
rules:
- {apiGroups: [""], resources: [services, pods, namespaces, endpoints], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: sup-coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: sup-coredns}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: sup-coredns}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: sup-kube-router}
rules:
- {apiGroups: [""], resources: [pods, namespaces, nodes, services, endpoints], verbs: [get, list, watch]}
- {apiGroups: [networking.k8s.io], resources: [networkpolicies], verbs: [get, list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [events], verbs: [create, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: sup-kube-router}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: sup-kube-router}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: sup-kube-router}]
---
# Cluster DNS: CoreDNS runs on the node's own address, not in a pod.
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $cluster_dns_ip
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: sup-cluster}
addressType: IPv4
endpoints:
- addresses: [$NODE_IP]
  conditions: {ready: true}
  nodeName: $node_name
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
EOF
}

# import_node_images: each selected image into containerd's k8s.io namespace,
# once per archive (the archive's name carries its content key).
import_node_images() {
    local lines line name ref archive ctr=("$(bindir)/ctr" --address "$node_dir/containerd.sock" -n k8s.io)
    lines=$("$repo/tests/controlplane/images/build" "${node_images[@]}") ||
        die "building the node's images failed (tests/controlplane/images/build ${node_images[*]})"
    mkdir -p "$node_dir/imported"
    while IFS=$'\t' read -r name ref archive; do
        if [[ $(cat "$node_dir/imported/$name" 2>/dev/null) == "$archive" ]] &&
            "${ctr[@]}" images ls -q | grep -qxF "$ref"; then
            continue
        fi
        log "importing image $ref into the node's containerd"
        "${ctr[@]}" images import --no-unpack=false "$archive" >/dev/null ||
            die "importing $archive into containerd failed"
        echo "$archive" >"$node_dir/imported/$name"
    done <<<"$lines"
}

start_node() {
    ensure_node_tools
    log "starting the real node $node_name ($NODE_IP, pods $node_pod_cidr) in its own network namespace"
    start_node_ns
    write_node_configs
    node_start containerd --config="$node_dir/containerd.toml" --log-level=warn
    wait_healthy containerd
    import_node_images
    node_rbac_yaml | kubectl_admin apply --server-side --field-manager=sup-cluster -f - >/dev/null
    node_start kubelet \
        --config="$node_dir/kubelet.yaml" \
        --kubeconfig="$auth/kubelet.kubeconfig" \
        --root-dir="$node_dir/kubelet-root" \
        --cert-dir="$node_dir/kubelet" \
        --hostname-override="$node_name" \
        --node-ip="$NODE_IP" \
        --node-labels="$real_node_label=true" \
        --v=1
    node_start kube-proxy --config="$node_dir/kube-proxy.yaml" --v=1
    node_start coredns -conf="$node_dir/Corefile"
    wait_healthy kubelet kube-proxy coredns
    # kube-router's policy controller takes pod CIDRs from the Node; nothing else
    # allocates one here (no --allocate-node-cidrs), so set the node's own.
    local deadline=$((SECONDS + up_timeout))
    until kubectl_admin get node "$node_name" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { print_logs 60 kubelet; die "the kubelet did not register $node_name"; }
        sleep 0.3
    done
    [[ -n $(kubectl_admin get node "$node_name" -o jsonpath='{.spec.podCIDR}') ]] ||
        kubectl_admin patch node "$node_name" --type=merge \
            -p "{\"spec\":{\"podCIDR\":\"$node_pod_cidr\",\"podCIDRs\":[\"$node_pod_cidr\"]}}" >/dev/null
    node_start kube-router \
        --kubeconfig="$auth/kube-router.kubeconfig" \
        --hostname-override="$node_name" \
        --run-firewall=true --run-router=false --run-service-proxy=false \
        --enable-cni=false --enable-ipv4=true --enable-ipv6=false \
        --health-port=20244 --metrics-port=0 --v=1
    wait_healthy kube-router
    kubectl_admin wait --for=condition=Ready --timeout="${up_timeout}s" "node/$node_name" >/dev/null ||
        { print_logs 60 kubelet containerd; kubectl_admin describe node "$node_name" >&2; die "$node_name not Ready"; }
}
