// Command etcd runs the etcd server from go.etcd.io/etcd/server/v3, as the
// upstream etcd binary does (its main only calls etcdmain.Main).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
