# Certificates, tokens and kubeconfigs (sourced by scripts/cluster).
# Needs: $pki, $auth, $state; API_PORT and NODE_HOST_IP once ports are chosen.

# openssl_cert NAME SUBJECT EXT... : a key and a certificate signed by the CA.
openssl_cert() {
    local name=$1 subj=$2; shift 2
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "$@" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days 3650 -out "$name.crt" -extfile "$name.ext" 2>/dev/null
}

ensure_pki() {
    [[ -f $pki/done ]] || {
        log "generating certificates and keys in $pki"
        rm -rf "$pki.tmp"
        mkdir -p "$pki.tmp"
        (
            cd "$pki.tmp"
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout ca.key -out ca.crt -days 3650 -subj "/CN=singleuser-profiles-test-ca" \
                -addext "basicConstraints=critical,CA:TRUE" \
                -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
            openssl_cert apiserver "/CN=kube-apiserver" \
                "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
                "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
            # The service-account token signing key pair (TokenRequest, projected tokens).
            openssl genrsa -out sa.key 2048 2>/dev/null
            openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
            chmod 600 ./*.key
            touch done
        )
        rm -rf "$pki"
        mv "$pki.tmp" "$pki"
    }
    # The real node's: the API server's client certificate for the kubelet
    # (logs, exec), and the kubelet's serving certificate for the node's address.
    # Kept apart from `done` so a state dir from before the node gains them.
    [[ -f $pki/node-done ]] || (
        cd "$pki"
        openssl_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth"
        openssl_cert kubelet "/O=system:nodes/CN=system:node:$node_name" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
            "subjectAltName=IP:$NODE_IP,DNS:$node_name"
        chmod 600 ./*.key
        touch node-done
    )
}

# Identities: NAME USER GROUPS. alice and bob are ordinary users with no rights.
identities=(
    "admin sup-admin system:masters"
    "kube-controller-manager system:kube-controller-manager -"
    "kube-scheduler system:kube-scheduler -"
    "kwok kwok system:masters"
    "kuberay-operator kuberay-operator -"
    "alice alice -"
    "bob bob -"
    # The real node: the Node authorizer and NodeRestriction know the kubelet
    # by this name and group; the bootstrap role system:node-proxier is bound to
    # system:kube-proxy; CoreDNS and kube-router get roles of their own (node.sh).
    "kubelet system:node:$node_name system:nodes"
    "kube-proxy system:kube-proxy -"
    "coredns sup-coredns -"
    "kube-router sup-kube-router -"
)

ensure_tokens() {
    local id name user groups token
    [[ -f $auth/tokens.csv ]] || {
        rm -rf "$auth.tmp"
        mkdir -p "$auth.tmp/tokens"
        touch "$auth.tmp/tokens.csv"
        rm -rf "$auth"
        mv "$auth.tmp" "$auth"
    }
    # Identities added since the state dir was made get a token too.
    for id in "${identities[@]}"; do
        read -r name user groups <<<"$id"
        [[ -f $auth/tokens/$name ]] && continue
        token=$(openssl rand -hex 24)
        echo "$token" >"$auth/tokens/$name"
        if [[ $groups == - ]]; then
            echo "$token,$user,$user" >>"$auth/tokens.csv"
        else
            echo "$token,$user,$user,\"$groups\"" >>"$auth/tokens.csv"
        fi
    done
    chmod -R go-rwx "$auth"
}

# write_kubeconfig NAME SERVER [TLS_SERVER_NAME]
write_kubeconfig() {
    local name=$1 server=$2 sni=${3:-}
    cat >"$auth/$name.kubeconfig" <<EOF2
apiVersion: v1
kind: Config
clusters:
- name: sup-test
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt${sni:+
    tls-server-name: $sni}
users:
- name: $name
  user:
    token: $(cat "$auth/tokens/$name")
contexts:
- name: $name@sup-test
  context:
    cluster: sup-test
    user: $name
    namespace: default
current-context: $name@sup-test
EOF2
}

write_kubeconfigs() {
    local id name
    for id in "${identities[@]}"; do
        read -r name _ <<<"$id"
        case $name in
        # The node's components reach the API server through the veth: a DNAT
        # on the host side sends NODE_HOST_IP:API_PORT to 127.0.0.1 (node.sh).
        kubelet | kube-proxy | coredns | kube-router)
            write_kubeconfig "$name" "https://$NODE_HOST_IP:$API_PORT" kubernetes ;;
        *) write_kubeconfig "$name" "https://127.0.0.1:$API_PORT" ;;
        esac
    done
    chmod 600 "$auth"/*.kubeconfig
    cp "$auth/admin.kubeconfig" "$state/kubeconfig.tmp"
    mv "$state/kubeconfig.tmp" "$state/kubeconfig"
}
