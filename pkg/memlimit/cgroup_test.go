package memlimit

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

// Lines of /proc/self/mountinfo as the kernel writes them.
const (
	mountV2    = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
	mountRoot  = "24 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
	mountV1Mem = "40 30 0:35 /docker/abc /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:17 - cgroup cgroup rw,memory\n"
	mountV1CPU = "39 30 0:34 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime master:16 - cgroup cgroup rw,cpu,cpuacct\n"
	// hybrid: v1 controllers, and the unified hierarchy with no controllers.
	mountUnified = "31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"
)

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

// failFS is a file system whose file bad cannot be read.
type failFS struct {
	fs.FS
	bad string
}

func (f failFS) Open(name string) (fs.File, error) {
	if name == f.bad {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	return f.FS.Open(name)
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name     string
		fs       fs.FS
		want     Limit
		wantNone bool
		wantErr  string
	}{
		{name: "v2 in a container (cgroup namespace)", fs: fstest.MapFS{
			"proc/self/cgroup":          file("0::/\n"),
			"proc/self/mountinfo":       file(mountRoot + mountV2),
			"sys/fs/cgroup/memory.max":  file("536870912\n"),
			"sys/fs/cgroup/memory.high": file("max\n"),
		}, want: Limit{Bytes: 512 << 20, File: "/sys/fs/cgroup/memory.max"}},
		{name: "v2 nested: the smallest limit above the process applies", fs: fstest.MapFS{
			"proc/self/cgroup":                                 file("0::/kubepods.slice/pod1/ctr\n"),
			"proc/self/mountinfo":                              file(mountRoot + mountV2),
			"sys/fs/cgroup/memory.max":                         file("max\n"), // the root cgroup has none
			"sys/fs/cgroup/kubepods.slice/memory.max":          file("2147483648\n"),
			"sys/fs/cgroup/kubepods.slice/pod1/memory.max":     file("1073741824\n"),
			"sys/fs/cgroup/kubepods.slice/pod1/ctr/memory.max": file("max\n"),
		}, want: Limit{Bytes: 1 << 30, File: "/sys/fs/cgroup/kubepods.slice/pod1/memory.max"}},
		{name: "v2 nested: a limit on the process's own cgroup below its parent's", fs: fstest.MapFS{
			"proc/self/cgroup":                                     file("0::/system.slice/ingest.service\n"),
			"proc/self/mountinfo":                                  file(mountRoot + mountV2),
			"sys/fs/cgroup/system.slice/memory.max":                file("max\n"),
			"sys/fs/cgroup/system.slice/ingest.service/memory.max": file("402653184\n"),
		}, want: Limit{Bytes: 384 << 20, File: "/sys/fs/cgroup/system.slice/ingest.service/memory.max"}},
		{name: "v2 unlimited", fs: fstest.MapFS{
			"proc/self/cgroup":                                    file("0::/user.slice/session-1.scope\n"),
			"proc/self/mountinfo":                                 file(mountRoot + mountV2),
			"sys/fs/cgroup/user.slice/memory.max":                 file("max\n"),
			"sys/fs/cgroup/user.slice/session-1.scope/memory.max": file("max\n"),
		}, wantNone: true},
		{name: "v1 in a container: the mount's root is the container's cgroup", fs: fstest.MapFS{
			"proc/self/cgroup":                           file("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n"),
			"proc/self/mountinfo":                        file(mountRoot + mountV1CPU + mountV1Mem),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("268435456\n"),
			"sys/fs/cgroup/cpu,cpuacct/cpu.shares":       file("1024\n"),
		}, want: Limit{Bytes: 256 << 20, File: "/sys/fs/cgroup/memory/memory.limit_in_bytes"}},
		{name: "v1 unlimited (the kernel's huge value)", fs: fstest.MapFS{
			"proc/self/cgroup":                           file("4:memory:/docker/abc\n"),
			"proc/self/mountinfo":                        file(mountRoot + mountV1Mem),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("9223372036854771712\n"),
		}, wantNone: true},
		{name: "hybrid: the v1 memory controller limits, not the empty unified hierarchy", fs: fstest.MapFS{
			"proc/self/cgroup":                           file("4:memory:/docker/abc\n0::/docker/abc\n"),
			"proc/self/mountinfo":                        file(mountRoot + mountUnified + mountV1Mem),
			"sys/fs/cgroup/memory/memory.limit_in_bytes": file("805306368\n"),
		}, want: Limit{Bytes: 768 << 20, File: "/sys/fs/cgroup/memory/memory.limit_in_bytes"}},
		{name: "no mountinfo: the common /sys/fs/cgroup layout", fs: fstest.MapFS{
			"proc/self/cgroup":             file("0::/app\n"),
			"sys/fs/cgroup/app/memory.max": file("1073741824\n"),
		}, want: Limit{Bytes: 1 << 30, File: "/sys/fs/cgroup/app/memory.max"}},
		{name: "no cgroups at all", fs: fstest.MapFS{
			"proc/self/mountinfo": file(mountRoot),
		}, wantNone: true},
		{name: "a hierarchy that is not mounted here", fs: fstest.MapFS{
			"proc/self/cgroup":         file("0::/app\n"),
			"proc/self/mountinfo":      file(mountRoot),
			"sys/fs/cgroup/memory.max": file("1073741824\n"),
		}, wantNone: true},
		{name: "unreadable limit", fs: failFS{FS: fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"proc/self/mountinfo":      file(mountRoot + mountV2),
			"sys/fs/cgroup/memory.max": file("536870912\n"),
		}, bad: "sys/fs/cgroup/memory.max"}, wantErr: "read cgroup memory limit /sys/fs/cgroup/memory.max: open sys/fs/cgroup/memory.max: permission denied"},
		{name: "unreadable /proc/self/cgroup", fs: failFS{FS: fstest.MapFS{
			"proc/self/cgroup": file("0::/\n"),
		}, bad: "proc/self/cgroup"}, wantErr: "read /proc/self/cgroup: open proc/self/cgroup: permission denied"},
		{name: "a limit that is not a number", fs: fstest.MapFS{
			"proc/self/cgroup":         file("0::/\n"),
			"proc/self/mountinfo":      file(mountRoot + mountV2),
			"sys/fs/cgroup/memory.max": file("lots\n"),
		}, wantErr: `cgroup memory limit /sys/fs/cgroup/memory.max: "lots" is not a number of bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := Detect(tt.fs)
			switch {
			case tt.wantErr != "":
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case tt.wantNone:
				if ok {
					t.Fatalf("found %+v, want no limit", got)
				}
			case !ok || got != tt.want:
				t.Fatalf("got %+v (found %v), want %+v", got, ok, tt.want)
			}
		})
	}
}

func TestUnescape(t *testing.T) {
	if got := unescape(`/mnt/with\040space\134x`); got != `/mnt/with space\x` {
		t.Errorf("unescape: %q", got)
	}
	if got := unescape(`/trailing\04`); got != `/trailing\04` {
		t.Errorf("unescape of a short escape: %q", got)
	}
}

func TestRSS(t *testing.T) {
	page := int64(os.Getpagesize())
	got, err := RSS(fstest.MapFS{"proc/self/statm": file("81234 2500 900 300 0 4000 0\n")})
	if err != nil || got != 2500*page {
		t.Errorf("RSS = %d, %v; want %d", got, err, 2500*page)
	}
	if _, err := RSS(fstest.MapFS{"proc/self/statm": file("81234\n")}); err == nil || !strings.Contains(err.Error(), "no resident field") {
		t.Errorf("short statm: %v", err)
	}
	if _, err := RSS(fstest.MapFS{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no statm: %v", err)
	}
	// The real process: resident, and more than the Go heap in use is not
	// required, but it is at least a few pages and under the Go runtime's
	// total plus the binary.
	real, err := RSS(Root())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if held := GoHeld(); real < 1<<20 || held < 1<<20 || real > held+256<<20 {
		t.Errorf("RSS %d, Go holds %d: not plausible", real, held)
	}
}
