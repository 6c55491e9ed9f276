//go:build unix

package config

import (
	"os"
	"slices"
	"syscall"
)

// inOwnGroup reports whether the file's group is the process's group or one
// of its supplementary groups (a Kubernetes pod's fsGroup).
func inOwnGroup(st os.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	gid := int(sys.Gid)
	if gid == os.Getegid() {
		return true
	}
	groups, err := os.Getgroups()
	return err == nil && slices.Contains(groups, gid)
}
