// Package harness runs the pipeline's real binaries as child processes for
// the end-to-end tests, `make demo` and `make bench`: it builds them, starts
// them with their output in log files, waits for what they print, kills them
// for real (SIGKILL) or stops them politely (SIGTERM), and watches their peak
// memory.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one running child process. Its stdout and stderr go to LogPath.
type Proc struct {
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}

	mu       sync.Mutex
	exitErr  error
	peakRSS  int64
	finished bool
}

// Spec says how to start a process.
type Spec struct {
	Name string   // for messages and the log file name
	Bin  string   // path of the executable
	Args []string // arguments
	Env  []string // added to the parent's environment
	Dir  string   // working directory ("" = current)
	// LogDir receives <Name>.log; appended to across restarts.
	LogDir string
	// Stdin, when set, is written to the process's standard input.
	Stdin []byte
}

// Start starts the process described by s. The process is killed when ctx
// ends.
func Start(ctx context.Context, s Spec) (*Proc, error) {
	if err := os.MkdirAll(s.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	logPath := filepath.Join(s.LogDir, s.Name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	cmd := exec.Command(s.Bin, s.Args...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Dir = s.Dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if s.Stdin != nil {
		cmd.Stdin = bytes.NewReader(s.Stdin)
	}
	// Own process group, so a kill reaches nothing else and a terminal's
	// Ctrl-C reaches only the harness, which then stops its children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s (%s): %w", s.Name, s.Bin, err)
	}
	p := &Proc{Name: s.Name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go p.watch(ctx, logFile)
	return p, nil
}

// watch samples the peak RSS until the process exits, and kills it when ctx
// ends.
func (p *Proc) watch(ctx context.Context, logFile *os.File) {
	waited := make(chan error, 1)
	go func() { waited <- p.cmd.Wait() }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-waited:
			logFile.Close()
			p.mu.Lock()
			p.exitErr, p.finished = err, true
			p.mu.Unlock()
			close(p.done)
			return
		case <-tick.C:
			p.sampleRSS()
		case <-ctx.Done():
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			ctx = context.Background() // wait for the exit now
		}
	}
}

// sampleRSS reads the kernel's peak resident set size (VmHWM).
func (p *Proc) sampleRSS() {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "VmHWM:") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return
		}
		p.mu.Lock()
		if kb*1024 > p.peakRSS {
			p.peakRSS = kb * 1024
		}
		p.mu.Unlock()
		return
	}
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// PeakRSS is the highest resident set size seen, in bytes.
func (p *Proc) PeakRSS() int64 {
	p.sampleRSS()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peakRSS
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and its exit code (-1 when
// killed by a signal).
func (p *Proc) Exited() (bool, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.finished {
		return false, 0
	}
	return true, p.cmd.ProcessState.ExitCode()
}

// Kill sends SIGKILL — the real kill -9 — and waits for the exit.
func (p *Proc) Kill() {
	p.sampleRSS()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout for the exit, then SIGKILL. It
// returns the exit code, or an error when the process had to be killed.
func (p *Proc) Stop(timeout time.Duration) (int, error) {
	p.sampleRSS()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		p.Kill()
		return -1, fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.Name, timeout)
	}
}

// Wait waits for the process to exit by itself and returns its exit code.
func (p *Proc) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-ctx.Done():
		return -1, fmt.Errorf("waiting for %s to exit: %w\n%s", p.Name, ctx.Err(), p.Tail(20))
	}
}

// Log is everything the process has printed so far.
func (p *Proc) Log() string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read the log of %s: %v)", p.Name, err)
	}
	return string(data)
}

// Tail is the last n lines of the log, for failure messages.
func (p *Proc) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return p.Name + " log (last lines):\n  " + strings.Join(lines, "\n  ")
}

// WaitForLine waits until a line of the log contains substr and returns that
// line. It fails early when the process exits first.
func (p *Proc) WaitForLine(ctx context.Context, substr string) (string, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if line, ok := findLine(p.LogPath, substr); ok {
			return line, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s: no line containing %q: %w\n%s", p.Name, substr, ctx.Err(), p.Tail(20))
		case <-p.done:
			if line, ok := findLine(p.LogPath, substr); ok {
				return line, nil
			}
			return "", fmt.Errorf("%s exited (code %d) before printing %q\n%s", p.Name, p.cmd.ProcessState.ExitCode(), substr, p.Tail(20))
		case <-tick.C:
		}
	}
}

func findLine(path, substr string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			return sc.Text(), true
		}
	}
	return "", false
}

// ErrNotBuilt is returned when a binary the harness needs is missing.
var ErrNotBuilt = errors.New("binary not built")
