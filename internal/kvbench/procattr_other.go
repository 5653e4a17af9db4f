//go:build !linux

package kvbench

import "syscall"

func childAttr() *syscall.SysProcAttr { return nil }
