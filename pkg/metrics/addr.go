package metrics

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
)

// Addr is where the endpoints are served: a host and a port, or a range of
// ports of which the first free one is taken, so that several copies of a
// command on one host can share one setting.
type Addr struct {
	Host        string
	First, Last int
}

// ParseAddr reads "host:port" (port 0: the kernel picks one) or
// "host:first-last" (1 <= first <= last <= 65535). The host may be empty
// (every interface).
func ParseAddr(s string) (Addr, error) {
	host, ports, err := net.SplitHostPort(s)
	if err != nil {
		return Addr{}, fmt.Errorf("must be host:port or host:first-last, got %q", s)
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	first, err1 := strconv.Atoi(lo)
	last, err2 := first, error(nil)
	if isRange {
		last, err2 = strconv.Atoi(hi)
	}
	switch {
	case err1 != nil || err2 != nil || first < 0 || last > 65535:
		return Addr{}, fmt.Errorf("port must be 0..65535 or a range first-last, got %q", ports)
	case isRange && (first < 1 || first > last):
		return Addr{}, fmt.Errorf("port range %q must run from a port >= 1 up to one >= it", ports)
	}
	return Addr{Host: host, First: first, Last: last}, nil
}

// String is the address as ParseAddr reads it.
func (a Addr) String() string {
	if a.First == a.Last {
		return net.JoinHostPort(a.Host, strconv.Itoa(a.First))
	}
	return net.JoinHostPort(a.Host, fmt.Sprintf("%d-%d", a.First, a.Last))
}

// listen opens the first port of a that is free. When every port is taken
// the error wraps the last listen error (syscall.EADDRINUSE for a port in
// use).
func (a Addr) listen() (net.Listener, error) {
	var last error
	for p := a.First; p <= a.Last; p++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(a.Host, strconv.Itoa(p)))
		if err == nil {
			return ln, nil
		}
		last = err
		if !isAddrInUse(err) {
			break
		}
	}
	if a.First != a.Last && isAddrInUse(last) {
		return nil, fmt.Errorf("every port of %s is in use: %w", a, last)
	}
	return nil, last
}

// isAddrInUse reports whether err is a listen on a port another socket
// holds.
func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
