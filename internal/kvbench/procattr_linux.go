package kvbench

import "syscall"

// childAttr makes a child (node or redis-server) die with kvbench, so a
// killed benchmark leaves no server behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
