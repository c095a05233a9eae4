// A resolver probe for Go's own resolver (run with GODEBUG=netdns=go):
// LookupHost for each name given, one line per name,
//   NAME ok ADDR[,ADDR...]   or   NAME error MESSAGE
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
)

func main() {
	r := &net.Resolver{PreferGo: true}
	for _, name := range os.Args[1:] {
		addrs, err := r.LookupHost(context.Background(), name)
		if err != nil {
			fmt.Printf("%s error %v\n", name, err)
			continue
		}
		fmt.Printf("%s ok %s\n", name, strings.Join(addrs, ","))
	}
}
