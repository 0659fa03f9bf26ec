// Command coredns is CoreDNS with only the plugins the test plane's cluster DNS
// uses. Upstream's main links every plugin, `forward` among them; leaving it out
// means no query can leave the machine: names outside cluster.local get SERVFAIL.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins, each registering itself with Caddy's plugin table.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order the plugins handle a query in, as in upstream's plugin.cfg.
var directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes", "loop"}

func main() {
	dnsserver.Directives = directives
	coremain.Run()
}
