//go:build linux

package fluentdsim

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenTCP listens on addr; reusable sets SO_REUSEPORT, so that the port
// can be held (see holdPort).
func listenTCP(addr string, reusable bool) (net.Listener, error) {
	var lc net.ListenConfig
	if reusable {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var err error
			if cerr := c.Control(func(fd uintptr) {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); cerr != nil {
				return cerr
			}
			return err
		}
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

// portHold is a port kept bound, not listening, while the server is down.
type portHold struct{ fd int }

// holdPort binds a socket to addr (an ip:port), the address of a listener
// made by listenTCP with reusable set, while that listener still has it.
func holdPort(addr string) (*portHold, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("hold port of %s: %w", addr, err)
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(nil)
	if ip4 := ta.IP.To4(); ip4 != nil {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: ta.Port, Addr: [4]byte(ip4)}
	} else {
		sa6 := &unix.SockaddrInet6{Port: ta.Port}
		copy(sa6.Addr[:], ta.IP.To16())
		sa = sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("hold port of %s: socket: %w", addr, err)
	}
	h := &portHold{fd: fd}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		h.release()
		return nil, fmt.Errorf("hold port of %s: SO_REUSEPORT: %w", addr, err)
	}
	if family == unix.AF_INET6 && ta.IP.IsUnspecified() {
		// As Go's dual-stack listener on [::]: IPv4 too.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			h.release()
			return nil, fmt.Errorf("hold port of %s: IPV6_V6ONLY: %w", addr, err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		h.release()
		return nil, fmt.Errorf("hold port of %s: bind: %w", addr, err)
	}
	return h, nil
}

// release lets the port go; a nil hold is a no-op.
func (h *portHold) release() {
	if h != nil {
		_ = unix.Close(h.fd)
	}
}
