package childproc

import "syscall"

// sysProcAttr makes the kernel kill a child if its parent dies without
// running its cleanup (kill -9), so no cache node or worker outlives it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
