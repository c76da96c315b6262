// goleak: a Go client that leaks its connections. main calls poolGet,
// poolGet calls dialBackend, dialBackend dials and nobody ever closes what
// it returns. Prints "connected local=ADDR pid=PID" per connection, then
// "leaked N", then sleeps --hold seconds with every socket open.
//
// Usage: goleak ADDR COUNT HOLD_SECONDS. Loopback addresses only.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

var open []net.Conn

//go:noinline
func dialBackend(addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	return c
}

//go:noinline
func poolGet(addr string) net.Conn {
	return dialBackend(addr)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: goleak ADDR COUNT HOLD_SECONDS")
		os.Exit(2)
	}
	n, _ := strconv.Atoi(os.Args[2])
	hold, _ := strconv.Atoi(os.Args[3])
	for i := 0; i < n; i++ {
		c := poolGet(os.Args[1])
		open = append(open, c)
		fmt.Printf("connected local=%s pid=%d\n", c.LocalAddr(), os.Getpid())
	}
	fmt.Printf("leaked %d\n", len(open))
	time.Sleep(time.Duration(hold) * time.Second)
}
