package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"syscall"
)

// Profiling a running server for measurements. When FIELDSYNC_CPUPROFILE,
// FIELDSYNC_TRACE or FIELDSYNC_MEMPROFILE name files, `fieldsync run`
// starts a CPU profile and an execution trace into them on SIGUSR1, and on
// SIGUSR2 stops them and writes a heap profile (allocs). Each file is
// written under FILE.tmp and renamed to FILE once complete, so the
// measuring tool (fieldsim bench -cpuprofile) waits for FILE to appear.
// Without those variables the signals keep their default action.
const (
	envCPUProfile = "FIELDSYNC_CPUPROFILE"
	envTrace      = "FIELDSYNC_TRACE"
	envMemProfile = "FIELDSYNC_MEMPROFILE"
)

// profileOnSignal installs the SIGUSR1/SIGUSR2 handler when asked to; the
// function it returns removes it and ends a profile still running.
func profileOnSignal(stderr io.Writer) (stop func()) {
	p := &profiler{cpu: os.Getenv(envCPUProfile), trace: os.Getenv(envTrace), mem: os.Getenv(envMemProfile), log: stderr}
	if p.cpu == "" && p.trace == "" && p.mem == "" {
		return func() {}
	}
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGUSR1, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s := range ch {
			if s == syscall.SIGUSR1 {
				p.start()
			} else {
				p.finish()
			}
		}
		p.finish()
	}()
	return func() {
		signal.Stop(ch) // no more sends to ch once it returns
		close(ch)
		<-done
	}
}

// profiler runs one profile at a time; only its goroutine touches it.
type profiler struct {
	cpu, trace, mem string
	log             io.Writer
	cpuFile         *os.File
	traceFile       *os.File
}

func (p *profiler) start() {
	if p.cpuFile != nil || p.traceFile != nil {
		return // already running
	}
	if p.cpu != "" {
		if f, err := os.Create(p.cpu + ".tmp"); err != nil {
			p.logf("CPU 剖析文件无法创建：%v", err)
		} else if err := pprof.StartCPUProfile(f); err != nil {
			p.logf("CPU 剖析无法开始：%v", err)
			f.Close()
		} else {
			p.cpuFile = f
		}
	}
	if p.trace != "" {
		if f, err := os.Create(p.trace + ".tmp"); err != nil {
			p.logf("执行跟踪文件无法创建：%v", err)
		} else if err := trace.Start(f); err != nil {
			p.logf("执行跟踪无法开始：%v", err)
			f.Close()
		} else {
			p.traceFile = f
		}
	}
}

func (p *profiler) finish() {
	if p.cpuFile != nil {
		pprof.StopCPUProfile()
		p.closeAndRename(p.cpuFile, p.cpu)
		p.cpuFile = nil
	}
	if p.traceFile != nil {
		trace.Stop()
		p.closeAndRename(p.traceFile, p.trace)
		p.traceFile = nil
	}
	if p.mem != "" {
		f, err := os.Create(p.mem + ".tmp")
		if err != nil {
			p.logf("内存剖析文件无法创建：%v", err)
			return
		}
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			p.logf("内存剖析无法写入：%v", err)
		}
		p.closeAndRename(f, p.mem)
	}
}

func (p *profiler) closeAndRename(f *os.File, path string) {
	if err := f.Close(); err != nil {
		p.logf("剖析文件 %s 无法写完：%v", path, err)
		return
	}
	if err := os.Rename(f.Name(), path); err != nil {
		p.logf("剖析文件无法改名：%v", err)
	}
}

func (p *profiler) logf(format string, args ...any) {
	fmt.Fprintf(p.log, "性能剖析："+format+"\n", args...)
}
