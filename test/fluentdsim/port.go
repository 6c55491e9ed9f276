package fluentdsim

import "net"

// Ports across down periods. After Down, Up listens again on the same port,
// as a restarted Fluentd does on its configured one. But a port the kernel
// chose for the double (the configured port was 0) is an ephemeral port,
// which the kernel hands to the next socket on the machine asking for a
// free one: with other tests running beside the double, one of them could
// take it between Down and Up, and Up would fail with "address already in
// use". So while the server is down such a port is held by a socket bound
// to it and not listening: connections are refused as by a stopped Fluentd,
// and no other socket is given the port. The listener and the hold both
// set SO_REUSEPORT, so the hold binds beside the listener before it
// closes, and Up's listener binds beside the hold before it is released;
// a socket without SO_REUSEPORT (any other program's) still cannot bind
// there. A port given in the configuration is neither shared nor held: two
// servers configured on one port fail as they should.

// chosenPort reports whether the kernel chooses the port of addr (port 0).
func chosenPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && (port == "0" || port == "")
}

// holdPorts holds the ports the kernel chose, before their listeners close
// (Down). Called with s.mu held.
func (s *Server) holdPorts() {
	var addrs []string
	if s.chosen {
		addrs = append(addrs, s.addr)
	}
	if s.fwd != nil && s.fwd.chosen {
		addrs = append(addrs, s.fwd.addr)
	}
	for _, a := range addrs {
		h, err := holdPort(a)
		if err != nil {
			s.log.Error().Err(err).Msg("the port is not held while down: another socket may take it before Up")
			continue
		}
		if h != nil {
			s.holds = append(s.holds, h)
		}
	}
}

// releasePorts lets the held ports go, once Up listens on them again (or
// on Close). Called with s.mu held.
func (s *Server) releasePorts() {
	for _, h := range s.holds {
		h.release()
	}
	s.holds = nil
}
