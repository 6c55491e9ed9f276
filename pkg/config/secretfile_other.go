//go:build !unix

package config

import "os"

// inOwnGroup is false where files have no Unix group.
func inOwnGroup(os.FileInfo) bool { return false }
