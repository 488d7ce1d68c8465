package snapshot

import (
	"os"
	"unsafe"

	"golang.org/x/sys/windows"
)

// ioctlDiskGetLengthInfo is IOCTL_DISK_GET_LENGTH_INFO.
const ioctlDiskGetLengthInfo = 0x7405c

// deviceSize asks a volume or disk device for its length.
func deviceSize(f *os.File) (int64, error) {
	var length int64 // GET_LENGTH_INFORMATION
	var n uint32
	err := windows.DeviceIoControl(windows.Handle(f.Fd()), ioctlDiskGetLengthInfo, nil, 0,
		(*byte)(unsafe.Pointer(&length)), uint32(unsafe.Sizeof(length)), &n, nil)
	if err != nil {
		return 0, os.NewSyscallError("DeviceIoControl", err)
	}
	return length, nil
}
