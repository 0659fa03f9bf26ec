# The control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok (fake nodes) and the KubeRay operator, all on loopback
# (sourced by scripts/cluster).

control_plane_components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok kuberay-operator)
service_cidr=10.96.0.0/16
# kwok hands out pod IPs from the lower half; the real nodes' pod CIDRs are in
# 10.244.128.0/17 (node.sh), so the two never overlap.
kwok_pod_cidr=10.244.0.1/17
fake_nodes=${SUP_CLUSTER_NODES:-3}

health_etcd() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
health_kube_apiserver() {
    curl -sf --max-time 3 --cacert "$pki/ca.crt" -H "Authorization: Bearer $(cat "$auth/tokens/admin")" \
        "https://127.0.0.1:$API_PORT/readyz" >/dev/null
}
health_kube_controller_manager() { curl -skf --max-time 2 "https://127.0.0.1:$CM_PORT/healthz" >/dev/null; }
health_kube_scheduler() { curl -skf --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz" >/dev/null; }
health_kwok() { curl -sf --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz" >/dev/null; }
health_kuberay_operator() { curl -sf --max-time 2 "http://127.0.0.1:$KUBERAY_PROBE_PORT/readyz" >/dev/null; }

control_plane_ports=(ETCD_PORT ETCD_PEER_PORT API_PORT CM_PORT SCHED_PORT KWOK_PORT KUBERAY_METRICS_PORT KUBERAY_PROBE_PORT)

fake_nodes_yaml() {
    local i
    for ((i = 0; i < fake_nodes; i++)); do
        cat <<EOF2
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
EOF2
    done
}

kuberay_rbac_yaml() {
    cat "$share/kuberay/role.yaml"
    cat <<'EOF2'
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kuberay-operator
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kuberay-operator
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: kuberay-operator
EOF2
}

start_etcd() {
    log "starting etcd on 127.0.0.1:$ETCD_PORT"
    start etcd -- \
        --name=sup --data-dir="$state/etcd/data" \
        --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster="sup=http://127.0.0.1:$ETCD_PEER_PORT" \
        --unsafe-no-fsync --log-level=warn
    wait_healthy etcd
}

start_apiserver() {
    log "starting kube-apiserver on https://127.0.0.1:$API_PORT"
    # PodNodeSelector and PodTolerationRestriction: a namespace's annotations
    # send its pods to the real node (node.sh), whoever creates them.
    start kube-apiserver -- \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address=127.0.0.1 --secure-port="$API_PORT" --advertise-address=127.0.0.1 \
        --endpoint-reconciler-type=none \
        --cert-dir="$run/kube-apiserver" \
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --token-auth-file="$auth/tokens.csv" \
        --authorization-mode=Node,RBAC \
        --allow-privileged=true \
        --enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,NodeRestriction,PodNodeSelector,PodTolerationRestriction \
        --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority="$pki/ca.crt" \
        --kubelet-preferred-address-types=InternalIP \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$pki/sa.pub" \
        --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range="$service_cidr" \
        --profiling=false
    wait_healthy kube-apiserver
}

start_controllers() {
    log "starting kube-controller-manager, kube-scheduler, kwok"
    local cm_kc=$auth/kube-controller-manager.kubeconfig sched_kc=$auth/kube-scheduler.kubeconfig
    start kube-controller-manager -- \
        --kubeconfig="$cm_kc" --authentication-kubeconfig="$cm_kc" --authorization-kubeconfig="$cm_kc" \
        --bind-address=127.0.0.1 --secure-port="$CM_PORT" --cert-dir="$run/kube-controller-manager" \
        --leader-elect=false \
        --use-service-account-credentials=true \
        --service-account-private-key-file="$pki/sa.key" \
        --root-ca-file="$pki/ca.crt" \
        --service-cluster-ip-range="$service_cidr" \
        --profiling=false
    start kube-scheduler -- \
        --kubeconfig="$sched_kc" --authentication-kubeconfig="$sched_kc" --authorization-kubeconfig="$sched_kc" \
        --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --cert-dir="$run/kube-scheduler" \
        --leader-elect=false --profiling=false
    local stages=() f
    for f in "$share"/kwok/*.yaml; do stages+=("--config=$f"); done
    start kwok -- \
        --kubeconfig="$auth/kwok.kubeconfig" \
        --manage-all-nodes=false \
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --cidr="$kwok_pod_cidr" --node-ip=127.0.0.1 \
        --server-address="127.0.0.1:$KWOK_PORT" \
        "${stages[@]}"

    log "installing the KubeRay CRDs (server-side) and RBAC, $fake_nodes fake nodes"
    kubectl_admin apply --server-side --field-manager=sup-cluster -f "$share/kuberay/ray.io_rayclusters.yaml" \
        -f "$share/kuberay/ray.io_rayjobs.yaml" -f "$share/kuberay/ray.io_rayservices.yaml" >/dev/null
    kuberay_rbac_yaml | kubectl_admin apply --server-side --field-manager=sup-cluster -f - >/dev/null
    fake_nodes_yaml | kubectl_admin apply -f - >/dev/null
    # `kubectl wait` fails at once ("accessor error: <nil>") on a CRD that has no status yet,
    # which happens under load: retry it until the deadline.
    local deadline=$((SECONDS + up_timeout))
    until kubectl_admin wait --for=condition=Established --timeout=10s \
        crd/rayclusters.ray.io crd/rayjobs.ray.io crd/rayservices.ray.io >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "the KubeRay CRDs were not Established within ${up_timeout}s"
        sleep 1
    done

    log "starting kuberay-operator"
    start kuberay-operator -- \
        --kubeconfig="$auth/kuberay-operator.kubeconfig" \
        --enable-leader-election=false \
        --metrics-addr="127.0.0.1:$KUBERAY_METRICS_PORT" \
        --health-probe-bind-address="127.0.0.1:$KUBERAY_PROBE_PORT" \
        --log-stdout-encoder=console

    wait_healthy kube-controller-manager kube-scheduler kwok kuberay-operator
    kubectl_admin wait --for=condition=Ready --timeout="${up_timeout}s" node -l type=kwok >/dev/null ||
        { print_logs 60 kwok; die "fake nodes not Ready"; }
    # The service-account controller must be working before tests create pods.
    local deadline=$((SECONDS + up_timeout))
    until kubectl_admin get serviceaccount default -n default >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { print_logs 60 kube-controller-manager; die "no default ServiceAccount"; }
        sleep 0.3
    done
}
